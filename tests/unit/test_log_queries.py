"""Window queries in the database (SQLite here; PostgreSQL in tests/integration/
test_log_migrations.py): aggregates equal to pandas over every row, a seeded bounded sample,
retention, the migrations of logs written by older releases."""

from __future__ import annotations

import argparse
import threading
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from emotitrack.core import log_migrations
from emotitrack.core.log_queries import (
    WindowQuery,
    prune,
    retention_cutoff,
    window_aggregates,
    window_labelled,
    window_sample,
)
from emotitrack.core.prediction_log import (
    FEEDBACK,
    PREDICTIONS,
    PredictionReader,
    PredictionRecord,
    create_store_engine,
    insert_ignoring_duplicates,
    new_request_id,
    prepare_log,
)
from monitoring.estimation import confidence_shift, label_share_shift
from monitoring.retention import add_prune_command
from monitoring.window import (
    confidence_moments_shift,
    label_counts_shift,
    load_window,
)

NOW = datetime(2026, 6, 15, 12, tzinfo=UTC)


def make(i: int, at: datetime, **fields: object) -> PredictionRecord:
    confidence = 0.5 + (i * 37 % 50) / 100  # 0.5 .. 0.99, spread over the bins
    label = "positive" if i % 3 else "negative"
    record = PredictionRecord(
        request_id=new_request_id(),
        created_at=at,
        text=f"review {i}",
        label=label,
        confidence=confidence,
        probabilities={label: confidence},
        model_name="m",
        model_version=str(fields.pop("version", "1")),
        latency_ms=1.0,
        endpoint="predict",
    )
    return replace(record, **fields)  # type: ignore[arg-type]


def store(
    url: str,
    records: list[PredictionRecord],
    feedback: dict[str, str] | None = None,
    at: datetime = NOW,
) -> None:
    engine = create_store_engine(url)
    prepare_log(engine)
    with engine.begin() as conn:
        for start in range(0, len(records), 5_000):
            chunk = [r.to_row() for r in records[start : start + 5_000]]
            conn.execute(insert_ignoring_duplicates(engine, PREDICTIONS), chunk)
        if feedback:
            rows = [{"request_id": k, "label": v, "created_at": at} for k, v in feedback.items()]
            conn.execute(insert_ignoring_duplicates(engine, FEEDBACK), rows)
    engine.dispose()


@pytest.fixture
def log_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'log.db'}"


@pytest.fixture
def filled(log_url: str) -> list[PredictionRecord]:
    """300 API records over 30 hours, two versions; 40 records of one batch; 10 of another."""
    api = [
        make(i, NOW - timedelta(minutes=6 * i), version="1" if i % 4 else "2") for i in range(300)
    ]
    batch = [make(i, NOW - timedelta(minutes=i), source="batch", batch_id="b1") for i in range(40)]
    other = [make(i, NOW - timedelta(minutes=i), source="batch", batch_id="b2") for i in range(10)]
    records = api + batch + other
    feedback = {r.request_id: "negative" for r in api[:60:3]} | {api[1].request_id: "positive"}
    store(log_url, records, feedback)
    return records


WINDOWS = [
    WindowQuery(),
    WindowQuery(since=NOW - timedelta(hours=24), until=NOW),
    WindowQuery(since=NOW - timedelta(hours=24), model_version="1", source="api"),
    WindowQuery(batch_id="b1"),
    WindowQuery(source="batch"),
    WindowQuery(last=77),
    WindowQuery(last=25, source="api", model_version="2"),
]


@pytest.mark.parametrize("query", WINDOWS, ids=str)
def test_aggregates_equal_pandas_over_every_row(
    log_url: str, filled: list[PredictionRecord], query: WindowQuery
) -> None:
    everything = PredictionReader(log_url).read(
        since=query.since,
        until=query.until,
        last=query.last,
        model_version=query.model_version,
        source=query.source,
        batch_id=query.batch_id,
    )
    engine = create_store_engine(log_url)
    with engine.connect() as conn:
        got = window_aggregates(conn, query)
    assert got.rows == len(everything) > 0
    assert got.label_counts == everything["label"].value_counts().to_dict()
    assert got.mean_confidence == pytest.approx(everything["confidence"].mean())
    assert got.confidence_variance == pytest.approx(everything["confidence"].var())
    bins = (everything["confidence"] * got.bins).astype(int).clip(0, got.bins - 1)
    assert got.confidence_histogram == [int((bins == b).sum()) for b in range(got.bins)]
    labelled = everything.dropna(subset=["true_label"])
    assert got.feedback_rows == len(labelled)
    assert got.feedback_correct == int((labelled["true_label"] == labelled["label"]).sum())
    # the statistics monitoring takes from them equal those on every row
    reference = pd.Series(["positive", "negative"] * 50)
    assert label_counts_shift(reference, got.label_counts) == pytest.approx(
        label_share_shift(reference, everything["label"])
    )
    ref_conf = pd.Series([0.7, 0.9, 0.8, 0.95] * 25)
    assert confidence_moments_shift(ref_conf, got).p_value == pytest.approx(
        confidence_shift(ref_conf, everything["confidence"]).p_value
    )


def test_a_confidence_of_one_falls_in_the_last_bin(log_url: str) -> None:
    store(log_url, [make(1, NOW, confidence=1.0), make(2, NOW, confidence=0.5)])
    with create_store_engine(log_url).connect() as conn:
        histogram = window_aggregates(conn, WindowQuery(), bins=10).confidence_histogram
    assert histogram == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1]


def test_the_sample_is_bounded_seeded_and_drawn_from_the_window(
    log_url: str, filled: list[PredictionRecord]
) -> None:
    query = WindowQuery(since=NOW - timedelta(hours=24), source="api")
    window = PredictionReader(log_url).read(since=query.since, source="api")
    with create_store_engine(log_url).connect() as conn:
        first = window_sample(conn, query, 50, seed=7)
        again = window_sample(conn, query, 50, seed=7)
        other = window_sample(conn, query, 50, seed=8)
        whole = window_sample(conn, query, 10_000)
    assert len(first) == 50 and list(first.columns) == list(window.columns)
    assert list(first["request_id"]) == list(again["request_id"])  # same seed, same rows
    assert set(first["request_id"]) != set(other["request_id"])
    assert set(first["request_id"]) <= set(window["request_id"])
    assert first["created_at"].is_monotonic_increasing  # oldest first, as read() returns
    assert sorted(whole["request_id"]) == sorted(window["request_id"])  # all when it fits
    assert whole.set_index("request_id").loc[window["request_id"], "text"].tolist() == list(
        window["text"]
    )


def test_the_sample_is_uniform_over_the_window(log_url: str) -> None:
    # the newest half is all negative: a sample taking the newest (or oldest) rows would show it
    records = [make(i, NOW - timedelta(seconds=i), label="negative") for i in range(1000)]
    records += [make(i, NOW - timedelta(hours=1, seconds=i), label="positive") for i in range(1000)]
    store(log_url, records)
    shares = []
    with create_store_engine(log_url).connect() as conn:
        for seed in range(5):
            sample = window_sample(conn, WindowQuery(), 400, seed=seed)
            shares.append((sample["label"] == "negative").mean())
    assert all(0.4 < share < 0.6 for share in shares), shares


def test_labelled_rows_carry_their_feedback(log_url: str, filled: list[PredictionRecord]) -> None:
    with create_store_engine(log_url).connect() as conn:
        labelled = window_labelled(conn, WindowQuery(source="api"))
    assert len(labelled) == 21 and labelled["true_label"].notna().all()
    assert labelled.set_index("request_id").loc[filled[1].request_id, "true_label"] == "positive"


def test_reading_a_window_does_not_grow_with_its_size(tmp_path: Path) -> None:
    peaks = []
    for rows in (2_000, 40_000):
        url = f"sqlite:///{tmp_path / f'{rows}.db'}"
        store(url, [make(i, NOW - timedelta(seconds=i)) for i in range(rows)])
        tracemalloc.start()
        data = load_window(url, since=NOW - timedelta(days=1), sample_rows=1_000)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert data.aggregates.rows == rows and len(data.sample) == 1_000
    assert peaks[1] < 1.5 * peaks[0], peaks  # twenty times the rows


def test_reader_filters_by_source_and_batch(log_url: str, filled: list[PredictionRecord]) -> None:
    reader = PredictionReader(log_url)
    assert len(reader.read(source="batch")) == 50
    b1 = reader.read(batch_id="b1")
    assert len(b1) == 40 and set(b1["source"]) == {"batch"} and set(b1["batch_id"]) == {"b1"}
    assert set(reader.read(source="api")["batch_id"].isna()) == {True}


def test_prune_deletes_rows_and_feedback_before_the_cutoff(log_url: str) -> None:
    old = [make(i, NOW - timedelta(days=3, hours=i)) for i in range(30)]
    kept = [make(i, NOW - timedelta(days=1, hours=i)) for i in range(30)]
    labels = {old[0].request_id: "negative", kept[0].request_id: "positive"}
    store(log_url, old + kept, labels, at=datetime(2026, 6, 13, 1, tzinfo=UTC))
    engine = create_store_engine(log_url)
    result = prune(engine, keep_days=2, now=NOW, chunk_rows=7)
    assert result.cutoff == datetime(2026, 6, 13, tzinfo=UTC) == retention_cutoff(2, NOW)
    left = PredictionReader(log_url).read()
    assert sorted(left["request_id"]) == sorted(r.request_id for r in kept)
    assert result.deleted_rows == 30 and result.deleted_feedback == 1
    assert left["true_label"].notna().sum() == 1


def test_the_prune_command_says_what_it_removed(
    log_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store(log_url, [make(1, datetime.now(UTC) - timedelta(days=40)), make(2, datetime.now(UTC))])
    parser = argparse.ArgumentParser()
    add_prune_command(parser.add_subparsers())
    args = parser.parse_args(["prune", "--keep-days", "30", "--log-url", log_url])
    assert args.handler(args) == 0
    assert "1 predictions" in capsys.readouterr().out
    assert len(PredictionReader(log_url).read()) == 1
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["prune", "--keep-days", "0"])
    assert exit_.value.code == 2 and "at least 1 day" in capsys.readouterr().err
    args = parser.parse_args(["prune", "--log-url", "postgresql://nobody@127.0.0.1:9/none"])
    assert args.handler(args) == 2
    assert "unusable" in capsys.readouterr().err


# The first release's table (no hash, no descriptors, no index) and the one created by the
# release before migrations (create_all: every column but source/batch_id, two indexes).
FIRST_RELEASE = """CREATE TABLE predictions (
    request_id VARCHAR(64) NOT NULL PRIMARY KEY, created_at DATETIME NOT NULL, text TEXT NOT NULL,
    label VARCHAR(64) NOT NULL, confidence FLOAT NOT NULL, probabilities TEXT NOT NULL,
    model_name VARCHAR(256) NOT NULL, model_version VARCHAR(64) NOT NULL,
    latency_ms FLOAT NOT NULL, endpoint VARCHAR(32) NOT NULL)"""
BEFORE_MIGRATIONS = FIRST_RELEASE.removesuffix(")") + (
    ", text_sha256 VARCHAR(64), text_length FLOAT, word_count FLOAT, oov_share FLOAT, "
    "non_letter_share FLOAT)"
)
FEEDBACK_TABLE = """CREATE TABLE feedback (request_id VARCHAR(64) NOT NULL PRIMARY KEY,
    label VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL)"""
ROW = (
    "INSERT INTO predictions (request_id, created_at, text, label, confidence, probabilities, "
    "model_name, model_version, latency_ms, endpoint) VALUES ('old-1', "
    "'2026-06-15 11:00:00.000000', 'an old review', 'positive', 0.9, '{\"positive\": 0.9}', "
    "'m', '1', 2.0, 'predict')"
)


@pytest.mark.parametrize("schema", [FIRST_RELEASE, BEFORE_MIGRATIONS], ids=["first", "latest"])
def test_a_log_from_before_migrations_is_detected_and_migrated(log_url: str, schema: str) -> None:
    engine = create_store_engine(log_url)
    with engine.begin() as conn:
        conn.execute(sa.text(schema))
        conn.execute(sa.text(FEEDBACK_TABLE))
        if schema == BEFORE_MIGRATIONS:
            conn.execute(
                sa.text("CREATE INDEX ix_predictions_created_at ON predictions (created_at)")
            )
            conn.execute(
                sa.text("CREATE INDEX ix_predictions_model_version ON predictions (model_version)")
            )
        conn.execute(sa.text(ROW))
    before = PredictionReader(log_url).read()  # a reader meets it before the API migrates it
    assert before.loc[0, "source"] == "api" and before["batch_id"].isna().all()
    prepare_log(engine)
    with engine.connect() as conn:
        assert log_migrations.current_revision(conn) == log_migrations.HEAD
    indexes = {i["name"] for i in sa.inspect(engine).get_indexes("predictions")}
    assert indexes == {"ix_predictions_window", "ix_predictions_batch"}
    store(log_url, [make(2, NOW, source="batch", batch_id="b")])
    frame = PredictionReader(log_url).read().set_index("request_id")
    assert frame.loc["old-1", "text"] == "an old review" and frame.loc["old-1", "source"] == "api"
    assert frame["source"].tolist() == ["api", "batch"]
    # and back: the columns go, the API's rows stay; a batch's would pass for served traffic
    log_migrations.downgrade(engine, "0001")
    columns = {c["name"] for c in sa.inspect(engine).get_columns("predictions")}
    assert "source" not in columns
    assert PredictionReader(log_url).read()["request_id"].tolist() == ["old-1"]


def test_workers_preparing_a_new_log_at_once_migrate_it_once(log_url: str) -> None:
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            prepare_log(create_store_engine(log_url))
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with create_store_engine(log_url).connect() as conn:
        versions = conn.execute(sa.text("SELECT * FROM emotitrack_log_version")).all()
    assert versions == [(log_migrations.HEAD,)]
