"""Settings of the monitoring part: one typed object, environment prefix ``EMOTITRACK_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emotitrack.core.settings import PRODUCTION_MODEL_URI, tracking_uri_field

# `--fail-on` name -> key of the verdict in summary.json's `verdicts`
VERDICT_KEYS = {"data": "data_drift", "prediction": "prediction_drift", "quality": "quality"}


class MonitoringSettings(BaseSettings):
    """Every field can be set as ``EMOTITRACK_<FIELD>``; the tracking URI also honours
    ``MLFLOW_TRACKING_URI``."""

    model_config = SettingsConfigDict(
        env_prefix="EMOTITRACK_", extra="ignore", validate_by_name=True
    )

    model_uri: str = Field(
        PRODUCTION_MODEL_URI,
        description="Model whose training reference is compared (resolved as serving does).",
    )
    tracking_uri: str = tracking_uri_field()
    prediction_log_url: str = Field(
        "sqlite:///predictions.db",
        description="Prediction log the API writes (SQLAlchemy URL); the current window is read "
        "from it.",
    )
    window_hours: float = Field(
        24.0, gt=0, description="Current window: the last N hours of traffic."
    )
    min_window_rows: int = Field(
        100, ge=10, description="Fewest current rows a report is built on."
    )
    max_report_rows: int = Field(
        10_000,
        # Above 1,000 reference rows Evidently picks the tests the drift share was calibrated
        # with (absolute text drift, Wasserstein, Jensen-Shannon); at 1,000 or fewer, others.
        gt=1_000,
        description="Rows per side the drift report samples (seeded), which bounds its time and "
        "memory; counts, label shares and quality use every row. Above 1,000, where Evidently "
        "would switch to other tests.",
    )
    min_feedback: int = Field(
        50, ge=1, description="Feedback labels needed to report model quality."
    )
    drift_share: float = Field(
        0.4,
        gt=0,
        le=1,
        description="Dataset drift when at least this share of the 7 monitored columns drifted "
        "(0.4: three); chosen with benchmarks/drift_detection.py (docs/benchmarks.md).",
    )
    data_drift_share: float = Field(
        0.6,
        gt=0,
        le=1,
        description="Data drift verdict when at least this share of the data columns (text and "
        "the four descriptors; without logged texts the four descriptors) drifted; chosen with "
        "benchmarks/drift_detection.py (benchmarks/DRIFT.md).",
    )
    prediction_drift_p_value: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="Prediction drift verdict: a test on the predicted-label shares "
        "(chi-square) or the mean confidence (Welch) below this p-value, with the change at least "
        "the minimum below; chosen with benchmarks/drift_detection.py.",
    )
    min_label_share_change: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Prediction drift needs a label's share to move at least this much (so a "
        "large window does not flag a shift too small to matter).",
    )
    min_confidence_change: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Prediction drift needs the mean confidence to move at least this much.",
    )
    accuracy_margin: float = Field(
        0.03,
        ge=0,
        le=1,
        description="Quality verdict when the estimated accuracy, or the measured one (with "
        "enough feedback, its interval wholly below the reference), is more than this below the "
        "reference accuracy.",
    )
    reports_dir: Path = Field(
        Path("reports"), description="Where HTML/JSON reports and the index go."
    )
    monitoring_experiment: str = Field(
        "emotitrack-monitoring", description="MLflow experiment of report runs."
    )
    pushgateway_url: str | None = Field(
        None, description="Prometheus Pushgateway to push drift figures to (off when unset)."
    )
