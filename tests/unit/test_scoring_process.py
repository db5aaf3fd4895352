"""The scoring child answers like the in-process scorer, and losing it never loses an answer."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from emotitrack.core import model_format
from emotitrack.core.model_format import ModelFiles
from serving import scoring_process
from serving.scoring_process import ScoringProcess
from training.export import to_format
from training.model import Hyperparameters, build_pipeline, fit_pipeline, probabilities

TEXTS = ["A wonderful, moving film.", "Dull and far too long.", "not bad at all", "zzqx"]


@pytest.fixture(scope="module")
def pipeline(imdb_sample: Path) -> Pipeline:
    train = pd.read_parquet(imdb_sample / "train.parquet")
    fitted = build_pipeline(Hyperparameters(max_features=5000, calibration_folds=0), seed=0)
    fit_pipeline(fitted, train["text"].tolist(), train["label"].tolist(), 0, seed=0)
    return fitted


@pytest.fixture(scope="module")
def files(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    exported = to_format(pipeline)
    return model_format.write(tmp_path_factory.mktemp("model"), exported.config, exported.arrays)


@pytest.fixture
def scoring(files: ModelFiles) -> Iterator[ScoringProcess]:
    process = ScoringProcess(model_format.read_files(files), label="test", files=files)
    yield process
    process.close()


def wait_for(condition: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def running_child(scoring: ScoringProcess) -> int:
    """Start the child and wait until it scores; its pid."""
    scoring.start_in_background()
    wait_for(lambda: scoring.in_child)
    assert scoring.pid is not None
    return scoring.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return state != "Z"


def test_answers_in_process_until_the_child_is_up_then_in_the_child(
    scoring: ScoringProcess, pipeline: Pipeline
) -> None:
    expected = probabilities(pipeline, TEXTS)
    assert not scoring.in_child
    np.testing.assert_allclose(scoring(TEXTS), expected, atol=1e-6)
    scoring.start_in_background()
    wait_for(lambda: scoring.in_child)
    assert scoring.pid is not None and scoring.pid != os.getpid() and alive(scoring.pid)
    np.testing.assert_allclose(scoring(TEXTS), expected, atol=1e-6)


def test_a_killed_child_costs_no_answer_and_is_replaced(
    scoring: ScoringProcess, pipeline: Pipeline
) -> None:
    expected = probabilities(pipeline, TEXTS)
    first = running_child(scoring)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not alive(first))
    np.testing.assert_allclose(scoring(TEXTS), expected, atol=1e-6)  # answered in-process
    assert scoring.failures == 1 and scoring.restarts == 1
    wait_for(lambda: scoring.in_child)
    assert scoring.pid not in (None, first)
    np.testing.assert_allclose(scoring(TEXTS), expected, atol=1e-6)


def test_a_hung_child_is_replaced_and_its_batch_answered_in_process(
    scoring: ScoringProcess, pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scoring_process, "BATCH_TIMEOUT_S", 1.0)
    hung = running_child(scoring)
    os.kill(hung, signal.SIGSTOP)  # alive, never answers
    started = time.monotonic()
    np.testing.assert_allclose(scoring(TEXTS), probabilities(pipeline, TEXTS), atol=1e-6)
    assert time.monotonic() - started < 5
    wait_for(lambda: not alive(hung), timeout=10)  # killed, not left behind
    wait_for(lambda: scoring.in_child)
    assert scoring.pid != hung


def test_close_does_not_wait_for_a_hung_round_trip(
    scoring: ScoringProcess, pipeline: Pipeline
) -> None:
    pid = running_child(scoring)
    os.kill(pid, signal.SIGSTOP)
    answers: list[np.ndarray] = []
    caller = threading.Thread(target=lambda: answers.append(scoring(TEXTS)))
    caller.start()
    time.sleep(0.5)  # the round trip is waiting on the stopped child
    started = time.monotonic()
    scoring.close()
    caller.join(10)
    assert time.monotonic() - started < 5
    assert not alive(pid) and not scoring.in_child
    np.testing.assert_allclose(answers[0], probabilities(pipeline, TEXTS), atol=1e-6)
    assert scoring.restarts == 0  # stopped on purpose: no replacement


def test_close_stops_the_child_and_later_calls_still_answer(
    scoring: ScoringProcess, pipeline: Pipeline
) -> None:
    pid = running_child(scoring)
    scoring.close()
    wait_for(lambda: not alive(pid), timeout=10)
    assert not scoring.in_child
    np.testing.assert_allclose(scoring(TEXTS), probabilities(pipeline, TEXTS), atol=1e-6)
    scoring.start_in_background()  # closed for good: no new child
    time.sleep(0.5)
    assert not scoring.in_child


def test_the_child_scores_from_the_models_files(files: ModelFiles, pipeline: Pipeline) -> None:
    # The in-process scorer here answers zeros: only the child can give the right answer.
    scoring = ScoringProcess(lambda texts: np.zeros((len(texts), 2)), label="file", files=files)
    try:
        scoring._start()
        assert scoring.in_child
        np.testing.assert_allclose(scoring(TEXTS), probabilities(pipeline, TEXTS), atol=1e-6)
    finally:
        scoring.close()


def test_a_model_the_child_cannot_read_stays_in_process(files: ModelFiles, tmp_path: Path) -> None:
    broken = ModelFiles(tmp_path / "config.json", files.arrays)
    broken.config.write_text('{"format": "emotitrack-sentiment", "format_version": 99}')
    calls: list[list[str]] = []

    def in_process(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        return np.full((len(texts), 2), 0.5)

    scoring = ScoringProcess(in_process, label="unreadable", files=broken)
    try:
        scoring._start()  # synchronously: the child refuses, no child is kept
        assert not scoring.in_child
        assert scoring(TEXTS).shape == (4, 2) and calls == [TEXTS]
    finally:
        scoring.close()
