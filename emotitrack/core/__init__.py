"""The shared core: the model format and its scorer, text features, registry URIs, the
prediction-log schema and reader, text descriptors and the settings base. Training, serving and
monitoring depend on it; it depends on none of them (``lint-imports`` checks it)."""
