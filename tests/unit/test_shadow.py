"""Shadow scoring: which requests are sampled, a full queue drops instead of waiting, the shadow
records' ids and the comparison the database computes from them."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from emotitrack.core.prediction_log import (
    FEEDBACK,
    PredictionReader,
    PredictionRecord,
    create_store_engine,
    new_request_id,
)
from emotitrack.core.registry import ModelRef
from emotitrack.core.shadow_log import compare, primary_request_id, shadow_request_id
from monitoring.shadow import shadow_summary
from serving.metrics import build_shadow_metrics
from serving.model_store import LoadedModel
from serving.prediction_log import PredictionLog
from serving.settings import ServingSettings
from serving.shadow import QUEUE_TEXTS, ShadowScorer, ShadowWork, sampled, shadow_records

CLASSES = ["negative", "positive"]


def primary(label: str, version: str = "1", at: datetime | None = None) -> PredictionRecord:
    return PredictionRecord(
        request_id=new_request_id(),
        created_at=at or datetime.now(UTC),
        text="a review",
        label=label,
        confidence=0.8,
        probabilities={"negative": 0.2, "positive": 0.8},
        model_name="emotitrack-sentiment",
        model_version=version,
        latency_ms=2.0,
        endpoint="predict",
    )


def shadow_model(version: str = "2") -> LoadedModel:
    return LoadedModel(
        ref=ModelRef(
            uri="models:/emotitrack-sentiment@challenger",
            name="emotitrack-sentiment",
            version=version,
            run_id="r",
            reference="challenger",
            load_uri=f"models:/emotitrack-sentiment/{version}",
        ),
        classes=CLASSES,
        score=lambda texts: np.full((len(texts), 2), 0.5),
        loaded_at=datetime.now(UTC),
        load_seconds=0.0,
        metrics={},
    )


def test_share_zero_samples_none_one_samples_all_and_between_samples_that_share() -> None:
    draw = random.Random(7).random
    assert not any(sampled(0.0, draw) for _ in range(1_000))
    assert all(sampled(1.0, draw) for _ in range(1_000))
    hits = sum(sampled(0.1, draw) for _ in range(20_000))
    assert 1_800 < hits < 2_200  # 0.1 of 20,000, within about 5 standard deviations


def test_share_outside_zero_to_one_is_refused() -> None:
    for share in ("-0.1", "1.5"):
        with pytest.raises(ValidationError, match="shadow_share"):
            ServingSettings(shadow_share=share)
    assert ServingSettings().shadow_model_uri == ""  # off unless configured
    assert ServingSettings().shadow_share == 0.1


def test_a_full_queue_drops_the_shadow_work_and_counts_it_without_waiting(
    tmp_path: Path,
) -> None:
    settings = ServingSettings(
        shadow_model_uri="models:/emotitrack-sentiment@challenger",
        shadow_share=1.0,
        tracking_uri="http://127.0.0.1:9",  # never called: nothing to load here
    )
    metrics = build_shadow_metrics(CollectorRegistry())
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "spill")
    scorer = ShadowScorer(settings, log, metrics, queue_requests=2)  # no worker: nothing drains
    texts = ["one", "two", "three"]
    accepted = [scorer.offer(texts, [primary("positive") for _ in texts]) for _ in range(5)]
    assert accepted == [True, True, False, False, False]
    assert scorer.queue.qsize() == 2
    assert metrics.dropped._value.get() == 9  # 3 requests of 3 texts


def test_the_queue_is_bounded_in_texts_too(tmp_path: Path) -> None:
    """One request may carry a thousand long texts: a lagging shadow holds a bounded number."""
    settings = ServingSettings(
        shadow_model_uri="models:/emotitrack-sentiment@challenger",
        shadow_share=1.0,
        tracking_uri="http://127.0.0.1:9",  # never called: nothing to load here
    )
    metrics = build_shadow_metrics(CollectorRegistry())
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "spill")
    scorer = ShadowScorer(settings, log, metrics)
    big = ["a long review"] * (QUEUE_TEXTS // 2 + 1)
    offered = [scorer.offer(big, [primary("positive") for _ in big]) for _ in range(3)]
    assert offered == [True, False, False]  # the second would pass QUEUE_TEXTS
    assert metrics.dropped._value.get() == 2 * len(big)
    assert scorer.offer(["short"], [primary("positive")])  # small requests still fit


def test_queued_requests_are_scored_in_small_calls_and_logged_per_request(
    tmp_path: Path,
) -> None:
    settings = ServingSettings(
        shadow_model_uri="models:/emotitrack-sentiment@challenger",
        shadow_share=1.0,
        tracking_uri="http://127.0.0.1:9",
    )
    registry = CollectorRegistry()
    metrics = build_shadow_metrics(registry)
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05)
    log.start()
    calls: list[int] = []

    def score(texts: list[str]) -> np.ndarray:  # "neg..." texts negative, others positive
        calls.append(len(texts))
        negative = np.array([t.startswith("neg") for t in texts], dtype=float)
        return np.column_stack([negative, 1 - negative])

    scorer = ShadowScorer(settings, log, metrics)
    scorer.store.current = replace(shadow_model("2"), score=score)
    works = [
        ShadowWork(["neg a", "pos b", "neg c"], [primary("negative") for _ in range(3)]),
        ShadowWork(["pos d"], [primary("negative")]),
        ShadowWork([f"pos {i}" for i in range(6)], [primary("positive") for _ in range(6)]),
    ]
    asyncio.run(scorer._score(works))
    log.close()
    assert max(calls) <= 4 and sum(calls) == 10  # no scoring process: chunks of at most 4
    stored = PredictionReader(url).read(source="shadow").set_index("request_id")
    for work in works:
        for text, record in zip(work.texts, work.records, strict=True):
            row = stored.loc[shadow_request_id(record.request_id)]
            assert row["label"] == ("negative" if text.startswith("neg") else "positive")
            assert row["text"] == record.text  # as the primary stored it
    # agreeing: "neg a", "neg c" and the six "pos" with positive answers
    assert metrics.agreements.labels(model_version="2")._value.get() == 8
    assert metrics.predictions.labels(model_version="2")._value.get() == 10


def test_unsampled_requests_are_neither_queued_nor_counted_as_dropped(tmp_path: Path) -> None:
    settings = ServingSettings(
        shadow_model_uri="models:/emotitrack-sentiment@challenger",
        shadow_share=0.5,
        tracking_uri="http://127.0.0.1:9",  # never called: nothing to load here
    )
    metrics = build_shadow_metrics(CollectorRegistry())
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.db'}", tmp_path / "spill")
    draws = iter([0.9, 0.1, 0.7])
    scorer = ShadowScorer(settings, log, metrics, draw=lambda: next(draws))
    assert [scorer.offer(["t"], [primary("positive")]) for _ in range(3)] == [False, True, False]
    assert scorer.queue.qsize() == 1 and metrics.dropped._value.get() == 0


def test_shadow_request_id_is_the_primary_id_with_a_suffix_and_maps_back() -> None:
    request_id = new_request_id()
    assert shadow_request_id(request_id) == f"{request_id}.shadow"
    assert primary_request_id(shadow_request_id(request_id)) == request_id
    assert primary_request_id(request_id) == request_id
    assert len(shadow_request_id(request_id)) <= 64  # the request_id column's width


def test_shadow_records_keep_the_primary_text_and_carry_the_shadow_answer() -> None:
    first, second = primary("positive"), primary("negative")
    proba = np.array([[0.9, 0.1], [0.3, 0.7]])
    at = datetime.now(UTC)
    out = shadow_records(shadow_model("2"), ShadowWork(["a", "b"], [first, second]), proba, 4.0, at)
    assert [r.request_id for r in out] == [
        f"{first.request_id}.shadow",
        f"{second.request_id}.shadow",
    ]
    assert [r.label for r in out] == ["negative", "positive"]
    assert {r.source for r in out} == {"shadow"} and {r.model_version for r in out} == {"2"}
    assert out[0].text == first.text and out[0].endpoint == "predict"
    assert out[0].probabilities == {"negative": 0.9, "positive": 0.1}


def test_comparison_counts_agreement_and_both_accuracies_in_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    now = datetime.now(UTC)
    old = now - timedelta(days=3)
    # (primary label, shadow label, feedback): 4 shadowed, 3 agree, 3 labelled
    cases = [
        ("positive", "positive", "positive"),
        ("positive", "negative", "negative"),
        ("negative", "negative", "positive"),
        ("negative", "negative", None),
    ]
    primaries, shadows, feedback = [], [], []
    for p_label, s_label, truth in cases:
        p = primary(p_label, at=now)
        primaries.append(p)
        shadows.append(
            replace(
                p,
                request_id=shadow_request_id(p.request_id),
                label=s_label,
                model_version="2",
                source="shadow",
            )
        )
        if truth:
            feedback.append((p.request_id, truth))
    unshadowed = primary("positive", at=now)  # not sampled: no shadow row
    outside = primary("positive", at=old)  # before the window
    outside_shadow = replace(
        outside,
        request_id=shadow_request_id(outside.request_id),
        source="shadow",
        model_version="2",
    )
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05)
    log.start()
    log.submit([*primaries, *shadows, unshadowed, outside, outside_shadow])
    log.close()
    engine = create_store_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(FEEDBACK),
            [{"request_id": rid, "label": label, "created_at": now} for rid, label in feedback],
        )
    [pair] = compare(engine, since=now - timedelta(hours=1))
    assert (pair.primary_version, pair.shadow_version) == ("1", "2")
    assert (pair.rows, pair.agreements, pair.labelled) == (4, 3, 3)
    assert (pair.primary_correct, pair.shadow_correct) == (1, 2)
    assert pair.agreement == 0.75 and pair.shadow_accuracy == pytest.approx(2 / 3)
    assert compare(engine)[0].rows == 5  # no window: the old pair too
    assert compare(engine, shadow_version="3") == []
    summary = shadow_summary(url, since=now - timedelta(hours=1))
    assert summary["pairs"][0]["primary_accuracy"] == pytest.approx(1 / 3)
    assert len(PredictionReader(url).read(source="shadow")) == 5


def test_gate_evidence_without_the_gate_exits_2_and_says_what_to_add(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from training.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert main(["promote", "--version", "1", "--gate-evidence", "shadow"]) == 2
    assert "--gate-evidence only applies with --gate" in capsys.readouterr().err
