"""Batch scoring end to end: ``emotitrack score`` (the local engine) on real shared data with a
model registered by the real training code, checked against in-process pyfunc and the API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from emotitrack.core.prediction_log import PredictionReader
from harness.registries import Registry, make_registry
from harness.servers import postgres_cluster, start_api

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
# Blank by Python's rule (the API's) includes U+001C..U+001F and U+3000: the Spark engine's SQL
# version of the rule must agree.
BAD_TEXTS = [None, "", "   ", "x" * 20_001, "\x1c\x1f \u3000\t\n", "nul\x00inside"]
API_BATCH = 1_000  # the API's default most texts per /predict/batch request


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(imdb_sample, tmp_path_factory.mktemp("batch-scoring"))


@pytest.fixture(scope="module")
def lake(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A partitioned folder of real texts: SST-2 validation sentences, IMDB test reviews,
    tweets, and a few texts no model should score; every file has a ``label`` column."""
    root = tmp_path_factory.mktemp("lake")
    sources = {
        "source=sst2": pd.read_parquet(shared_data / "sst2" / "validation.parquet"),
        "source=imdb": pd.read_parquet(shared_data / "imdb" / "test.parquet").sample(
            400, random_state=3
        ),
        "source=tweets": pd.read_parquet(
            shared_data / "tweeteval_sentiment" / "validation.parquet"
        ).head(500),
    }
    for folder, frame in sources.items():
        (root / folder).mkdir()
        frame[["text", "label"]].astype({"label": str}).to_parquet(
            root / folder / "part-0.parquet", index=False
        )
    bad = pd.DataFrame({"text": BAD_TEXTS, "label": ["?"] * len(BAD_TEXTS)})
    bad.to_parquet(root / "source=tweets" / "part-1.parquet", index=False)
    (root / "_SUCCESS").write_text("")
    return root


def score(registry: Registry, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri}
    return subprocess.run(
        [sys.executable, "-m", "emotitrack", "score", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def pyfunc_predict(registry: Registry, frame: pd.DataFrame) -> pd.DataFrame:
    """MLflow's own in-process answer for version 1."""
    mlflow.set_tracking_uri(registry.tracking_uri)
    return mlflow.pyfunc.load_model("models:/emotitrack-sentiment/1").predict(frame)


def test_local_engine_answers_as_pyfunc_and_the_api(
    registry: Registry, lake: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scored.parquet"
    done = score(
        registry, str(lake), str(out), "--workers", "2", "--batch-rows", "300", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    scored = pd.read_parquet(out)
    inputs = pd.concat(pd.read_parquet(f) for f in sorted(lake.rglob("*.parquet"))).reset_index(
        drop=True
    )
    assert len(scored) == len(inputs) == 872 + 400 + 500 + len(BAD_TEXTS)
    assert scored["input_label"].tolist() == inputs["label"].tolist()
    assert f"scored {len(inputs)} rows" in done.stdout
    assert f"error rows: {len(BAD_TEXTS)}" in done.stdout
    assert "models:/emotitrack-sentiment/1 (alias production" in done.stderr
    assert set(scored["model_version"]) == {"1"}
    assert set(scored["model_run_id"]) == {registry.first.run_id}

    failed = scored["error"].notna()
    assert failed.sum() == len(BAD_TEXTS) and scored.loc[failed, "label"].isna().all()
    good = scored[~failed].reset_index(drop=True)
    columns = ["prob_negative", "prob_positive"]

    mlflow_answer = pyfunc_predict(registry, good[["text"]])
    assert good["label"].tolist() == mlflow_answer["label"].tolist()
    np.testing.assert_allclose(good[columns], mlflow_answer[columns], rtol=0, atol=1e-6)

    api = start_api(registry.tracking_uri, tmp_path)
    try:
        texts = good["text"].tolist()
        answers = []
        with httpx.Client(base_url=api.url, timeout=120) as client:
            for start in range(0, len(texts), API_BATCH):
                chunk = texts[start : start + API_BATCH]
                response = client.post("/predict/batch", json={"texts": chunk})
                assert response.status_code == 200, response.text
                answers += response.json()["predictions"]
    finally:
        assert api.terminate() == 0
    assert good["label"].tolist() == [a["sentiment"] for a in answers]
    api_probabilities = [
        [a["probabilities"][c.removeprefix("prob_")] for c in columns] for a in answers
    ]
    np.testing.assert_allclose(good[columns], api_probabilities, rtol=0, atol=1e-6)


def test_csv_input_and_the_mlproject_entry_point(
    registry: Registry, shared_data: Path, tmp_path: Path
) -> None:
    frame = pd.read_parquet(shared_data / "sst2" / "test.parquet").head(300)
    frame.to_csv(tmp_path / "in.csv", index=False)
    # As with an activated virtualenv: the MLproject's `python` is the one running us.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri, "PATH": path}
    out = tmp_path / "from-mlproject.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "mlflow", "run", str(REPO), "-e", "score", "--env-manager",
         "local", "-P", f"input={tmp_path / 'in.csv'}", "-P", f"output={out}",
         "-P", "model_uri=models:/emotitrack-sentiment/1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    scored = pd.read_parquet(out)
    assert scored["text"].tolist() == frame["text"].tolist()
    expected = pyfunc_predict(registry, frame[["text"]])
    assert scored["label"].tolist() == expected["label"].tolist()
    np.testing.assert_allclose(scored["prob_positive"], expected["prob_positive"], atol=1e-6)
    assert scored["error"].isna().all() and set(scored["model_version"]) == {"1"}


def test_bad_input_stops_before_anything_is_written(registry: Registry, tmp_path: Path) -> None:
    pd.DataFrame({"review": ["fine"]}).to_parquet(tmp_path / "in.parquet")
    done = score(registry, "in.parquet", "out.parquet", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: in.parquet: no column 'text' (columns: review)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]


def test_spark_engine_answers_as_the_local_engine(
    registry: Registry, lake: Path, tmp_path: Path
) -> None:
    local_out, spark_out = tmp_path / "local.parquet", tmp_path / "spark"
    done = score(registry, str(lake), str(local_out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = score(
        registry, str(lake), str(spark_out), "--engine", "spark", "--spark-master", "local[2]",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    assert f"error rows: {len(BAD_TEXTS)}" in done.stdout
    assert not (tmp_path / ".spark.partial").exists()
    # Spark writes a folder of part files, in its own row order: compare row by row in one order.
    order = ["text", "input_label"]
    local = pd.read_parquet(local_out).sort_values(order, kind="stable", ignore_index=True)
    spark = pd.read_parquet(spark_out).sort_values(order, kind="stable", ignore_index=True)
    assert list(spark.columns) == list(local.columns)
    assert len(spark) == len(local)
    for column in ["text", "input_label", "label", "error", "model_version", "model_run_id"]:
        assert spark[column].fillna("<null>").tolist() == local[column].fillna("<null>").tolist()
    columns = ["confidence", "prob_negative", "prob_positive"]
    np.testing.assert_allclose(spark[columns], local[columns], rtol=0, atol=1e-6)


def test_scored_rows_go_to_the_prediction_log_once_per_batch_id_and_monitoring_reads_them(
    registry: Registry, lake: Path, tmp_path: Path
) -> None:
    with postgres_cluster() as cluster:
        # PostgreSQL: its key (request_id, created_at) is what a re-run must repeat exactly
        store = cluster.url.replace("postgresql://", "postgresql+psycopg://")
        check_batch_log_and_monitor(registry, lake, tmp_path, store)


def check_batch_log_and_monitor(registry: Registry, lake: Path, tmp_path: Path, store: str) -> None:
    out = tmp_path / "scored.parquet"
    args = [str(lake), str(out), "--log-predictions", "--batch-id", "lake-2026-12"]
    for _ in range(2):  # a re-run of the same batch id stores nothing twice
        done = score_logged(registry, store, *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-4000:]
        assert "predictions stored" in done.stdout and "as batch lake-2026-12" in done.stdout
    # another batch in the same log, which the report on the first must leave out
    other = score_logged(registry, store, *args[:3], "--batch-id", "other", cwd=tmp_path)
    assert other.returncode == 0, other.stderr[-4000:]
    scored = pd.read_parquet(out)
    logged = PredictionReader(store).read(batch_id="lake-2026-12")
    good = scored[scored["error"].isna()]
    assert len(logged) == len(good) == len(scored) - len(BAD_TEXTS)
    assert set(logged["source"]) == {"batch"} and set(logged["endpoint"]) == {"batch"}
    assert set(logged["model_version"]) == {"1"}
    assert sorted(logged["text"]) == sorted(good["text"])
    by_text = dict(zip(good["text"], good["label"], strict=True))
    assert all(
        by_text[t] == label for t, label in zip(logged["text"], logged["label"], strict=True)
    )
    assert logged["text_length"].notna().all()  # descriptors, for the drift report
    assert PredictionReader(store).read(source="api").empty

    reports = tmp_path / "reports"
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.tracking_uri,
           "EMOTITRACK_PREDICTION_LOG_URL": store}  # fmt: skip
    monitor = subprocess.run(
        [sys.executable, "-m", "emotitrack", "monitor", "--batch-id", "lake-2026-12",
         "--reports-dir", str(reports)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert monitor.returncode == 0, monitor.stderr[-4000:]
    (summary_file,) = reports.glob("*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["window"]["batch_id"] == "lake-2026-12"
    assert summary["counts"]["current"] == len(good)
    shares = good["label"].value_counts(normalize=True)
    assert summary["predictions"]["current_label_shares"] == pytest.approx(
        shares.to_dict(), abs=1e-4
    )


def test_an_unreachable_prediction_log_stops_before_scoring(
    registry: Registry, lake: Path, tmp_path: Path
) -> None:
    store = "postgresql+psycopg://nobody@127.0.0.1:9/none"  # nothing listens on port 9
    done = score_logged(
        registry, store, str(lake), str(tmp_path / "out.parquet"), "--log-predictions",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2
    assert "cannot open the prediction log postgresql+psycopg://nobody@127.0.0.1:9/none" in (
        done.stderr
    )
    assert not (tmp_path / "out.parquet").exists()


def score_logged(
    registry: Registry, store: str, *args: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "EMOTITRACK_PREDICTION_LOG_URL": store,
    }
    return subprocess.run(
        [sys.executable, "-m", "emotitrack", "score", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
