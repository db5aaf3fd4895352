"""The reference sample: held-out texts with their true and predicted labels, logged by every
training run. Monitoring compares live traffic against it."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd

from training.data import LABEL, TEXT

REFERENCE_ARTIFACT = "reference/reference.parquet"
REFERENCE_COLUMNS = ("text", "label", "predicted_label", "confidence")


def build_reference(
    frame: pd.DataFrame, predictions: pd.DataFrame, size: int, seed: int
) -> pd.DataFrame:
    """A seeded sample of held-out rows: text, true label, predicted label, confidence and the
    per-class probabilities."""
    table = pd.concat(
        [
            frame[[TEXT, LABEL]].reset_index(drop=True),
            predictions.rename(columns={"label": "predicted_label"}).reset_index(drop=True),
        ],
        axis=1,
    )
    return table.sample(n=min(size, len(table)), random_state=seed).reset_index(drop=True)


def load_reference(run_id: str, tracking_uri: str | None = None) -> pd.DataFrame:
    """The reference sample a training run logged."""
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=REFERENCE_ARTIFACT, tracking_uri=tracking_uri
    )
    return pd.read_parquet(Path(local), use_threads=False)  # see training.data._read_table
