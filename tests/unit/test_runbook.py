"""Every alert points at a runbook section that exists, and every section belongs to an alert."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.unit.test_docs import anchors

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
RUNBOOK = REPO / "docs" / "runbook.md"


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def runbook_sections() -> set[str]:
    """Second-level headings only: the sections an alert can point at."""
    return {line[3:].strip() for line in RUNBOOK.read_text().splitlines() if line.startswith("## ")}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_alert_points_at_its_runbook_section(rule: dict) -> None:
    url = rule.get("annotations", {}).get("runbook_url", "")
    path, _, anchor = url.partition("#")
    assert path == "docs/runbook.md", f"{rule['alert']}: runbook_url {url!r}"
    assert anchor == rule["alert"].lower(), f"{rule['alert']}: anchor {anchor!r}"
    assert anchor in anchors(RUNBOOK.read_text()), f"no section ## {rule['alert']} in the runbook"


def test_every_runbook_section_is_an_alert() -> None:
    alerts = {rule["alert"] for rule in alert_rules()}
    assert runbook_sections() == alerts, (
        f"sections without an alert: {sorted(runbook_sections() - alerts)}; "
        f"alerts without a section: {sorted(alerts - runbook_sections())}"
    )
