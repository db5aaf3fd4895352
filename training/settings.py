"""Settings of the training part: one typed object, environment prefix ``EMOTITRACK_``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emotitrack.core.settings import DEFAULT_MODEL_NAME, tracking_uri_field

# The gate keeps the better version, so only metrics where higher is better (not log_loss or
# ece); training.registry.GATE_METRICS names the same ones (it imports these settings).
GateMetric = Literal["accuracy", "f1_macro", "recall_macro", "roc_auc"]


class TrainingSettings(BaseSettings):
    """Where data comes from, where runs go, and the defaults of a training run.

    Every field can be set as ``EMOTITRACK_<FIELD>`` (e.g. ``EMOTITRACK_DATA``); the tracking URI
    also honours MLflow's own ``MLFLOW_TRACKING_URI``. CLI options override settings per run.
    """

    model_config = SettingsConfigDict(
        env_prefix="EMOTITRACK_", extra="ignore", validate_by_name=True
    )

    data: Path = Field(
        Path("../shared/data/imdb"),
        description="Labelled data: a Parquet/CSV file or a folder of split files (train, test, ...).",
    )
    text_column: str = Field("text", description="Column holding the text.")
    label_column: str = Field("label", description="Column holding the label.")
    tracking_uri: str = tracking_uri_field()
    experiment: str = Field(
        "emotitrack-training", description="MLflow experiment for training runs."
    )
    model_name: str = Field(
        DEFAULT_MODEL_NAME,
        description="Registered model each run adds a version to; promotion acts on it.",
    )
    min_rows: int = Field(100, ge=2, description="Fewest training rows accepted.")
    seed: int = Field(42, description="Seed for splits, sampling and the classifier.")
    validation_fraction: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Share of train held out for validation (and the promotion gate) when the "
        "data has no validation split.",
    )
    test_fraction: float = Field(
        0.2, gt=0, lt=0.5, description="Share held out as test when the data has no test split."
    )
    prediction_log_url: str | None = Field(
        None,
        description="Prediction log the shadow promotion gate reads (`promote --gate "
        "--gate-evidence shadow`); unset: that gate refuses to run.",
    )
    reference_size: int = Field(
        5000, ge=10, description="Held-out rows saved as the monitoring reference sample."
    )
    gate_tolerance: float = Field(
        0.005,
        ge=0,
        description="Promotion gate: largest drop in the gate metric a challenger may show.",
    )
    gate_metric: GateMetric = Field(
        "accuracy",
        description="Promotion gate metric, one where higher is better: accuracy, f1_macro, "
        "recall_macro or roc_auc.",
    )
