"""The API's metrics by convention: one ``emotitrack_model_info`` series for the served model
(swapped on reload), the alert threshold from the settings, and the standard ``process_*``
figures, per worker under a ``pid`` in multiprocess mode (dead workers' series gone)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from emotitrack.core.registry import ModelRef
from serving.cli import main as serve_main
from serving.cli import metrics_folder
from serving.metrics import build_metrics, clear_multiprocess_dir
from serving.model_store import LoadedModel
from serving.service import Service
from serving.settings import ServingSettings

REPOSITORY = Path(__file__).resolve().parents[2]


def samples(exposition: bytes) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` as {sample name: [(labels, value)]}."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(exposition.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def registered(version: str, run_id: str) -> LoadedModel:
    ref = ModelRef(
        uri="models:/emotitrack-sentiment@production",
        name="emotitrack-sentiment",
        version=version,
        run_id=run_id,
        reference="production",
        load_uri=f"models:/emotitrack-sentiment/{version}",
    )
    return LoadedModel(
        ref=ref,
        classes=["negative", "positive"],
        score=lambda texts: np.full((len(texts), 2), 0.5),
        loaded_at=datetime.now(UTC),
        load_seconds=0.1,
        metrics={},
    )


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings = ServingSettings(
        tracking_uri="http://127.0.0.1:9",  # never asked: the outcomes are reported directly
        prediction_log_url=f"sqlite:///{tmp_path / 'predictions.db'}",
        spill_dir=tmp_path / "spill",
        alert_min_confidence=0.65,
    )
    return Service(settings)


def test_a_reload_swaps_the_model_info_series(service: Service) -> None:
    assert "emotitrack_model_info" not in samples(service.metrics.exposition()[0])
    service._record_outcome("no_model", None)
    assert "emotitrack_model_info" not in samples(service.metrics.exposition()[0])

    service._record_outcome("loaded", registered("1", "run-one"))
    service._record_outcome("unchanged", registered("1", "run-one"))
    first = samples(service.metrics.exposition()[0])["emotitrack_model_info"]
    assert first == [
        ({"model_name": "emotitrack-sentiment", "version": "1", "run_id": "run-one"}, 1.0)
    ]

    service._record_outcome("loaded", registered("2", "run-two"))
    after = samples(service.metrics.exposition()[0])
    assert after["emotitrack_model_info"] == [
        ({"model_name": "emotitrack-sentiment", "version": "2", "run_id": "run-two"}, 1.0)
    ]
    assert after["emotitrack_model_loaded"] == [({}, 1.0)]
    assert "emotitrack_model_version" not in after


def test_alert_threshold_and_process_figures_are_exported(service: Service) -> None:
    exported = samples(service.metrics.exposition()[0])
    assert exported["emotitrack_alert_min_confidence_ratio"] == [({}, 0.65)]
    (rss,) = exported["process_resident_memory_bytes"]
    assert rss[0] == {} and rss[1] > 0  # one process: no pid label
    assert exported["process_cpu_seconds_total"][0][1] > 0
    assert {"process_start_time_seconds", "process_open_fds"} <= set(exported)


def test_confidence_histogram_is_a_ratio() -> None:
    metrics = build_metrics()
    metrics.confidence.observe(0.93)
    exported = samples(metrics.exposition()[0])
    assert exported["emotitrack_prediction_confidence_ratio_count"] == [({}, 1.0)]
    assert exported["emotitrack_alert_min_confidence_ratio"] == [({}, 0.7)]  # the default


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "high"])
def test_alert_threshold_must_lie_between_0_and_1(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOTITRACK_ALERT_MIN_CONFIDENCE", value)
    with pytest.raises(ValidationError, match="alert_min_confidence"):
        ServingSettings()


# A worker as uvicorn starts one: its own process, writing into PROMETHEUS_MULTIPROC_DIR; it
# shows the versions in argv one after the other (a reload each), then waits for its stdin.
WORKER = """
import sys
from serving.metrics import build_metrics
metrics = build_metrics(0.8)
metrics.model_loaded.set(1)
for version in sys.argv[1:]:
    metrics.show_model(("emotitrack-sentiment", version, "run-" + version))
metrics.predictions.labels(label="positive", model_version=sys.argv[-1]).inc(3)
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def multiproc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    yield folder


def start_worker(folder: Path, *versions: str) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, *versions],
        cwd=REPOSITORY,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
    return worker


def stop(worker: subprocess.Popen[str]) -> None:
    assert worker.stdin is not None
    worker.stdin.close()
    assert worker.wait(timeout=30) == 0


def test_workers_report_their_model_and_process_figures_until_they_die(multiproc: Path) -> None:
    behind = start_worker(multiproc, "1")  # not reloaded yet: still serving version 1
    current = start_worker(multiproc, "1", "2")
    try:
        scrape = build_metrics().exposition  # any worker answers: it reads the folder
        both = samples(scrape()[0])
        assert sorted(labels["version"] for labels, _ in both["emotitrack_model_info"]) == [
            "1",
            "2",
        ]
        assert {labels["pid"] for labels, _ in both["process_resident_memory_bytes"]} == {
            str(behind.pid),
            str(current.pid),
        }
        assert all(value > 0 for _, value in both["process_resident_memory_bytes"])
        assert {labels["pid"] for labels, _ in both["process_cpu_seconds_total"]} == {
            str(behind.pid),
            str(current.pid),
        }
        assert both["emotitrack_alert_min_confidence_ratio"] == [({}, 0.8)]

        stop(behind)
        after = samples(scrape()[0])
        assert after["emotitrack_model_info"] == [
            ({"model_name": "emotitrack-sentiment", "version": "2", "run_id": "run-2"}, 1.0)
        ]
        assert [labels for labels, _ in after["process_resident_memory_bytes"]] == [
            {"pid": str(current.pid)}
        ]
        # a dead worker's counts stay in the totals: counters never go down
        predicted = dict(
            (labels["model_version"], v) for labels, v in after["emotitrack_predictions_total"]
        )
        assert predicted == {"1": 3.0, "2": 3.0}
        assert not list(multiproc.glob(f"gauge_live*_{behind.pid}.db"))
    finally:
        for worker in (behind, current):
            if worker.poll() is None:
                stop(worker)


def test_an_earlier_run_is_wiped(multiproc: Path) -> None:
    stop(start_worker(multiproc, "1"))
    (multiproc / "notes.txt").write_text("not ours")
    clear_multiprocess_dir(multiproc)
    assert [path.name for path in multiproc.iterdir()] == ["notes.txt"]
    assert "emotitrack_predictions_total" not in samples(build_metrics().exposition()[0])


def test_serve_refuses_a_bad_threshold_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMOTITRACK_ALERT_MIN_CONFIDENCE", "1.5")
    assert serve_main(["--port", "1"]) == 2  # refused before uvicorn binds anything
    error = capsys.readouterr().err
    assert "EMOTITRACK_ALERT_MIN_CONFIDENCE='1.5'" in error and "less than 1" in error


def test_several_workers_get_a_metrics_folder_of_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    with metrics_folder(workers=1):
        assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ  # one worker: in-process metrics
    with metrics_folder(workers=2):
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        assert folder.is_dir() and not list(folder.iterdir())
    assert not folder.exists()


def test_a_given_metrics_folder_is_emptied_and_kept(multiproc: Path) -> None:
    (multiproc / "histogram_123.db").write_bytes(b"an earlier run")
    with metrics_folder(workers=2):
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(multiproc)
        assert not list(multiproc.iterdir())
    assert multiproc.is_dir()
