"""Settings: environment prefix, MLflow's own variable, and keyword construction."""

from __future__ import annotations

import pytest

from serving.settings import ServingSettings
from training.settings import TrainingSettings


@pytest.mark.parametrize("settings_class", [TrainingSettings, ServingSettings])
def test_tracking_uri_from_mlflow_variable_or_keyword(
    settings_class: type[TrainingSettings] | type[ServingSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert settings_class().tracking_uri == "http://tracking:5000"
    # a keyword wins over the environment (tests and scripts build settings this way)
    assert settings_class(tracking_uri="sqlite:///x.db").tracking_uri == "sqlite:///x.db"


def test_prefixed_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTITRACK_MODEL_URI", "models:/other/3")
    monkeypatch.setenv("EMOTITRACK_MAX_BATCH_TEXTS", "10")
    monkeypatch.setenv("EMOTITRACK_ADMIN_TOKEN", "t0ken")
    settings = ServingSettings()
    assert (settings.model_uri, settings.max_batch_texts) == ("models:/other/3", 10)
    assert settings.admin_token is not None and "t0ken" not in repr(settings)


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_admin_token_turns_the_admin_endpoints_off(
    blank: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docker-compose passes EMOTITRACK_ADMIN_TOKEN= when the operator set none
    monkeypatch.setenv("EMOTITRACK_ADMIN_TOKEN", blank)
    assert ServingSettings().admin_token is None


def test_invalid_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOTITRACK_VALIDATION_FRACTION", "0.9")
    with pytest.raises(ValueError, match="validation_fraction"):
        TrainingSettings()


def test_parts_share_only_settings_that_mean_the_same() -> None:
    # One environment configures every part: a name used twice must mean one thing.
    from monitoring.settings import MonitoringSettings

    shared = {"model_uri", "tracking_uri", "prediction_log_url"}
    parts = [
        set(TrainingSettings.model_fields),
        set(ServingSettings.model_fields),
        set(MonitoringSettings.model_fields),
    ]
    for i, first in enumerate(parts):
        for second in parts[i + 1 :]:
            assert first & second <= shared, first & second - shared


@pytest.mark.parametrize(
    "value", ["k-one,k-two", " k-one , k-two ,", '["k-one", "k-two"]', '[" k-one", "k-two "]']
)
def test_api_keys_as_a_comma_list_or_json_and_never_shown(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOTITRACK_API_KEYS", value)
    settings = ServingSettings()
    assert [k.get_secret_value() for k in settings.api_keys] == ["k-one", "k-two"]
    assert "k-one" not in repr(settings) and "k-one" not in str(settings.model_dump())


def test_security_defaults_are_closed_and_open_only_by_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = ServingSettings()
    assert (defaults.api_keys, defaults.cors_origins, defaults.store_text) == ((), (), True)
    assert defaults.request_timeout_s == 30
    monkeypatch.setenv("EMOTITRACK_CORS_ORIGINS", "https://a.example,https://b.example")
    monkeypatch.setenv("EMOTITRACK_STORE_TEXT", "false")
    monkeypatch.setenv("EMOTITRACK_API_KEYS", "")
    opened = ServingSettings()
    assert opened.cors_origins == ("https://a.example", "https://b.example")
    assert opened.store_text is False and opened.api_keys == ()
