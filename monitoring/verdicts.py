"""The three verdicts of a report, each with its own flag and reason: data drift (the text and
its descriptors), prediction drift (predicted-label shares and mean confidence) and quality
(accuracy estimated from the confidences, and measured where feedback labels exist)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from emotitrack.core.descriptors import DESCRIPTOR_COLUMNS
from monitoring.drift import TEXT_COLUMNS, ColumnDrift
from monitoring.estimation import (
    AccuracyEstimate,
    Shift,
    confidence_shift,
    estimate_accuracy,
    fit_calibration,
    label_share_shift,
)

DATA_COLUMNS = (*TEXT_COLUMNS, *DESCRIPTOR_COLUMNS)


def data_drift(columns: Mapping[str, ColumnDrift], share: float) -> dict[str, Any]:
    """Drift when at least ``share`` of the tested data columns drifted (Evidently's column
    verdicts); the predictions' columns are the prediction verdict's business."""
    tested = [name for name in DATA_COLUMNS if name in columns]
    drifted = [name for name in tested if columns[name].drifted]
    detected = bool(tested) and len(drifted) / len(tested) >= share
    reason = (
        f"{len(drifted)} of {len(tested)} data columns drifted"
        + (f" ({', '.join(drifted)})" if drifted else "")
        + f"; drift at a share of {share:g}"
    )
    return {
        "detected": detected,
        "reason": reason,
        "drifted_columns": drifted,
        "tested_columns": tested,
        "share": len(drifted) / len(tested) if tested else 0.0,
        "threshold": share,
    }


def prediction_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    p_value: float,
    min_label_change: float,
    min_confidence_change: float,
) -> dict[str, Any]:
    """Drift when the predicted-label shares or the mean confidence moved: a test against the
    reference sample below ``p_value`` and a change large enough to matter."""
    return shift_verdict(
        label_share_shift(reference["predicted_label"], current["predicted_label"]),
        confidence_shift(reference["confidence"], current["confidence"]),
        p_value=p_value,
        min_label_change=min_label_change,
        min_confidence_change=min_confidence_change,
    )


def shift_verdict(
    labels: Shift,
    confidence: Shift,
    *,
    p_value: float,
    min_label_change: float,
    min_confidence_change: float,
) -> dict[str, Any]:
    """``prediction_drift`` from tests already run (the job runs them on the database's counts
    and moments of the whole window)."""
    label_moved = labels.p_value < p_value and labels.change >= min_label_change
    confidence_moved = (
        confidence.p_value < p_value and abs(confidence.change) >= min_confidence_change
    )
    parts = [
        f"label shares {'moved' if label_moved else 'held'} (largest change "
        f"{labels.change:+.3f} in share, chi-square p={labels.p_value:.2g})",
        f"mean confidence {'moved' if confidence_moved else 'held'} ({confidence.change:+.3f}, "
        f"Welch p={confidence.p_value:.2g})",
    ]
    return {
        "detected": label_moved or confidence_moved,
        "reason": "; ".join(parts)
        + f"; drift at p < {p_value:g} with a change of at least {min_label_change:g} in a "
        f"label's share or {min_confidence_change:g} in mean confidence",
        "label_shares_p_value": labels.p_value,
        "label_share_change": labels.change,
        "label_shares_drifted": label_moved,
        "confidence_p_value": confidence.p_value,
        "confidence_change": confidence.change,
        "confidence_drifted": confidence_moved,
        "p_value_threshold": p_value,
        "min_label_share_change": min_label_change,
        "min_confidence_change": min_confidence_change,
    }


def quality(
    reference_accuracy: float,
    estimated: AccuracyEstimate,
    measured: AccuracyEstimate | None,
    margin: float,
) -> dict[str, Any]:
    """Degraded when the accuracy estimated from the confidences is more than ``margin`` below
    the reference accuracy, or when the accuracy measured on feedback labels is, with its whole
    interval below the reference (a few labels alone do not condemn a model)."""
    floor = reference_accuracy - margin
    estimated_low = estimated.accuracy < floor
    measured_low = (
        measured is not None and measured.accuracy < floor and measured.upper < (reference_accuracy)
    )
    parts = [
        f"estimated accuracy {estimated.accuracy:.3f} "
        f"[{estimated.lower:.3f}, {estimated.upper:.3f}]",
        "no measured accuracy (too few feedback labels)"
        if measured is None
        else f"measured accuracy {measured.accuracy:.3f} [{measured.lower:.3f}, "
        f"{measured.upper:.3f}]",
    ]
    return {
        "detected": estimated_low or measured_low,
        "reason": f"{'; '.join(parts)} vs reference {reference_accuracy:.3f}; degraded below "
        f"{floor:.3f} (reference - {margin:g})",
        "estimated_degraded": estimated_low,
        "measured_degraded": measured_low,
        "accuracy_floor": floor,
        "margin": margin,
    }


def window_estimate(reference: pd.DataFrame, current: pd.DataFrame) -> AccuracyEstimate:
    """CBPE on a window: the logged confidence is the predicted (argmax) class's probability,
    calibrated on the reference sample (its true labels say how often each confidence is
    right)."""
    calibration = fit_calibration(
        reference["confidence"].to_numpy(dtype=float),
        (reference["true_label"] == reference["predicted_label"]).to_numpy(),
    )
    return estimate_accuracy(current["confidence"].to_numpy(dtype=float), calibration)
