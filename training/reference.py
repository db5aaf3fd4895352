"""The reference sample: held-out texts with their true and predicted labels, logged by every
training run. Monitoring compares live traffic against it."""

from __future__ import annotations

import pandas as pd

from training.data import LABEL, TEXT


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
