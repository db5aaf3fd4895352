"""The reference sample every training run logs: held-out texts with their true and predicted
labels. Training writes it; monitoring compares live traffic against it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

REFERENCE_ARTIFACT = "reference/reference.parquet"
REFERENCE_COLUMNS = ("text", "label", "predicted_label", "confidence")


def load_reference(run_id: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The reference sample a training run logged."""
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=REFERENCE_ARTIFACT, tracking_uri=tracking_uri
    )
    return pd.read_parquet(Path(local), use_threads=False)  # see training.data._read_table
