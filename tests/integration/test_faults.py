"""Faults under load, beyond test_serving_lifecycle.py: a PostgreSQL log outage under mixed
traffic, SIGKILL and the restart that replays its spill files, SIGTERM with requests in flight,
a tracking server that is down at start-up (and again later), a promoted version whose
artifacts are missing."""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import mlflow
import pytest
import yaml
from mlflow import MlflowClient

from emotitrack.core.prediction_log import PredictionReader
from harness.data import review_sample
from harness.processes import wait_until
from harness.registries import Registry, reset_production
from harness.servers import ApiServer, MlflowServer, start_api
from harness.soak import SoakConfig, run_soak, train_two_versions
from harness.traffic import Traffic
from training.registry import promote

pytestmark = pytest.mark.integration
RELOADS = "emotitrack_model_reloads_total"


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Versions 1 and 2 of the model, trained once by the real code for this module's tests."""
    workdir = tmp_path_factory.mktemp("fault-registry")
    config = SoakConfig(workdir=workdir, data=imdb_sample, train_rows=1600, test_rows=600)
    return train_two_versions(config)


def soak_config(imdb_sample: Path, workdir: Path, **overrides: object) -> SoakConfig:
    """A short soak on PostgreSQL: 16 clients, promotions every 10 s."""
    config = SoakConfig(
        workdir=workdir,
        data=imdb_sample,
        concurrency=16,
        promote_every_s=10,
        postgres=True,
        progress_every_s=5,
    )
    for name, value in overrides.items():
        setattr(config, name, value)
    return config


@pytest.mark.timeout(150)
def test_postgres_outage_under_mixed_load_spills_replays_and_loses_nothing(
    registry: Registry, imdb_sample: Path, tmp_path: Path
) -> None:
    config = soak_config(imdb_sample, tmp_path, minutes=0.35, pg_outage_s=8.0, pg_outage_at_s=5.0)
    report = run_soak(config, registry)

    assert report["failed"] == 0, report["failure_samples"]
    began, ended = report["outage_s"]
    assert ended - began >= 8
    log = report["prediction_log"]
    spilled = log["emotitrack_prediction_log_spilled_total"]
    assert spilled > 0
    assert log["emotitrack_prediction_log_replayed_total"] == spilled
    assert log["emotitrack_prediction_log_dropped_total"] == 0
    assert not list((tmp_path / "spill").glob("spill-*.jsonl"))
    reconciliation = report["reconciliation"]
    assert reconciliation["acknowledged"] > 500, reconciliation
    assert reconciliation["missing"] == 0 and reconciliation["duplicates"] == 0, reconciliation
    assert reconciliation["logged_not_acknowledged"] == 0, reconciliation
    assert reconciliation["ids_missing"] == 0 and reconciliation["feedback_missing"] == 0
    assert report["shutdown"] == {"signal": "SIGTERM", "exit_code": 0}


@pytest.mark.timeout(150)
def test_sigkill_under_load_loses_at_most_one_flush_interval_and_restart_replays_the_spill(
    registry: Registry, imdb_sample: Path, tmp_path: Path
) -> None:
    # killed at 12 s, inside an outage from 6 s to 14 s: records are on disk, not in the store
    config = soak_config(
        imdb_sample, tmp_path, minutes=0.2, pg_outage_s=8.0, pg_outage_at_s=6.0, sigkill=True
    )
    report = run_soak(config, registry)

    assert report["failed"] == 0, report["failure_samples"]
    shutdown, reconciliation = report["shutdown"], report["reconciliation"]
    assert shutdown["killed_exit_code"] == -9
    assert shutdown["spill_files_at_restart"] > 0 and shutdown["spilled_records_at_restart"] > 0
    # the restarted server replayed every record the killed one had spilled, and nothing else
    assert shutdown["replayed_by_restart"] == shutdown["spilled_records_at_restart"]
    assert shutdown["spill_files_left"] == 0 and shutdown["restart_exit_code"] == 0
    # lost: acknowledged but neither written nor spilled when the process died
    lost = reconciliation["missing"]
    assert lost <= shutdown["bound_records"], (lost, shutdown)
    assert lost <= config.log_flush_rows + shutdown["acked_last_flush_interval"]
    assert reconciliation["duplicates"] == 0 and reconciliation["ids_with_wrong_text"] == 0
    assert reconciliation["acknowledged"] - lost > 500


@dataclass
class Sent:
    started: float
    ended: float
    status: int | None  # None: no answer (connection refused or closed)
    request_ids: list[str]


class BigBatches:
    """Clients sending 800-text batches (each keeps the model busy a while) until refused."""

    def __init__(self, url: str, texts: list[str], clients: int = 6) -> None:
        self.url = url
        self.texts = texts
        self.sent: list[Sent] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _send(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while True:
                started = time.monotonic()
                try:
                    response = client.post("/predict/batch", json={"texts": self.texts})
                except httpx.HTTPError:
                    self._record(Sent(started, time.monotonic(), None, []))
                    return  # the server is going away: stop
                ids = [p["request_id"] for p in response.json().get("predictions", [])]
                self._record(Sent(started, time.monotonic(), response.status_code, ids))

    def _record(self, sent: Sent) -> None:
        with self._lock:
            self.sent.append(sent)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(60)


@pytest.mark.timeout(120)
def test_sigterm_under_load_finishes_in_flight_requests_and_flushes_the_log(
    registry: Registry, tmp_path: Path
) -> None:
    reset_production(registry)
    texts = review_sample(registry.settings.data, 800, seed=1)
    texts = (texts * 2)[:800]  # the module's sample holds 600 test reviews
    api = start_api(registry.tracking_uri, tmp_path)
    load = BigBatches(api.url, texts, clients=8)
    wait_until(lambda: len(load.sent) >= 8, timeout=60, what="batches answered")
    signalled = time.monotonic()
    api.process.terminate()
    load.join()
    assert api.terminate() == 0

    in_flight = [s for s in load.sent if s.started < signalled < s.ended]
    assert len(in_flight) >= 3, load.sent  # the SIGTERM really came under load
    # every request the server had surely read (sent > 0.5 s before) was answered in full
    surely_read = [s for s in in_flight if s.started < signalled - 0.5]
    assert surely_read and all(s.status == 200 for s in surely_read), in_flight
    assert {s.status for s in load.sent} <= {200, None}
    answered = [i for s in load.sent if s.status == 200 for i in s.request_ids]
    logged = PredictionReader(f"sqlite:///{tmp_path / 'predictions.db'}").read()
    assert sorted(logged["request_id"]) == sorted(answered)
    assert f"prediction log closed: {len(answered)} written, 0 spilled, 0 dropped" in api.output()


@pytest.mark.timeout(150)
def test_tracking_server_down_at_start_up_then_back_then_down_again(
    registry: Registry, tmp_path: Path
) -> None:
    reset_production(registry)
    # the registry's own SQLite file behind a real `mlflow server` (its artifacts stay local)
    backend = tmp_path / "registry.db"
    shutil.copy(registry.tracking_uri.removeprefix("sqlite:///"), backend)
    tracking = MlflowServer(f"sqlite:///{backend}", tmp_path / "artifacts", tmp_path / "mlflow.log")
    api = ApiServer(
        {
            "MLFLOW_TRACKING_URI": tracking.url,  # nothing listens there yet
            "EMOTITRACK_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
            "EMOTITRACK_SPILL_DIR": str(tmp_path / "spill"),
            "EMOTITRACK_POLL_INTERVAL_S": "1",
        },
        tmp_path,
    )
    try:
        ready = httpx.get(f"{api.url}/ready")
        assert ready.status_code == 503
        assert ready.json()["reason"].startswith("registry unreachable"), ready.json()
        refused = httpx.post(f"{api.url}/predict", json={"text": "great"})
        assert refused.status_code == 503 and "registry unreachable" in refused.json()["detail"]
        assert api.scrape()[f'{RELOADS}{{outcome="registry_unreachable"}}'] >= 1
        assert "model registry check failed: registry unreachable" in api.output()

        tracking.start()  # the server recovers by itself: its poller loads the model
        wait_until(lambda: httpx.get(f"{api.url}/ready").status_code == 200, 60, "recovery")
        with Traffic(api.url) as traffic:
            wait_until(lambda: traffic.total > 30, what="traffic")
            failed_checks = api.scrape()[f'{RELOADS}{{outcome="registry_unreachable"}}']
            tracking.stop()  # down during the poller's reload checks: keep serving
            wait_until(
                lambda: (
                    api.scrape()[f'{RELOADS}{{outcome="registry_unreachable"}}']
                    >= failed_checks + 2
                ),
                60,
                "failed checks while the tracking server is down",
            )
            seen = traffic.total
            wait_until(lambda: traffic.total > seen + 30, what="traffic during the outage")
        assert set(traffic.statuses) == {200}, traffic.statuses
        assert set(traffic.versions) == {registry.versions[0]}
        ready = httpx.get(f"{api.url}/ready").json()
        assert ready["ready"] is True and ready["registry_reachable"] is False
        assert ready["registry_error"].startswith("registry unreachable")
    finally:
        tracking.stop()
        assert api.terminate() == 0


def _alert_rules() -> list[dict[str, str]]:
    path = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.mark.timeout(120)
def test_a_promoted_version_with_missing_artifacts_is_refused_while_the_old_one_serves(
    registry: Registry, tmp_path: Path
) -> None:
    reset_production(registry)
    settings = registry.settings
    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    good = client.get_model_version(settings.model_name, registry.versions[0])
    good_version = str(good.version)
    gone = tmp_path / "deleted-artifacts"  # e.g. an artifact store cleaned up by mistake
    missing = client.create_model_version(settings.model_name, str(gone), run_id=good.run_id)
    api = start_api(registry.tracking_uri, tmp_path, poll_interval_s="0.5")
    try:
        with Traffic(api.url) as traffic:
            wait_until(lambda: traffic.total > 30, what="traffic")
            promote(settings, str(missing.version), reason="fault test: missing artifacts")
            # the poller retries every check, so the failure count keeps rising (alert stays on)
            wait_until(
                lambda: api.scrape().get(f'{RELOADS}{{outcome="load_failed"}}', 0) >= 3,
                60,
                "repeated refused reloads",
            )
            ready = httpx.get(f"{api.url}/ready").json()
            assert ready["ready"] is True and ready["model_version"] == good_version
            assert f"emotitrack-sentiment/{missing.version} failed" in ready["registry_error"]
            assert f"(artifacts: {gone})" in ready["registry_error"]  # where on-call should look
            promote(settings, good_version, reason="fault test: rollback")
            wait_until(
                lambda: httpx.get(f"{api.url}/ready").json()["registry_error"] == "",
                30,
                "the error cleared after the rollback",
            )
        assert set(traffic.statuses) == {200}, traffic.statuses
        assert set(traffic.versions) == {good_version}
        assert "model reload refused, still serving version" in api.output()
        assert api.scrape()["emotitrack_model_loaded"] == 1
    finally:
        assert api.terminate() == 0
        mlflow.set_tracking_uri(registry.tracking_uri)
    alerts = [r for r in _alert_rules() if RELOADS in r.get("expr", "")]
    assert any("load_failed" in r["expr"] for r in alerts), alerts


@pytest.mark.timeout(180)
def test_sigkill_while_the_store_hangs_loses_at_most_one_flush_interval(
    registry: Registry, imdb_sample: Path, tmp_path: Path
) -> None:
    # PostgreSQL frozen (SIGSTOP) from 4 s to 16 s, the server killed at 12 s: the writer is
    # stuck inside an insert no timeout ends; the stall guard must have moved records to disk.
    config = soak_config(
        imdb_sample,
        tmp_path,
        minutes=0.2,
        pg_outage_s=12.0,
        pg_outage_at_s=4.0,
        pg_outage_kind="freeze",
        sigkill=True,
    )
    report = run_soak(config, registry)

    assert report["failed"] == 0, report["failure_samples"]
    shutdown, reconciliation = report["shutdown"], report["reconciliation"]
    assert shutdown["killed_exit_code"] == -9
    assert shutdown["spilled_records_at_restart"] > 0
    assert shutdown["replayed_by_restart"] == shutdown["spilled_records_at_restart"]
    lost = reconciliation["missing"]
    assert lost <= config.log_flush_rows + shutdown["acked_last_flush_interval"], (lost, shutdown)
    assert reconciliation["duplicates"] == 0 and reconciliation["acknowledged"] - lost > 500
