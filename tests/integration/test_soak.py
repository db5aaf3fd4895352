"""The soak (``harness.soak``, which ``benchmarks.soak`` runs) in quick mode: mixed traffic
while the server reloads under load."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.soak import SoakConfig, run_soak

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_quick_soak_fails_nothing_and_logs_each_acknowledged_prediction_once(
    imdb_sample: Path, tmp_path: Path
) -> None:
    config = SoakConfig(
        workdir=tmp_path / "soak",
        minutes=0.5,
        promote_every_s=8,
        data=imdb_sample,
        train_rows=1600,
        test_rows=600,
    )
    report = run_soak(config)

    assert report["failed"] == 0, report["failure_samples"]
    assert all(report["routes"][route]["ok"] > 0 for route in report["routes"]), report["routes"]
    # the alias moved at least three times and the server followed each move under load
    assert report["promotions"] >= 3 and report["unserved_promotions"] == 0
    assert set(report["versions_served"]) == {"1", "2"}
    loaded = report["reloads"]['emotitrack_model_reloads_total{outcome="loaded"}']
    assert loaded >= report["promotions"]  # the start-up load plus one per served promotion
    reconciliation = report["reconciliation"]
    assert reconciliation["acknowledged"] > 1000, reconciliation
    assert reconciliation["logged"] == reconciliation["acknowledged"], reconciliation
    assert reconciliation["missing"] == 0 and reconciliation["duplicates"] == 0, reconciliation
    assert reconciliation["logged_not_acknowledged"] == 0, reconciliation
    assert reconciliation["ids_missing"] == 0 and reconciliation["ids_with_wrong_text"] == 0
    assert reconciliation["feedback_acknowledged"] > 0, reconciliation
    assert reconciliation["feedback_missing"] == 0, reconciliation
    assert report["shutdown"] == {"signal": "SIGTERM", "exit_code": 0}
    assert (config.workdir / "soak.json").is_file()
