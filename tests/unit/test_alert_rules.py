"""Alerts and dashboard speak the metric names the code exports and the docs describe; every
alert says how urgent it is and where its runbook is. (promtool and a live Prometheus check the
rules' behaviour in tests/integration/test_deployment.py and test_alert_delivery.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "emotitrack.json"
METRIC_DOCS = (REPO / "docs" / "serving.md", REPO / "docs" / "monitoring.md")

# Names the metrics convention (issue 19) replaced; nothing may query them any more.
REMOVED = {
    "emotitrack_model_version": "emotitrack_model_info{model_name,version,run_id}",
    "emotitrack_prediction_confidence": "emotitrack_prediction_confidence_ratio",
    "emotitrack_drift_detected": "the three verdicts, e.g. emotitrack_data_drift_detected",
    "emotitrack_drift_share": "emotitrack_drift_share_ratio",
    "emotitrack_drift_column_score": "emotitrack_drift_column_p_value / _distance",
    "emotitrack_drift_current_rows": "emotitrack_monitoring_window_rows",
    "emotitrack_drift_last_run_timestamp_seconds": "emotitrack_monitoring_last_run_timestamp_seconds",
}
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def queries() -> dict[str, str]:
    """{where: PromQL} for every alert and every dashboard target."""
    found = {f"alert {rule['alert']}": rule["expr"] for rule in rules()}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel.get("targets", []):
            found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    return found


def metric_names(expr: str) -> set[str]:
    """Our metric families in a query (a histogram's _bucket/_sum/_count as the family)."""
    return {HISTOGRAM_SERIES.sub("", name) for name in re.findall(r"\bemotitrack_\w+", expr)}


def names_in(text: str) -> set[str]:
    """Metric names in prose: `prefix_{a,b}_suffix` spelled out; `name{label,label}` is the name."""
    names = set()
    for prefix, braces, suffix in re.findall(r"\b(emotitrack_\w*)(?:\{([\w,]+)\})?(\w*)", text):
        if braces and prefix.endswith("_"):
            names.update(f"{prefix}{choice}{suffix}" for choice in braces.split(","))
        else:
            names.add(prefix)
    return names


def documented_names() -> set[str]:
    return names_in("\n".join(path.read_text() for path in METRIC_DOCS))


@pytest.mark.parametrize("where", sorted(queries()))
def test_no_query_uses_a_replaced_metric_name(where: str) -> None:
    # a prefix of a current name is fine: emotitrack_drift_share_ratio is not ..._drift_share
    stale = {name: REMOVED[name] for name in metric_names(queries()[where]) if name in REMOVED}
    assert not stale, f"{where} queries replaced names (use instead): {stale}"


def test_every_queried_metric_is_documented() -> None:
    documented = documented_names()
    undocumented = {
        where: sorted(metric_names(expr) - documented) for where, expr in queries().items()
    }
    missing = {where: names for where, names in undocumented.items() if names}
    assert not missing, (
        f"metrics queried but described in neither docs/serving.md nor monitoring.md: {missing}"
    )


@pytest.mark.parametrize("rule", rules(), ids=lambda rule: rule["alert"])
def test_every_alert_has_a_severity_a_summary_and_a_runbook(rule: dict) -> None:
    assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
    assert rule["annotations"]["summary"].strip(), rule["alert"]
    assert rule["annotations"]["runbook_url"].startswith("docs/runbook.md#"), rule["alert"]


def test_monitoring_alerts_name_the_model_and_link_the_report_index() -> None:
    by_name = {rule["alert"]: rule for rule in rules()}
    verdicts = ("EmotiTrackDataDrift", "EmotiTrackPredictionDrift", "EmotiTrackQualityDegraded")
    for name in (*verdicts, "EmotiTrackEstimatedAccuracyLow"):
        rule = by_name[name]
        assert "by (model_name, model_version)" in rule["expr"], name
        assert rule["annotations"]["report_index"].endswith("/index.html"), name
    assert "EmotiTrackDriftDetected" not in by_name  # replaced by the three verdicts


def test_names_in_prose_expand_brace_lists_and_drop_label_lists() -> None:
    text = "`emotitrack_log_{queued,dropped}_total`, `emotitrack_model_info{model_name,version}` 1"
    assert names_in(text) == {
        "emotitrack_log_queued_total",
        "emotitrack_log_dropped_total",
        "emotitrack_model_info",
    }
