"""Settings of the batch part: one typed object, environment prefix ``EMOTITRACK_``."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emotitrack.core.settings import PRODUCTION_MODEL_URI, tracking_uri_field


class BatchSettings(BaseSettings):
    """Every field can be set as ``EMOTITRACK_<FIELD>``; the tracking URI also honours
    ``MLFLOW_TRACKING_URI``."""

    model_config = SettingsConfigDict(
        env_prefix="EMOTITRACK_", extra="ignore", validate_by_name=True
    )

    model_uri: str = Field(
        PRODUCTION_MODEL_URI,
        description="Model to score with, pinned to the version it names when the job starts.",
    )
    tracking_uri: str = tracking_uri_field()
    text_column: str = Field("text", description="Column holding the text.")
    batch_workers: int | None = Field(
        None, ge=1, description="Scoring processes of `emotitrack score`; unset: one per core."
    )
    batch_rows: int = Field(
        4_096, gt=0, description="Most rows read, scored and written as one record batch."
    )
    max_text_chars: int = Field(20_000, gt=0, description="Longest text accepted.")
    prediction_log_url: str = Field(
        "sqlite:///predictions.db",
        description="Prediction log that `emotitrack score --log-predictions` writes the scored "
        "rows to (SQLAlchemy URL; the one the API writes and monitoring reads).",
    )
    store_text: bool = Field(
        True,
        description="Keep the raw text in the prediction log. False: only its SHA-256 and its "
        "descriptors (length, word count, out-of-vocabulary share, non-letter share).",
    )
    spark_master: str = Field(
        "local[*]",
        description="Spark master of `emotitrack score --engine spark` (`local[*]`, "
        "`spark://HOST:7077`, `yarn`) or a Spark Connect URL (`sc://HOST:15002`).",
    )
