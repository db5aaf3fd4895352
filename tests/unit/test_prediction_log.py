"""The prediction log: batching, spill to disk when the store is down, replay, reading."""

from __future__ import annotations

import hashlib
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

from serving.prediction_log import PredictionLog, PredictionReader, PredictionRecord, new_request_id

UNREACHABLE = "postgresql://nobody@127.0.0.1:9/nothing"  # port 9 (discard): connection refused


def record(i: int, version: str = "1", at: datetime | None = None) -> PredictionRecord:
    return PredictionRecord(
        request_id=new_request_id(),
        created_at=at or datetime.now(UTC),
        text=f"text {i} ✓ שלום",
        label="positive" if i % 2 else "negative",
        confidence=0.75,
        probabilities={"negative": 0.25, "positive": 0.75},
        model_name="m",
        model_version=version,
        latency_ms=1.5,
        endpoint="predict",
    )


def test_json_round_trip_keeps_every_field() -> None:
    original = record(1)
    assert PredictionRecord.from_json(original.to_json()) == original


def test_records_are_written_and_read_back(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05)
    log.start()
    records = [record(i) for i in range(25)]
    log.submit(records[:10])
    log.submit(records[10:])
    log.close()
    frame = PredictionReader(url).read()
    assert list(frame["request_id"]) == [r.request_id for r in records]
    assert frame.loc[3, "text"] == "text 3 ✓ שלום" and frame.loc[3, "probabilities"] == {
        "negative": 0.25,
        "positive": 0.75,
    }
    assert log.counters.written == 25 and log.counters.spilled == 0


def test_store_down_spills_and_a_later_start_replays(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    down = PredictionLog(UNREACHABLE, spill, flush_interval_s=0.05)
    down.start()
    records = [record(i) for i in range(12)]
    down.submit(records)
    assert down.knows(records[0].request_id)  # acknowledged, even though not written yet
    down.close()
    assert down.counters.spilled == 12 and down.counters.dropped == 0
    assert len(down.spill_files()) >= 1

    url = f"sqlite:///{tmp_path / 'log.db'}"
    up = PredictionLog(url, spill, flush_interval_s=0.05)
    up.start()
    deadline = time.monotonic() + 10
    while up.spill_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    up.close()
    assert up.spill_files() == []
    assert sorted(PredictionReader(url).read()["request_id"]) == sorted(
        r.request_id for r in records
    )
    assert up.counters.replayed == 12


def test_replaying_twice_does_not_duplicate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    records = [record(i) for i in range(5)]
    for _ in range(2):  # the same records offered twice, e.g. a replay after a partial write
        log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05)
        log.start()
        log.submit(records)
        log.close()
    assert len(PredictionReader(url).read()) == 5


def test_a_full_buffer_spills_instead_of_growing(tmp_path: Path) -> None:
    log = PredictionLog(UNREACHABLE, tmp_path / "spill", flush_interval_s=60, buffer_rows=10)
    log.start()
    log.submit([record(i) for i in range(25)])
    assert log.queue_depth() == 10 and log.counters.spilled == 15
    log.close()
    assert log.counters.spilled == 25


def test_reader_windows_and_versions(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    now = datetime.now(UTC)
    old = [record(i, "1", now - timedelta(hours=5)) for i in range(3)]
    new = [record(i, "2", now - timedelta(minutes=i + 1)) for i in range(4)]
    log = PredictionLog(url, tmp_path / "spill")
    log.start()
    log.submit(old + new)
    log.add_feedback(new[0].request_id, "negative")
    log.close()
    reader = PredictionReader(url)
    assert len(reader.read(since=now - timedelta(hours=1))) == 4
    assert len(reader.read(model_version="1")) == 3
    last_two = reader.read(last=2)
    assert list(last_two["request_id"]) == [new[1].request_id, new[0].request_id]  # oldest first
    assert last_two["true_label"].isna().tolist() == [True, False]
    assert last_two["true_label"].iloc[1] == "negative"
    assert reader.read(since=now + timedelta(days=1)).empty


def hashed(i: int) -> PredictionRecord:
    """A record as serving builds it with EMOTITRACK_STORE_TEXT=false."""
    text = f"text {i}"
    descriptors = {"text_length": 6.0, "word_count": 2.0, "oov_share": 0.5, "non_letter_share": 0.5}
    return replace(
        record(i),
        text=None,
        text_sha256=hashlib.sha256(text.encode()).hexdigest(),
        descriptors=descriptors,
    )


def test_hashed_records_keep_no_text_on_disk_and_read_back(tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    down = PredictionLog(UNREACHABLE, spill, flush_interval_s=0.05)
    down.start()
    records = [hashed(i) for i in range(3)]
    down.submit(records)
    down.close()
    spilled = "".join(p.read_text() for p in down.spill_files())
    assert "text 1" not in spilled and records[1].text_sha256 in spilled  # type: ignore[operator]
    assert [PredictionRecord.from_json(line) for line in spilled.splitlines()] == records

    url = f"sqlite:///{tmp_path / 'log.db'}"
    up = PredictionLog(url, spill, flush_interval_s=0.05)
    up.start()
    deadline = time.monotonic() + 10
    while up.spill_files() and time.monotonic() < deadline:
        time.sleep(0.05)
    up.close()
    frame = PredictionReader(url).read()
    assert frame["text"].isna().all()
    assert list(frame["text_sha256"]) == [r.text_sha256 for r in records]
    assert frame["oov_share"].tolist() == [0.5, 0.5, 0.5]
    assert b"text 1" not in (tmp_path / "log.db").read_bytes()


OLD_SCHEMA = """CREATE TABLE predictions (
    request_id VARCHAR(64) NOT NULL PRIMARY KEY, created_at DATETIME NOT NULL, text TEXT NOT NULL,
    label VARCHAR(64) NOT NULL, confidence FLOAT NOT NULL, probabilities TEXT NOT NULL,
    model_name VARCHAR(256) NOT NULL, model_version VARCHAR(64) NOT NULL,
    latency_ms FLOAT NOT NULL, endpoint VARCHAR(32) NOT NULL)"""
OLD_FEEDBACK = """CREATE TABLE feedback (request_id VARCHAR(64) NOT NULL PRIMARY KEY,
    label VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL)"""


def test_a_log_written_before_hashes_still_reads_and_takes_hashed_records(tmp_path: Path) -> None:
    """Migration: the table as the first release created it (text NOT NULL, no hash or
    descriptor columns), with a row in it, and a spill line from that release."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(OLD_SCHEMA))
        conn.execute(sa.text(OLD_FEEDBACK))
        conn.execute(
            sa.text(
                "INSERT INTO predictions VALUES ('old-1', '2026-01-01 00:00:00.000000', "
                "'an old review', 'positive', 0.9, '{\"negative\": 0.1, \"positive\": 0.9}', "
                "'m', '1', 2.0, 'predict')"
            )
        )
    old = PredictionReader(url).read()
    assert old.loc[0, "text"] == "an old review" and old["text_sha256"].isna().all()

    old_spill_line = (
        '{"request_id": "old-2", "created_at": "2026-01-01T00:00:01+00:00", "text": "older", '
        '"label": "negative", "confidence": 0.8, "probabilities": "{\\"negative\\": 0.8}", '
        '"model_name": "m", "model_version": "1", "latency_ms": 1.0, "endpoint": "batch"}'
    )
    assert PredictionRecord.from_json(old_spill_line).text == "older"

    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05)
    log.start()
    new = hashed(1)
    log.submit([new])
    log.close()
    assert log.counters.written == 1 and log.counters.spilled == 0
    frame = PredictionReader(url).read().set_index("request_id")
    assert frame.loc["old-1", "text"] == "an old review"
    assert pd.isna(frame.loc[new.request_id, "text"])
    assert frame.loc[new.request_id, "word_count"] == 2.0


def test_a_hung_store_makes_records_spill_instead_of_waiting_in_memory(tmp_path: Path) -> None:
    # A write that blocks (here: SQLite waiting on another connection's exclusive lock, as a
    # frozen PostgreSQL would) must not leave acknowledged records only in memory.
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05, stall_timeout_s=0.3)
    log.start()
    blocker = sa.create_engine(url).raw_connection()
    blocker.execute("BEGIN EXCLUSIVE")
    records = [record(i) for i in range(40)]
    for i in range(0, 40, 10):
        log.submit(records[i : i + 10])
        time.sleep(0.2)
    time.sleep(0.6)
    spilled_ids = {
        PredictionRecord.from_json(line).request_id
        for path in log.spill_files()
        for line in path.read_text().splitlines()
    }
    assert spilled_ids == {r.request_id for r in records}  # all on disk while the store hangs
    assert log.queue_depth() == 0 and not log.counters.store_up
    assert "stalled" in log.counters.last_error
    blocker.rollback()
    blocker.close()
    deadline = time.monotonic() + 15
    while log.spill_files() and time.monotonic() < deadline:  # store back: spill replayed
        time.sleep(0.1)
    log.close()
    assert not log.spill_files()
    frame = PredictionReader(url).read()
    assert sorted(frame["request_id"]) == sorted(r.request_id for r in records)  # once each
