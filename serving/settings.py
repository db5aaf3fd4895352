"""Settings of the serving part: one typed object, environment prefix ``EMOTITRACK_``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from emotitrack.core.settings import PRODUCTION_MODEL_URI, tracking_uri_field

DEFAULT_ALERT_MIN_CONFIDENCE = 0.7


class ServingSettings(BaseSettings):
    """Every field can be set as ``EMOTITRACK_<FIELD>``; the tracking URI also honours
    ``MLFLOW_TRACKING_URI``."""

    model_config = SettingsConfigDict(
        env_prefix="EMOTITRACK_", extra="ignore", validate_by_name=True
    )

    model_uri: str = Field(
        PRODUCTION_MODEL_URI,
        description="Model to serve: models:/NAME@alias, models:/NAME/Stage, models:/NAME/N, "
        "runs:/RUN/model or a local path. Aliases and stages are followed live.",
    )
    tracking_uri: str = tracking_uri_field()
    poll_interval_s: float = Field(
        30.0, gt=0, description="How often the registry is asked whether Production moved."
    )
    admin_token: SecretStr | None = Field(
        None, description="Bearer token for /admin/*; the admin endpoints are off without it."
    )
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="API keys for /predict, /predict/batch, /invocations and /feedback, as a "
        "comma-separated list or a JSON list; sent as `Authorization: Bearer <key>` or "
        "`X-API-Key: <key>`. Empty: those endpoints are open.",
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Origins browsers may call the API from (comma-separated or JSON list; `*` "
        "for any). Empty: no CORS headers, so browsers refuse cross-origin calls.",
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest time a request may take, body upload included: slower ones get "
        "408 (body not received in time) or 503 (not answered in time).",
    )
    store_text: bool = Field(
        True,
        description="Keep the raw text in the prediction log. False: only its SHA-256 and its "
        "descriptors (length, word count, out-of-vocabulary share, non-letter share).",
    )
    max_text_chars: int = Field(20_000, gt=0, description="Longest text accepted.")
    max_batch_texts: int = Field(1_000, gt=0, description="Most texts in one batch request.")
    max_body_bytes: int = Field(
        25_000_000, gt=0, description="Largest request body; larger ones get 413 before parsing."
    )
    batch_window_ms: float = Field(
        0.0,
        ge=0,
        description="How long a request waits for others to share its model call; 0: only "
        "requests that arrive while the model is busy share the next call.",
    )
    max_model_batch: int = Field(
        256,
        gt=0,
        description="Most texts in a model call shared by several requests; a request of "
        "more texts is scored whole, on its own.",
    )
    scoring_process: bool = Field(
        True,
        description="Score in a child process per worker, so tokenising uses another core than "
        "the HTTP event loop (the model is held twice in memory). Until the child is up, or "
        "if it fails, requests are scored in-process.",
    )
    prediction_log_url: str = Field(
        "sqlite:///predictions.db",
        description="Prediction log store (SQLAlchemy URL): SQLite embedded, PostgreSQL for "
        "several replicas.",
    )
    spill_dir: Path = Field(
        Path("prediction-spill"),
        description="Where records wait on disk while the prediction log store is unreachable.",
    )
    log_flush_interval_s: float = Field(
        0.5, gt=0, description="Longest time a record waits in memory before being written."
    )
    log_flush_rows: int = Field(500, gt=0, description="Records written per batch.")
    log_buffer_rows: int = Field(
        50_000, gt=0, description="Records held in memory before they spill to disk."
    )
    alert_min_confidence: float = Field(
        DEFAULT_ALERT_MIN_CONFIDENCE,
        gt=0,
        lt=1,
        description="Mean prediction confidence below which the EmotiTrackLowConfidence alert "
        "fires; published as `emotitrack_alert_min_confidence_ratio`, which the rule reads.",
    )

    shadow_model_uri: str = Field(
        "",
        description="A second model scored off the request path on a share of live requests "
        "(e.g. models:/emotitrack-sentiment@challenger), logged with source 'shadow' and its "
        "own version; followed like the served model. Empty: no shadow.",
    )
    shadow_share: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of requests the shadow model also scores (0 to 1); shadow work that "
        "finds its queue full is dropped, never waited for.",
    )

    @field_validator("admin_token", mode="before")
    @classmethod
    def _blank_token_is_none(cls, value: Any) -> Any:
        """``EMOTITRACK_ADMIN_TOKEN=`` (what docker-compose passes when it is unset) turns the
        admin endpoints off; it must never become a token that an empty credential matches."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """A JSON list or comma-separated values (what fits in one environment variable)."""
        if not isinstance(value, str):
            return value
        text = value.strip()
        items = json.loads(text) if text.startswith("[") else text.split(",")
        return tuple(str(item).strip() for item in items if str(item).strip())
