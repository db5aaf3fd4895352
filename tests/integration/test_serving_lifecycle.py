"""The server over time: no model yet, promotions under traffic, outages, shutdown, workers."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlparse

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from emotitrack.core.prediction_log import PredictionReader
from harness.processes import wait_until
from harness.servers import ApiServer, PostgresCluster, mlflow_server, postgres_cluster
from harness.traffic import Traffic
from training.model import Hyperparameters
from training.registry import promote
from training.settings import TrainingSettings
from training.train import train

pytestmark = pytest.mark.integration
TOKEN = {"authorization": "Bearer s3cret"}
SMALL = Hyperparameters(max_features=5_000)


def test_starts_without_a_model_and_picks_it_up_once_promoted(
    settings: TrainingSettings, api_factory: Callable[..., ApiServer]
) -> None:
    api = api_factory(poll_interval_s="0.5")
    ready = httpx.get(f"{api.url}/ready")
    assert ready.status_code == 503
    assert "does not name a model version yet" in ready.json()["reason"]
    refused = httpx.post(f"{api.url}/predict", json={"text": "hello"})
    assert refused.status_code == 503 and "promote a version" in refused.json()["detail"]
    result = train(settings, SMALL)
    promote(settings, result.version)
    wait_until(
        lambda: httpx.get(f"{api.url}/ready").status_code == 200, what="the poller to load v1"
    )
    assert httpx.post(f"{api.url}/predict", json={"text": "hello"}).json()["model_version"] == "1"


def test_promotion_under_traffic_swaps_without_a_failed_request(
    settings: TrainingSettings, api_factory: Callable[..., ApiServer]
) -> None:
    first = train(settings, SMALL)
    promote(settings, first.version)
    api = api_factory(admin_token="s3cret", log_flush_interval_s="0.2")
    with Traffic(api.url) as traffic:
        wait_until(lambda: traffic.total > 50, what="traffic")
        second = train(settings, Hyperparameters(max_features=20_000))
        promote(settings, second.version)
        assert httpx.post(f"{api.url}/admin/reload", headers=TOKEN).json()["outcome"] == "loaded"
        seen = traffic.total
        wait_until(lambda: traffic.total > seen + 50, what="traffic after the swap")
    assert set(traffic.statuses) == {200}, traffic.statuses
    assert set(traffic.versions) == {"1", "2"}
    assert httpx.get(f"{api.url}/model").json()["version"] == "2"
    assert api.terminate() == 0
    # every acknowledged prediction is in the log, once
    logged = PredictionReader(f"sqlite:///{Path.cwd() / 'predictions.db'}").read()
    assert sorted(logged["request_id"]) == sorted(traffic.request_ids)


def test_a_broken_version_is_refused_and_the_old_one_keeps_serving(
    settings: TrainingSettings, api_factory: Callable[..., ApiServer]
) -> None:
    first = train(settings, SMALL)
    promote(settings, first.version)
    api = api_factory(admin_token="s3cret")
    broken = train(settings, SMALL)
    source = MlflowClient().get_model_version(settings.model_name, broken.version).source
    model_id = source.removeprefix("models:/")  # MLflow 3: versions point at a logged model
    artifacts = Path(urlparse(mlflow.get_logged_model(model_id).artifact_location).path)
    (artifacts / "artifacts" / "arrays.npz").write_bytes(b"corrupt")
    promote(settings, broken.version)
    reload = httpx.post(f"{api.url}/admin/reload", headers=TOKEN).json()
    assert reload == {"outcome": "load_failed", "model_version": "1"}
    ready = httpx.get(f"{api.url}/ready").json()
    assert (
        ready["ready"]
        and "loading models:/emotitrack-sentiment/2 failed" in ready["registry_error"]
    )
    assert httpx.post(f"{api.url}/predict", json={"text": "great"}).json()["model_version"] == "1"
    assert api.scrape()['emotitrack_model_reloads_total{outcome="load_failed"}'] == 1


def test_registry_outage_keeps_the_current_model_serving(
    imdb_sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with mlflow_server(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "mlflow.log"
    ) as uri:
        remote = TrainingSettings(
            data=imdb_sample, tracking_uri=uri, min_rows=50, reference_size=100
        )
        promote(remote, train(remote, SMALL).version)
        api = ApiServer(
            {
                "MLFLOW_TRACKING_URI": uri,
                "EMOTITRACK_ADMIN_TOKEN": "s3cret",
                "EMOTITRACK_PREDICTION_LOG_URL": f"sqlite:///{tmp_path / 'predictions.db'}",
                "EMOTITRACK_SPILL_DIR": str(tmp_path / "spill"),
            },
            tmp_path,
        )
    try:  # the tracking server is gone now; the model was loaded before /health answered
        assert httpx.get(f"{api.url}/ready").json()["model_version"] == "1"
        reload = httpx.post(f"{api.url}/admin/reload", headers=TOKEN, timeout=120).json()
        assert reload == {"outcome": "registry_unreachable", "model_version": "1"}
        ready = httpx.get(f"{api.url}/ready")
        assert ready.status_code == 200
        assert (
            ready.json()["registry_reachable"] is False
            and "registry unreachable" in ready.json()["registry_error"]
        )
        assert httpx.post(f"{api.url}/predict", json={"text": "great"}).status_code == 200
        assert api.scrape()['emotitrack_model_reloads_total{outcome="registry_unreachable"}'] == 1
        assert "model registry check failed" in api.output()
    finally:
        assert api.terminate() == 0


def test_sigterm_flushes_every_acknowledged_prediction(
    settings: TrainingSettings, api_factory: Callable[..., ApiServer], tmp_path: Path
) -> None:
    promote(settings, train(settings, SMALL).version)
    api = api_factory(
        log_flush_interval_s="600", log_flush_rows="100000"
    )  # nothing flushes by itself
    with httpx.Client(base_url=api.url) as client:
        ids = [
            client.post("/predict", json={"text": f"text {i}"}).json()["request_id"]
            for i in range(60)
        ]
        batch = client.post("/predict/batch", json={"texts": ["a", "b", "c"]}).json()
    ids += [p["request_id"] for p in batch["predictions"]]
    assert api.terminate() == 0
    logged = PredictionReader(f"sqlite:///{tmp_path / 'predictions.db'}").read()
    assert sorted(logged["request_id"]) == sorted(ids)
    assert "prediction log closed: 63 written, 0 spilled, 0 dropped" in api.output()


@pytest.fixture
def postgres_log() -> Iterator[PostgresCluster]:
    with postgres_cluster() as cluster:
        yield cluster


def test_postgres_prediction_log_outage_spills_and_replays(
    settings: TrainingSettings,
    api_factory: Callable[..., ApiServer],
    postgres_log: PostgresCluster,
) -> None:
    cluster = postgres_log
    promote(settings, train(settings, SMALL).version)
    api = api_factory(prediction_log_url=cluster.url, log_flush_interval_s="0.2")
    with Traffic(api.url) as traffic:
        wait_until(lambda: traffic.total > 30, what="traffic")
        cluster.stop()
        seen = traffic.total
        wait_until(
            lambda: api.scrape().get("emotitrack_prediction_log_spilled_total", 0) > 0,
            what="a spill",
        )
        wait_until(lambda: traffic.total > seen + 50, what="traffic during the outage")
        assert httpx.get(f"{api.url}/ready").json()["prediction_log_store_up"] is False
        cluster.start()
        wait_until(
            lambda: api.scrape().get("emotitrack_prediction_log_store_up") == 1,
            what="the store back",
        )
        seen = traffic.total
        wait_until(lambda: traffic.total > seen + 30, what="traffic after the outage")
    assert set(traffic.statuses) == {200}, traffic.statuses
    assert api.terminate() == 0
    metrics_replayed = list(Path.cwd().glob("spill/spill-*.jsonl"))
    assert metrics_replayed == []  # everything spilled was replayed
    logged = PredictionReader(cluster.url).read()
    assert sorted(logged["request_id"]) == sorted(traffic.request_ids)


def test_metrics_add_up_across_workers(
    settings: TrainingSettings, api_factory: Callable[..., ApiServer], tmp_path: Path
) -> None:
    result = train(settings, SMALL)
    promote(settings, result.version)
    multiproc = tmp_path / "prometheus"
    multiproc.mkdir()
    (multiproc / "counter_1.db").write_bytes(b"an earlier run's file")  # wiped at start
    api = api_factory(workers=2, extra_env={"PROMETHEUS_MULTIPROC_DIR": str(multiproc)})
    for i in range(40):  # a new connection each: the workers share the listening socket
        assert httpx.post(f"{api.url}/predict", json={"text": f"great film {i}"}).status_code == 200
    pids = {path.stem.rsplit("_", 1)[-1] for path in multiproc.glob("*.db")}
    assert len(pids) == 2, pids
    info = (
        'emotitrack_model_info{model_name="emotitrack-sentiment",'
        f'run_id="{result.run_id}",version="1"}}'
    )
    for _ in range(5):  # whichever worker answers the scrape, the totals are the same
        samples = api.scrape()
        assert samples['emotitrack_predictions_total{label="positive",model_version="1"}'] == 40
        assert (
            samples['emotitrack_http_requests_total{method="POST",route="/predict",status="200"}']
            == 40
        )
        assert [s for s in samples if s.startswith("emotitrack_model_info")] == [info]
        assert samples[info] == 1
        assert worker_pids(samples) == pids
        assert all(samples[f'process_resident_memory_bytes{{pid="{pid}"}}'] > 0 for pid in pids)

    # a worker dies: uvicorn starts another; the dead one's process series go, its counts stay
    killed = min(pids)
    os.kill(int(killed), signal.SIGKILL)

    def replaced() -> bool:
        samples = api.scrape()
        pids = worker_pids(samples)
        return len(pids) == 2 and killed not in pids and samples["emotitrack_model_loaded"] == 1

    wait_until(replaced, timeout=60, what="a new worker with the model, in place of the killed")
    samples = api.scrape()
    assert samples['emotitrack_predictions_total{label="positive",model_version="1"}'] == 40
    assert samples[info] == 1


def worker_pids(samples: dict[str, float]) -> set[str]:
    """The pids of the workers whose resident memory /metrics reports."""
    prefix = 'process_resident_memory_bytes{pid="'
    return {series[len(prefix) : -2] for series in samples if series.startswith(prefix)}
