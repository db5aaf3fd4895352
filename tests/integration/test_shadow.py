"""Shadow serving end to end: a real API serves Production and scores the ``challenger`` alias in
shadow on a real registry; answers stay the primary's, shadow records reach the prediction log,
the metrics count them, and the promotion gate decides on the feedback given to the answers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import pytest
from mlflow import MlflowClient

from emotitrack.core.prediction_log import PredictionReader
from harness.servers import ApiServer
from monitoring.job import run_monitoring
from monitoring.settings import MonitoringSettings
from training.errors import PromotionError
from training.hyperparameters import Hyperparameters
from training.registry import GateResult, evaluate_shadow_gate
from training.settings import TrainingSettings
from training.train import TrainingResult, train

NAME = "emotitrack-sentiment"
WEAK = Hyperparameters(ngram_max=1, max_features=300)  # a challenger that differs visibly
BATCHES, BATCH_TEXTS, SINGLES = 30, 5, 20


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.2)


def test_shadow_scores_the_challenger_off_the_answer_and_feeds_the_gate(
    promoted: TrainingResult,
    settings: TrainingSettings,
    api_factory: Callable[..., ApiServer],
    imdb_sample: Path,
    tmp_path: Path,
    tracking_uri: str,
) -> None:
    challenger = train(settings, WEAK)
    MlflowClient().set_registered_model_alias(NAME, "challenger", challenger.version)
    api = api_factory(shadow_model_uri=f"models:/{NAME}@challenger", shadow_share="1")
    shadow_info = (
        f'emotitrack_shadow_model_info{{model_name="{NAME}",'
        f'run_id="{challenger.run_id}",version="{challenger.version}"}}'
    )
    wait_until(lambda: api.scrape().get(shadow_info) == 1, 60, "the shadow model did not load")

    reviews = pd.read_parquet(imdb_sample / "test.parquet").head(BATCHES * BATCH_TEXTS + SINGLES)
    truth: dict[str, str] = {}
    answers: dict[str, str] = {}
    with httpx.Client(base_url=api.url, timeout=30) as client:
        for b in range(BATCHES):
            chunk = reviews.iloc[b * BATCH_TEXTS : (b + 1) * BATCH_TEXTS]
            response = client.post("/predict/batch", json={"texts": chunk["text"].tolist()})
            assert response.status_code == 200, response.text
            for prediction, label in zip(
                response.json()["predictions"], chunk["label"], strict=True
            ):
                truth[prediction["request_id"]] = label
                answers[prediction["request_id"]] = prediction["sentiment"]
                assert prediction["model_version"] == promoted.version  # the primary answers
        for text, label in reviews.iloc[BATCHES * BATCH_TEXTS :].itertuples(index=False):
            prediction = client.post("/predict", json={"text": text}).json()
            assert prediction["model_version"] == promoted.version
            truth[prediction["request_id"]] = label
            answers[prediction["request_id"]] = prediction["sentiment"]
        total = len(truth)

        url = f"sqlite:///{tmp_path / 'predictions.db'}"
        reader = PredictionReader(url)
        wait_until(
            lambda: len(reader.read(source="shadow")) == total,
            30,
            f"not every one of the {total} shadow records reached the log",
        )
        for request_id, label in truth.items():
            stored = client.post("/feedback", json={"request_id": request_id, "label": label})
            assert stored.status_code == 200, stored.text

    # the default read leaves shadows out (not traffic): ask for them
    log = pd.concat([reader.read(), reader.read(source="shadow")]).set_index("request_id")
    shadow = log[log["source"] == "shadow"]
    primary = log[log["source"] == "api"]
    assert set(shadow.index) == {f"{request_id}.shadow" for request_id in truth}
    assert set(shadow["model_version"]) == {challenger.version}
    assert set(primary["model_version"]) == {promoted.version}
    assert primary.loc[list(answers), "label"].tolist() == list(answers.values())
    shadow_labels = {rid: shadow.loc[f"{rid}.shadow", "label"] for rid in truth}
    agreements = sum(shadow_labels[rid] == answers[rid] for rid in truth)
    assert agreements < total  # a different model: the comparison has something to show

    metrics = api.scrape()
    version = challenger.version
    assert metrics[f'emotitrack_shadow_predictions_total{{model_version="{version}"}}'] == total
    assert metrics[f'emotitrack_shadow_agreements_total{{model_version="{version}"}}'] == agreements
    assert metrics["emotitrack_shadow_dropped_total"] == 0

    champion_accuracy = sum(answers[r] == truth[r] for r in truth) / total
    challenger_accuracy = sum(shadow_labels[r] == truth[r] for r in truth) / total
    client_ = MlflowClient()
    challenger_mv = client_.get_model_version(NAME, challenger.version)
    champion_mv = client_.get_model_version(NAME, promoted.version)
    result: GateResult = evaluate_shadow_gate(
        settings, challenger_mv, champion_mv, url, min_feedback=total
    )
    assert result.rows == total and result.evidence == "shadow"
    assert result.champion == pytest.approx(champion_accuracy)
    assert result.challenger == pytest.approx(challenger_accuracy)

    def promote_cli(*extra: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "emotitrack", "promote", "--version", version, "--gate"]
        return subprocess.run(
            [*command, "--gate-evidence", "shadow", "--prediction-log-url", url, *extra],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )

    with pytest.raises(PromotionError, match=f"only {total} of the {total} requests") as refused:
        evaluate_shadow_gate(settings, challenger_mv, champion_mv, url, min_feedback=total + 1)
    assert "--gate-evidence validation" in str(refused.value)

    # the weak challenger is measurably worse on these reviews: refused, Production unchanged
    assert not result.passed and result.challenger < result.champion - result.tolerance
    decided = promote_cli("--min-feedback", str(total))
    assert decided.returncode == 3, decided.stdout + decided.stderr
    assert "live requests with feedback" in decided.stderr + decided.stdout
    production = client_.get_model_version_by_alias(NAME, "production").version
    assert str(production) == promoted.version

    # the drift report: the shadow's answers are not traffic, and its agreement is reported
    monitoring = MonitoringSettings(
        tracking_uri=tracking_uri, prediction_log_url=url, reports_dir=tmp_path / "reports"
    )
    summary = run_monitoring(monitoring)  # the last 24 h: every request above
    assert summary.counts["current"] == total
    (pair,) = summary.shadow["pairs"]
    assert (pair["primary_version"], pair["shadow_version"]) == (promoted.version, version)
    assert pair["rows"] == pair["labelled"] == total
    assert pair["agreement"] == pytest.approx(agreements / total)
    assert pair["shadow_accuracy"] == pytest.approx(challenger_accuracy)
    logged = MlflowClient().get_run(summary.mlflow_run_id).data.metrics
    assert logged[f"shadow_agreement_v{version}"] == pytest.approx(agreements / total)
