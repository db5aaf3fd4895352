"""The monitoring job on real traffic: API predictions in the log vs the training reference."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest

from emotitrack.core.prediction_log import PredictionReader
from harness.registries import Registry, make_registry
from harness.servers import pushgateway, start_api
from serving.prediction_log import PredictionLog
from tests.conftest import REPO

pytestmark = pytest.mark.integration
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(imdb_sample, tmp_path_factory.mktemp("monitoring"), reference_size=600)


def traffic(
    registry: Registry,
    name: str,
    texts: list[str],
    labels: list[str] | None = None,
    **settings: str,
) -> str:
    """Send ``texts`` through a real API into a fresh prediction log, and ``labels`` as feedback
    for the first predictions; return the log's URL."""
    folder = registry.workdir / name
    folder.mkdir()
    api = start_api(registry.tracking_uri, folder, **settings)
    try:
        response = httpx.post(f"{api.url}/predict/batch", json={"texts": texts}, timeout=120)
        assert response.status_code == 200
        for prediction, label in zip(response.json()["predictions"], labels or [], strict=False):
            feedback = {"request_id": prediction["request_id"], "label": label}
            assert httpx.post(f"{api.url}/feedback", json=feedback).status_code == 200
    finally:
        assert api.terminate() == 0
    return f"sqlite:///{folder / 'predictions.db'}"


@pytest.fixture(scope="module")
def imdb_traffic(registry: Registry, shared_data: Path, imdb_sample: Path) -> str:
    seen = set(pd.read_parquet(imdb_sample / "test.parquet")["text"])
    test = pd.read_parquet(shared_data / "imdb" / "test.parquet")
    fresh = test[~test["text"].isin(seen)].sample(400, random_state=11)
    return traffic(registry, "imdb-traffic", fresh["text"].tolist(), fresh["label"].tolist()[:60])


@pytest.fixture(scope="module")
def product_traffic(registry: Registry, shared_data: Path) -> str:
    folder = shared_data / "uci_sentiment_sentences"
    texts = pd.concat(
        [pd.read_parquet(folder / "amazon.parquet"), pd.read_parquet(folder / "yelp.parquet")]
    )
    return traffic(registry, "product-traffic", texts["text"].sample(400, random_state=11).tolist())


@pytest.fixture(scope="module")
def hashed_imdb_traffic(registry: Registry, shared_data: Path, imdb_sample: Path) -> str:
    """The IMDB traffic again, through an API that keeps no texts (EMOTITRACK_STORE_TEXT=false)."""
    seen = set(pd.read_parquet(imdb_sample / "test.parquet")["text"])
    test = pd.read_parquet(shared_data / "imdb" / "test.parquet")
    fresh = test[~test["text"].isin(seen)].sample(400, random_state=11)
    return traffic(registry, "hashed-imdb", fresh["text"].tolist(), store_text="false")


@pytest.fixture(scope="module")
def hashed_product_traffic(registry: Registry, shared_data: Path) -> str:
    folder = shared_data / "uci_sentiment_sentences"
    texts = pd.concat(
        [pd.read_parquet(folder / "amazon.parquet"), pd.read_parquet(folder / "yelp.parquet")]
    )
    sample = texts["text"].sample(400, random_state=11).tolist()
    return traffic(registry, "hashed-product", sample, store_text="false")


def monitor(
    registry: Registry, log_url: str, reports: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **(env or {}),
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "EMOTITRACK_PREDICTION_LOG_URL": log_url,
        "EMOTITRACK_REPORTS_DIR": str(reports),
    }
    command = [sys.executable, "-m", "emotitrack", "monitor", *args]
    return subprocess.run(
        command, env=env, cwd=registry.workdir, capture_output=True, text=True, timeout=600
    )


def test_same_distribution_is_not_drift(
    registry: Registry, imdb_traffic: str, tmp_path: Path
) -> None:
    done = monitor(registry, imdb_traffic, tmp_path / "reports")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("no drift: ")
    (folder,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["schema_version"] == 2 and summary["dataset_drift"] is False
    assert {k: v["detected"] for k, v in summary["verdicts"].items()} == {
        "data_drift": False, "prediction_drift": False, "quality": False,
    }  # fmt: skip
    quality = summary["quality"]
    low, high = quality["estimated_accuracy_interval"]
    assert low < quality["estimated_accuracy"] < high and quality["reference_accuracy"] > 0.6
    # 60 labels measure the accuracy, within the interval CBPE gave for the 400 predictions
    assert quality["measured_accuracy"] == quality["current_accuracy"]
    assert low - 0.1 < quality["measured_accuracy"] < high + 0.1
    assert summary["counts"] == {
        "reference": 600,
        "current": 400,
        "feedback": 60,
        "report_sample": 400,
    }
    assert 0.6 < summary["quality"]["current_accuracy"] <= 1.0  # 60 feedback labels >= min 50
    assert (folder / "quality.html").is_file() and summary["quality"]["report_html"].endswith(
        "quality.html"
    )
    assert (
        summary["model"]["version"] == "1" and summary["model"]["run_id"] == registry.first.run_id
    )
    assert set(summary["columns"]) == {
        "text", "text_length", "word_count", "oov_share", "non_letter_share", "confidence", "predicted_label",
    }  # fmt: skip
    assert {"method", "score", "threshold", "drifted"} == set(summary["columns"]["text"])
    run = mlflow.MlflowClient(registry.tracking_uri).get_run(summary["mlflow_run_id"])
    assert run.data.metrics["dataset_drift"] == 0 and run.data.metrics["current_rows"] == 400
    assert run.data.metrics["prediction_drift"] == 0 and run.data.metrics["quality_degraded"] == 0
    assert run.data.metrics["estimated_accuracy"] == quality["estimated_accuracy"]
    index = (tmp_path / "reports" / "index.html").read_text()
    assert f"{folder.name}/report.html" in index and "no drift" in index


def test_product_reviews_are_drift(
    registry: Registry, product_traffic: str, tmp_path: Path
) -> None:
    done = monitor(
        registry, product_traffic, tmp_path / "reports", "--fail-on-drift", "--fail-on", "data"
    )
    assert done.returncode == 3, done.stderr[-3000:]
    assert done.stdout.startswith("DRIFT: data drift: YES (")
    (folder,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["dataset_drift"] is True and summary["verdicts"]["data_drift"]["detected"]
    assert summary["columns"]["text"]["drifted"] and summary["columns"]["text_length"]["drifted"]
    page = (folder / "report.html").read_text()
    assert (
        '<script src="http' not in page and len(page) > 100_000
    )  # self-contained: renders offline
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(folder / "report.html", ARTIFACTS / "drift-report.html")


def test_a_report_a_person_can_read_in_a_browser(
    registry: Registry, product_traffic: str, tmp_path: Path
) -> None:
    done = monitor(registry, product_traffic, tmp_path / "reports")
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir()]
    shot = ARTIFACTS / "drift-report.png"
    ARTIFACTS.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    subprocess.run(
        [
            shutil.which("chromium") or "/usr/bin/chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1400,2400",
            "--virtual-time-budget=15000", f"--screenshot={shot}", (folder / "report.html").as_uri(),
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert shot.stat().st_size > 50_000  # a rendered report, not a blank page


def test_cannot_run_says_why_and_writes_nothing(
    registry: Registry, imdb_traffic: str, tmp_path: Path
) -> None:
    too_few = monitor(
        registry, imdb_traffic, tmp_path / "reports", "--last", "20", "--min-rows", "50"
    )
    assert too_few.returncode == 2
    assert too_few.stderr.strip().splitlines()[-1].startswith("error: 20 predictions in the window")
    assert "Traceback" not in too_few.stderr
    no_model = monitor(
        registry, imdb_traffic, tmp_path / "reports", "--model-uri", "models:/nothing@production"
    )
    assert no_model.returncode == 2 and "does not name a model version yet" in no_model.stderr
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())


def test_drift_figures_reach_prometheus(
    registry: Registry, product_traffic: str, tmp_path: Path
) -> None:
    with pushgateway(tmp_path) as gateway:
        done = monitor(
            registry,
            product_traffic,
            tmp_path / "reports",
            env={"EMOTITRACK_PUSHGATEWAY_URL": gateway},
        )
        assert done.returncode == 0, done.stderr[-3000:]
        exported = httpx.get(f"{gateway}/metrics").text
    samples = [line for line in exported.splitlines() if line.startswith("emotitrack_")]
    # every series says which model it is about (docs/monitoring.md, the metric contract)
    assert samples and all(
        'model_name="emotitrack-sentiment"' in line and 'model_version="1"' in line
        for line in samples
    ), exported
    names = {line.split("{")[0] for line in samples}
    assert {
        "emotitrack_data_drift_detected", "emotitrack_prediction_drift_detected",
        "emotitrack_quality_degraded", "emotitrack_drift_share_ratio",
        "emotitrack_drift_column_p_value", "emotitrack_drift_column_distance",
        "emotitrack_drift_column_threshold", "emotitrack_drift_column_drifted",
        "emotitrack_estimated_accuracy_ratio", "emotitrack_estimated_accuracy_lower_ratio",
        "emotitrack_reference_accuracy_ratio", "emotitrack_prediction_label_share_ratio",
        "emotitrack_mean_confidence_ratio", "emotitrack_monitoring_window_rows",
        "emotitrack_monitoring_last_run_timestamp_seconds",
    } == names  # no feedback here: no measured accuracy series  # fmt: skip

    def value(name: str, *labels: str) -> float:
        (line,) = [
            x for x in samples if x.startswith(f"{name}{{") and all(lb in x for lb in labels)
        ]
        return float(line.rsplit(" ", 1)[1])

    assert value("emotitrack_data_drift_detected") == 1
    assert value("emotitrack_drift_column_drifted", 'column="text"') == 1
    # the text test is a classifier score (drift when large), never a p-value
    assert value("emotitrack_drift_column_distance", 'column="text"') >= value(
        "emotitrack_drift_column_threshold", 'column="text"'
    )
    assert value("emotitrack_monitoring_window_rows") == 400


@pytest.fixture(scope="module")
def negative_traffic(registry: Registry, shared_data: Path, imdb_sample: Path) -> str:
    """IMDB reviews, 90 % of them negative: a label-prior shift, the texts still reviews."""
    seen = set(pd.read_parquet(imdb_sample / "test.parquet")["text"])
    test = pd.read_parquet(shared_data / "imdb" / "test.parquet")
    fresh = test[~test["text"].isin(seen)]
    texts = pd.concat(
        [
            fresh[fresh["label"] == "negative"].sample(360, random_state=5),
            fresh[fresh["label"] == "positive"].sample(40, random_state=5),
        ]
    ).sample(frac=1, random_state=5)
    return traffic(registry, "negative-traffic", texts["text"].tolist())


def test_a_label_prior_shift_is_prediction_drift(
    registry: Registry, negative_traffic: str, tmp_path: Path
) -> None:
    """Issue 18: most traffic suddenly called negative must be a verdict of its own, whatever
    the share of drifted columns, and fail the run when `--fail-on` counts it."""
    done = monitor(
        registry,
        negative_traffic,
        tmp_path / "reports",
        "--fail-on-drift",
        "--fail-on",
        "prediction",
    )
    assert done.returncode == 3, done.stderr[-3000:]
    assert "prediction drift: YES (label shares moved" in done.stdout
    summary = only_report(tmp_path / "reports")
    prediction = summary["verdicts"]["prediction_drift"]
    assert prediction["detected"] and prediction["label_shares_drifted"]
    assert prediction["label_share_change"] > 0.25
    assert summary["predictions"]["current_label_shares"]["negative"] > 0.75


def test_retrain_on_drift_trains_and_promotes_through_the_gate(
    imdb_sample: Path, product_traffic: str, tmp_path: Path
) -> None:
    (tmp_path / "registry").mkdir()
    fresh = make_registry(imdb_sample, tmp_path / "registry")
    done = monitor(
        fresh,
        product_traffic,
        tmp_path / "reports",
        "--retrain-on-drift",
        env={"EMOTITRACK_DATA": str(imdb_sample)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "retrained" in done.stdout
    versions = mlflow.MlflowClient(fresh.tracking_uri).search_model_versions(
        "name = 'emotitrack-sentiment'"
    )
    assert sorted(int(v.version) for v in versions) == [1, 2]


def test_an_unreachable_pushgateway_is_one_line_and_exit_5_after_the_report(
    registry: Registry, imdb_traffic: str, tmp_path: Path
) -> None:
    """Not 2 ("cannot run, nothing written"): the report and its MLflow run exist."""
    gateway = "http://127.0.0.1:9"  # discard port: connection refused
    done = monitor(
        registry, imdb_traffic, tmp_path / "reports", env={"EMOTITRACK_PUSHGATEWAY_URL": gateway}
    )
    assert done.returncode == 5, done.stderr[-3000:]
    assert done.stdout.startswith("no drift: ")
    assert (
        done.stderr.strip().splitlines()[-1].startswith(f"error: Pushgateway {gateway} unreachable")
    )
    assert "Traceback" not in done.stderr
    summary = only_report(tmp_path / "reports")
    assert mlflow.MlflowClient(registry.tracking_uri).get_run(summary["mlflow_run_id"])


def test_a_failed_mlflow_logging_is_one_line_and_exit_4_after_the_report(
    registry: Registry, imdb_traffic: str, tmp_path: Path
) -> None:
    client = mlflow.MlflowClient(registry.tracking_uri)
    client.delete_experiment(client.create_experiment("deleted-monitoring"))
    done = monitor(
        registry,
        imdb_traffic,
        tmp_path / "reports",
        env={"EMOTITRACK_MONITORING_EXPERIMENT": "deleted-monitoring"},
    )
    assert done.returncode == 4, done.stderr[-3000:]
    assert done.stdout.startswith("no drift: ") and "MLflow run none" in done.stdout
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: logging to MLflow at {registry.tracking_uri} failed (")
    assert "deleted experiment" in last and "Traceback" not in done.stderr
    summary = only_report(tmp_path / "reports")  # on disk and in the index, not in MLflow
    assert summary["mlflow_run_id"] == "" and summary["dataset_drift"] is False
    assert "no drift" in (tmp_path / "reports" / "index.html").read_text()


def test_an_unwritable_reports_folder_is_one_line_and_exit_2(
    registry: Registry, imdb_traffic: str, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    runs_before = len(
        mlflow.MlflowClient(registry.tracking_uri).search_runs(
            [
                e.experiment_id
                for e in mlflow.MlflowClient(registry.tracking_uri).search_experiments()
            ]
        )
    )
    done = monitor(registry, imdb_traffic, tmp_path / "a-file" / "reports")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: cannot write the report in {tmp_path / 'a-file' / 'reports'}: ")
    assert "Traceback" not in done.stderr
    client = mlflow.MlflowClient(registry.tracking_uri)
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == (
        runs_before
    )


def mlflow_run_monitor(
    registry: Registry, log_url: str, *params: str
) -> subprocess.CompletedProcess[str]:
    """The monitor entry point as `mlflow run . -e monitor --env-manager local` runs it, with
    the MLproject's `python` the one running us (as with an activated virtualenv)."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "EMOTITRACK_PREDICTION_LOG_URL": log_url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    command = [
        sys.executable, "-m", "mlflow", "run", str(REPO), "--env-manager", "local",
        "-e", "monitor", "--experiment-name", "monitoring-mlproject", *params,
    ]  # fmt: skip
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_mlflow_run_monitor_reports_into_the_run_it_started(
    registry: Registry, product_traffic: str, tmp_path: Path
) -> None:
    client = mlflow.MlflowClient(registry.tracking_uri)
    experiment = client.create_experiment(
        "monitoring-mlproject", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    # fail_on_drift: MLproject passes its default, "false": drift, yet the run succeeds
    done = mlflow_run_monitor(
        registry,
        product_traffic,
        "-P", f"reports_dir={tmp_path / 'a'}", "-P", "last=300",
    )  # fmt: skip
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    summary = only_report(tmp_path / "a")
    assert summary["dataset_drift"] is True and summary["verdicts"]["data_drift"]["detected"]
    # the window chosen by records: the last 300 predictions, not the last 24 hours
    assert summary["window"]["last_records"] == 300 and summary["counts"]["current"] == 300
    (run,) = client.search_runs([experiment])
    assert run.info.run_id == summary["mlflow_run_id"] and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "monitor"
    assert run.data.metrics["dataset_drift"] == 1 and run.data.params["fail_on_drift"] == "false"
    assert run.data.metrics["data_drift"] == 1 and run.data.params["last"] == "300"
    assert [a.path for a in client.list_artifacts(run.info.run_id, "drift")] == [
        "drift/report.html",
        "drift/summary.json",
    ]

    failing = mlflow_run_monitor(
        registry,
        product_traffic,
        "-P", f"reports_dir={tmp_path / 'b'}", "-P", "fail_on_drift=true",
    )  # fmt: skip
    assert failing.returncode != 0 and "DRIFT: " in failing.stdout  # exit 3 fails the run
    assert only_report(tmp_path / "b")["dataset_drift"] is True
    statuses = {r.info.run_id: r.info.status for r in client.search_runs([experiment])}
    assert len(statuses) == 2 and statuses[run.info.run_id] == "FINISHED"
    assert sorted(statuses.values()) == ["FAILED", "FINISHED"]


def only_report(reports: Path) -> dict[str, Any]:
    (folder,) = [p for p in reports.iterdir() if p.is_dir()]
    summary: dict[str, Any] = json.loads((folder / "summary.json").read_text())
    return summary


def test_without_texts_the_report_runs_on_logged_descriptors(
    registry: Registry, hashed_imdb_traffic: str, hashed_product_traffic: str, tmp_path: Path
) -> None:
    """EMOTITRACK_STORE_TEXT=false: no text in the log, so no text-drift test; the descriptors
    serving logged are compared with the reference's, and drift is still told from no drift."""
    assert PredictionReader(hashed_imdb_traffic).read()["text"].isna().all()
    same = monitor(registry, hashed_imdb_traffic, tmp_path / "same")
    assert same.returncode == 0, same.stderr[-3000:]
    assert same.stdout.startswith("no drift: ") and "text drift skipped" in same.stdout
    summary = only_report(tmp_path / "same")
    assert summary["dataset_drift"] is False
    assert set(summary["columns"]) == {
        "text_length", "word_count", "oov_share", "non_letter_share", "confidence", "predicted_label",
    }  # fmt: skip
    assert "EMOTITRACK_STORE_TEXT=false" in summary["skipped_columns"]["text"]
    run = mlflow.MlflowClient(registry.tracking_uri).get_run(summary["mlflow_run_id"])
    assert run.data.tags["skipped_text"].startswith("skipped")

    shifted = monitor(registry, hashed_product_traffic, tmp_path / "shifted", "--fail-on-drift")
    assert shifted.returncode == 3, shifted.stderr[-3000:]
    drifted = only_report(tmp_path / "shifted")
    assert drifted["dataset_drift"] is True and drifted["columns"]["text_length"]["drifted"]


def test_an_empty_window_is_one_line_exit_2_and_leaves_nothing(
    registry: Registry, tmp_path: Path
) -> None:
    empty_log = f"sqlite:///{tmp_path / 'empty.db'}"
    mlflow.set_tracking_uri(registry.tracking_uri)
    # the log exists (a writer created its tables) but holds no predictions
    writer = PredictionLog(empty_log, tmp_path / "spill")
    writer.start()
    writer.close()
    runs_before = len(mlflow.search_runs(search_all_experiments=True, output_format="list"))
    done = monitor(registry, empty_log, tmp_path / "reports")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: 0 predictions in the window (model version 1)")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "reports").exists()
    assert len(mlflow.search_runs(search_all_experiments=True, output_format="list")) == runs_before


def test_an_unreadable_prediction_log_is_one_line_exit_2(
    registry: Registry, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"this is not a database" * 100)
    done = monitor(registry, f"sqlite:///{corrupt}", tmp_path / "reports")
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: prediction log sqlite:///{corrupt} unreadable")
    assert "Traceback" not in done.stderr and not (tmp_path / "reports").exists()
