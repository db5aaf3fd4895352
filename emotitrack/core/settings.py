"""What every part's settings share: the model name, the Production URI, the tracking URI field."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, Field

DEFAULT_MODEL_NAME = "emotitrack-sentiment"
PRODUCTION_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@production"


def tracking_uri_field() -> Any:
    """The tracking URI setting every part shares: MLflow's own MLFLOW_TRACKING_URI first."""
    return Field(
        "sqlite:///mlflow.db",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "EMOTITRACK_TRACKING_URI"),
        description="MLflow tracking/registry URI; embedded SQLite in the working folder by default.",
    )
