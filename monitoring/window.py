"""The current window at any size: the database's aggregates of every row, and a seeded sample
drawn by the database for the drift report (``emotitrack.core.log_queries``). Memory depends on
the sample's size and the number of feedback labels, not on the window's."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
from scipy import stats

from emotitrack.core.log_queries import (
    WindowAggregates,
    WindowQuery,
    window_aggregates,
    window_labelled,
    window_sample,
)
from emotitrack.core.prediction_log import create_store_engine
from monitoring.estimation import Shift


@dataclass(frozen=True)
class WindowData:
    """``aggregates`` over every row; ``sample`` (at most ``sample_rows``, drawn uniformly and
    seeded) and ``labelled`` (the rows with a feedback label) in the shape
    ``PredictionReader.read`` returns: every column plus ``true_label``, oldest first."""

    aggregates: WindowAggregates
    sample: pd.DataFrame
    labelled: pd.DataFrame


def load_window(
    url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    last: int | None = None,
    model_version: str | None = None,
    source: str | None = None,
    batch_id: str | None = None,
    sample_rows: int = 10_000,
    seed: int = 0,
) -> WindowData:
    query = WindowQuery(since, until, last, model_version, source, batch_id)
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            # One snapshot on PostgreSQL, so the sample comes from the rows that were counted.
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            aggregates = window_aggregates(conn, query)
            sample = window_sample(conn, query, sample_rows, seed)
            labelled = window_labelled(conn, query) if aggregates.feedback_rows else sample[:0]
    finally:
        engine.dispose()
    return WindowData(aggregates, sample, labelled)


def label_counts_shift(reference: pd.Series, counts: dict[str, int]) -> Shift:
    """``estimation.label_share_shift`` with the window's label counts from the database."""
    ref_counts = reference.dropna().astype(str).value_counts()
    classes = sorted(set(ref_counts.index) | set(counts))
    ref = np.array([ref_counts.get(c, 0) for c in classes])
    cur = np.array([counts.get(c, 0) for c in classes])
    if len(classes) < 2 or ref.sum() == 0 or cur.sum() == 0:
        return Shift(1.0, 0.0)
    change = float(np.abs(cur / cur.sum() - ref / ref.sum()).max())
    test = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    return Shift(float(test.pvalue), change)


def confidence_moments_shift(reference: pd.Series, aggregates: WindowAggregates) -> Shift:
    """``estimation.confidence_shift`` (Welch) from the window's count, mean and variance."""
    ref = reference.dropna().astype(float).to_numpy()
    mean, variance = aggregates.mean_confidence, aggregates.confidence_variance
    if len(ref) < 2 or mean is None or variance is None:
        return Shift(1.0, 0.0)
    change = float(mean - ref.mean())
    if ref.std() == 0 and variance == 0:
        return Shift(1.0 if change == 0 else 0.0, change)
    test = stats.ttest_ind_from_stats(
        mean,
        math.sqrt(variance),
        aggregates.rows,
        float(ref.mean()),
        float(ref.std(ddof=1)),
        len(ref),
        equal_var=False,
    )
    return Shift(float(test.pvalue), change)
