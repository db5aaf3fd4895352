"""Scores and pictures of a fitted model on held-out data."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from sklearn.metrics import (
    ConfusionMatrixDisplay,
    PrecisionRecallDisplay,
    RocCurveDisplay,
    accuracy_score,
    classification_report,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from emotitrack.core.model_format import PROBABILITY_PREFIX
from training.data import LABEL, TEXT


def probability_matrix(predictions: pd.DataFrame, classes: list[str]) -> np.ndarray:
    return predictions[[PROBABILITY_PREFIX + c for c in classes]].to_numpy()


def score(truth: pd.Series, predictions: pd.DataFrame, classes: list[str]) -> dict[str, float]:
    """Accuracy, macro F1, macro recall (``recall_macro``: average recall), log loss, expected
    calibration error (``ece``), ROC AUC (when the truth holds more than one class; for more
    than two, all of them) and per-class precision/recall."""
    y_true = truth.to_numpy()
    y_pred = predictions["label"].to_numpy()
    proba = probability_matrix(predictions, classes)
    precision, recall, _, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=classes, average="macro")),
        "recall_macro": float(np.mean(recall)),
        "log_loss": float(log_loss(y_true, proba, labels=classes)),
        "ece": expected_calibration_error(y_true, proba, classes),
    }
    present = set(y_true)
    if len(present) > 1:
        if len(classes) == 2:
            metrics["roc_auc"] = float(roc_auc_score(y_true == classes[1], proba[:, 1]))
        elif present == set(classes):
            metrics["roc_auc"] = float(
                roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
            )
    for cls, p, r in zip(classes, precision, recall, strict=True):
        metrics[f"precision_{cls}"] = float(p)
        metrics[f"recall_{cls}"] = float(r)
    return metrics


def expected_calibration_error(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], bins: int = 15
) -> float:
    """Top-label ECE: the gap between confidence and accuracy, averaged over equal-width
    confidence bins weighted by their share of rows (Guo et al. 2017)."""
    confidence, correct = _top_label(y_true, proba, classes)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    gap = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            gap += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(gap)


def _top_label(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    best = proba.argmax(axis=1)
    correct = np.asarray(classes, dtype=object)[best] == y_true
    return proba.max(axis=1), correct.astype(float)


def write_report_files(
    frame: pd.DataFrame, predictions: pd.DataFrame, classes: list[str], out: Path, seed: int
) -> list[Path]:
    """Confusion matrix, ROC and PR curves (PNG), classification report and misclassified sample."""
    out.mkdir(parents=True, exist_ok=True)
    y_true = frame[LABEL].to_numpy()
    y_pred = predictions["label"].to_numpy()
    proba = probability_matrix(predictions, classes)
    files = [
        _confusion_matrix(y_true, y_pred, classes, out / "confusion_matrix.png"),
        _curves(y_true, proba, classes, out / "roc_curve.png", RocCurveDisplay, "ROC"),
        _curves(y_true, proba, classes, out / "pr_curve.png", PrecisionRecallDisplay, "PR"),
        _reliability_diagram(y_true, proba, classes, out / "reliability_diagram.png"),
    ]
    report = out / "classification_report.txt"
    report.write_text(classification_report(y_true, y_pred, labels=classes, digits=4))
    files.append(report)
    files.append(_misclassified_sample(frame, predictions, out / "misclassified.csv", seed))
    return files


def _confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path
) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=classes, ax=ax, cmap="Blues", colorbar=False
    )
    ax.set_title("Confusion matrix (test)")
    return _save(fig, path)


def _curves(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: list[str],
    path: Path,
    display: type[RocCurveDisplay] | type[PrecisionRecallDisplay],
    title: str,
) -> Path:
    """One curve per class, one-vs-rest (a binary model shows the positive class's curve)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    shown = classes[1:] if len(classes) == 2 else classes
    for cls in shown:
        i = classes.index(cls)
        display.from_predictions(y_true == cls, proba[:, i], name=cls, ax=ax)
    ax.set_title(f"{title} curve (test, one-vs-rest)")
    return _save(fig, path)


def _reliability_diagram(
    y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path, bins: int = 15
) -> Path:
    """Accuracy against confidence per bin (bars) beside the diagonal of perfect calibration,
    with how many rows each bin holds."""
    confidence, correct = _top_label(y_true, proba, classes)
    low = 1.0 / len(classes)
    edges = np.linspace(low, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    centers = (edges[:-1] + edges[1:]) / 2
    counts = np.bincount(which, minlength=bins)
    hits = np.bincount(which, weights=correct, minlength=bins)
    accuracy = np.divide(hits, counts, out=np.full(bins, np.nan), where=counts > 0)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    top.bar(centers, accuracy, width=edges[1] - edges[0], edgecolor="black", alpha=0.7,
            label="accuracy")  # fmt: skip
    top.plot([low, 1], [low, 1], "k--", label="perfect calibration")
    ece = expected_calibration_error(y_true, proba, classes, bins)
    top.set_title(f"Reliability diagram (test), ECE {ece:.4f}")
    top.set_ylabel("accuracy")
    top.legend(loc="upper left")
    bottom.bar(centers, counts, width=edges[1] - edges[0], color="grey")
    bottom.set_xlabel("confidence (top-label probability)")
    bottom.set_ylabel("rows")
    return _save(fig, path)


def strongest_ngrams_plot(table: pd.DataFrame, path: Path, top: int = 20) -> Path:
    """Horizontal bars of the n-grams weighing most towards each class."""
    classes = list(dict.fromkeys(table["class"]))
    fig, axes = plt.subplots(1, len(classes), figsize=(4.5 * len(classes), 0.28 * top + 1.2))
    for ax, cls in zip(np.atleast_1d(axes), classes, strict=True):
        rows = table[table["class"] == cls].nsmallest(top, "rank").iloc[::-1]
        ax.barh(rows["ngram"], rows["weight"], color="tab:blue")
        ax.set_title(f"towards {cls}")
        ax.set_xlabel("weight (logit per unit TF-IDF)")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _misclassified_sample(
    frame: pd.DataFrame, predictions: pd.DataFrame, path: Path, seed: int, size: int = 200
) -> Path:
    wrong = frame[LABEL].to_numpy() != predictions["label"].to_numpy()
    table = pd.DataFrame(
        {
            "text": frame[TEXT].to_numpy()[wrong],
            "true_label": frame[LABEL].to_numpy()[wrong],
            "predicted_label": predictions["label"].to_numpy()[wrong],
            "confidence": predictions["confidence"].to_numpy()[wrong],
        }
    )
    table = table.sample(n=min(size, len(table)), random_state=seed)
    table.sort_values("confidence", ascending=False).to_csv(path, index=False)
    return path
