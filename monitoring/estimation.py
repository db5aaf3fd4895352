"""Statistics behind the prediction and quality verdicts, computed from the predicted labels and
confidences of a window: accuracy estimated without labels (confidence-based performance
estimation, as NannyML's CBPE), accuracy measured on feedback labels, and the tests that tell a
shift in label shares or confidence from sampling noise."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


@dataclass(frozen=True)
class AccuracyEstimate:
    """An accuracy with its 95 % interval ``[lower, upper]``."""

    accuracy: float
    lower: float
    upper: float

    def interval(self) -> list[float]:
        return [self.lower, self.upper]


Calibration = Callable[[np.ndarray], np.ndarray]


def fit_calibration(confidence: Iterable[float], correct: Iterable[bool]) -> Calibration:
    """Confidence -> probability that the prediction is right, fitted on labelled rows (the
    reference sample) with isotonic regression, as NannyML's CBPE calibrates on its reference:
    a model a little over- or under-confident on its own data would bias every estimate."""
    from sklearn.isotonic import IsotonicRegression

    x = np.asarray(list(confidence), dtype=float)
    y = np.asarray(list(correct), dtype=float)
    keep = ~np.isnan(x)
    if keep.sum() < 2:
        raise ValueError("need at least two labelled rows to calibrate on")
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x[keep], y[keep])

    def calibrated(p: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(p), dtype=float)

    return calibrated


def estimate_accuracy(
    confidence: Iterable[float], calibration: Calibration | None = None, z: float = Z95
) -> AccuracyEstimate:
    """Expected accuracy of a window: the mean over rows of the predicted class's (calibrated)
    probability.

    With calibrated probabilities each prediction is right with probability ``p_i``, so the
    number of right answers is Poisson-binomial: mean ``sum p_i``, variance ``sum p_i (1 - p_i)``.
    The interval (normal approximation) is where the accuracy measured on the same rows should
    fall if the model is as calibrated on them as on its reference data."""
    p = np.asarray(list(confidence), dtype=float)
    p = p[~np.isnan(p)]
    if calibration is not None and len(p):
        p = calibration(p)
    if len(p) == 0:
        raise ValueError("no confidences to estimate accuracy from")
    accuracy = float(p.mean())
    spread = z * math.sqrt(float(np.sum(p * (1 - p)))) / len(p)
    return AccuracyEstimate(accuracy, max(0.0, accuracy - spread), min(1.0, accuracy + spread))


def measure_accuracy(correct: int, total: int, z: float = Z95) -> AccuracyEstimate:
    """Accuracy on ``total`` labelled predictions with its Wilson score interval (sound near 0
    and 1 and for small counts, where the normal one is not)."""
    if total <= 0:
        raise ValueError("no labelled predictions to measure accuracy on")
    p = correct / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return AccuracyEstimate(p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class Shift:
    """A two-sample test: its p-value and the size of the change (current minus reference)."""

    p_value: float
    change: float


def label_share_shift(reference: pd.Series, current: pd.Series) -> Shift:
    """Chi-square test of homogeneity on the predicted-label counts of the reference sample and
    the window (the reference's counts carry sampling noise too); ``change`` is the largest
    absolute change of one label's share."""
    classes = sorted(set(reference.dropna().astype(str)) | set(current.dropna().astype(str)))
    ref = reference.dropna().astype(str).value_counts().reindex(classes, fill_value=0)
    cur = current.dropna().astype(str).value_counts().reindex(classes, fill_value=0)
    if len(classes) < 2 or ref.sum() == 0 or cur.sum() == 0:
        return Shift(1.0, 0.0)
    change = float((cur / cur.sum() - ref / ref.sum()).abs().max())
    test = stats.chi2_contingency(np.vstack([ref.to_numpy(), cur.to_numpy()]), correction=False)
    return Shift(float(test.pvalue), change)


def confidence_shift(reference: pd.Series, current: pd.Series) -> Shift:
    """Welch's t-test on the mean confidence (unequal variances and sizes); ``change`` is the
    current mean minus the reference mean."""
    ref = reference.dropna().astype(float).to_numpy()
    cur = current.dropna().astype(float).to_numpy()
    if len(ref) < 2 or len(cur) < 2:
        return Shift(1.0, 0.0)
    change = float(cur.mean() - ref.mean())
    if ref.std() == 0 and cur.std() == 0:  # constant on both sides: no variance to test with
        return Shift(1.0 if change == 0 else 0.0, change)
    test = stats.ttest_ind(cur, ref, equal_var=False)
    return Shift(float(test.pvalue), change)
