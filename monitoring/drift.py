"""The drift verdict: an Evidently 0.7 report over text, descriptors and predictions, and the
summary (``DriftSummary``) that machines read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from evidently import (
    BinaryClassification,
    DataDefinition,
    Dataset,
    MulticlassClassification,
    Report,
)
from evidently.core.report import Snapshot
from evidently.legacy.tests.base_test import TestStatus
from evidently.presets import ClassificationPreset, DataDriftPreset

from emotitrack.core.descriptors import DESCRIPTOR_COLUMNS

SCHEMA_VERSION = 2  # 2: separate verdicts, estimated and measured accuracy
TEXT_COLUMNS = ["text"]
NUMERICAL_COLUMNS = [*DESCRIPTOR_COLUMNS, "confidence"]
CATEGORICAL_COLUMNS = ["predicted_label"]
MONITORED_COLUMNS = [*TEXT_COLUMNS, *NUMERICAL_COLUMNS, *CATEGORICAL_COLUMNS]
TEXT_DRIFT_SKIPPED = (
    "skipped: the window's texts are not in the prediction log (EMOTITRACK_STORE_TEXT=false); "
    "drift is judged on the logged descriptors and predictions"
)


@dataclass(frozen=True)
class ColumnDrift:
    method: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftSummary:
    """What ``summary.json`` holds (documented in docs/monitoring.md; bump SCHEMA_VERSION on an
    incompatible change)."""

    generated_at: str
    window: dict[str, Any]
    model: dict[str, Any]
    counts: dict[str, int]
    dataset_drift: bool
    drift_share: float
    drift_share_threshold: float
    drifted_columns: int
    columns: dict[str, ColumnDrift]
    predictions: dict[str, Any]
    quality: dict[str, Any]
    report_html: str = ""
    skipped_columns: dict[str, str] = field(default_factory=dict)  # column -> why
    # "data_drift", "prediction_drift", "quality" -> {"detected": bool, "reason": str, ...}
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # {"pairs": [...]}: a shadow model's agreement with the answers given (docs/shadow.md)
    shadow: dict[str, Any] = field(default_factory=lambda: {"pairs": []})
    schema_version: int = SCHEMA_VERSION
    mlflow_run_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def detected(self, keys: Iterable[str]) -> list[str]:
        """Which of the verdicts ``keys`` (keys of ``verdicts``) found something."""
        return [key for key in keys if self.verdicts.get(key, {}).get("detected")]


def run_report(
    reference: pd.DataFrame, current: pd.DataFrame, drift_share: float, *, with_text: bool = True
) -> Snapshot:
    """Evidently's data drift preset: domain-classifier text drift on the raw text (unless
    ``with_text`` is off: no texts were logged), statistical tests on descriptors, predicted
    labels and confidence."""
    text_columns = TEXT_COLUMNS if with_text else []
    columns = [*text_columns, *NUMERICAL_COLUMNS, *CATEGORICAL_COLUMNS]
    definition = DataDefinition(
        text_columns=text_columns,
        numerical_columns=NUMERICAL_COLUMNS,
        categorical_columns=CATEGORICAL_COLUMNS,
    )
    # include_tests: Evidently's per-column drift verdicts, which column_drifts reads
    report = Report([DataDriftPreset(columns=columns, drift_share=drift_share)], include_tests=True)
    return report.run(
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        current_data=Dataset.from_pandas(current[columns], data_definition=definition),
    )


def column_drifts(snapshot: Snapshot) -> dict[str, ColumnDrift]:
    """Per-column test, score, threshold and verdict out of the snapshot. The verdict is
    Evidently's own, the one DriftedColumnsCount counts."""
    result = snapshot.dict()
    verdicts = _drift_verdicts(result["tests"])
    drifts = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if not config["type"].endswith("ValueDrift"):
            continue
        method, threshold, score = (
            config["method"],
            float(config["threshold"]),
            float(metric["value"]),
        )
        drifted = verdicts.get(metric["id"])
        if drifted is None:  # a report run without tests (as the benchmarks' variants)
            drifted = _threshold_rule(method, score, threshold)
        drifts[config["column"]] = ColumnDrift(method, score, threshold, drifted)
    return drifts


def _drift_verdicts(tests: list[dict[str, Any]]) -> dict[str, bool]:
    """Metric id -> drift detected, from Evidently's ValueDrift tests (a failed test is drift)."""
    return {
        test["metric_config"]["metric_id"]: test["status"] == TestStatus.FAIL
        for test in tests
        if test["id"] == "drift"
    }


def _threshold_rule(method: str, score: float, threshold: float) -> bool:
    """Evidently's verdict re-derived from score and threshold, where they say it all."""
    if method.startswith("Percentile"):
        # its threshold sets a bootstrap percentile of random classifiers, not a score cutoff
        raise ValueError(f"{method}: no verdict without the report's tests (include_tests=True)")
    # p-values drift when small; distances and classifier scores when large.
    return score < threshold if "p_value" in method else score >= threshold


def drifted_share(snapshot: Snapshot) -> tuple[int, float]:
    for metric in snapshot.dict()["metrics"]:
        if metric["config"]["type"].endswith("DriftedColumnsCount"):
            return int(metric["value"]["count"]), float(metric["value"]["share"])
    raise ValueError("the report has no DriftedColumnsCount metric")


def run_quality_report(
    reference: pd.DataFrame, feedback: pd.DataFrame, classes: list[str]
) -> Snapshot:
    """Evidently's classification preset: the reference sample's quality (true vs predicted
    labels) beside the current quality on the predictions that got feedback labels."""
    if len(classes) == 2:
        task: BinaryClassification | MulticlassClassification = BinaryClassification(
            target="true_label", prediction_labels="predicted_label", pos_label=classes[-1]
        )
    else:
        task = MulticlassClassification(target="true_label", prediction_labels="predicted_label")
    definition = DataDefinition(
        classification=[task], categorical_columns=["true_label", "predicted_label"]
    )
    columns = ["true_label", "predicted_label"]
    return Report([ClassificationPreset()]).run(
        reference_data=Dataset.from_pandas(reference[columns], data_definition=definition),
        current_data=Dataset.from_pandas(feedback[columns], data_definition=definition),
    )
