"""EmotiTrack training: data loading, the TF-IDF + LogisticRegression run, registry and promotion."""
