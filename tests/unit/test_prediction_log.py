"""The prediction log: batching, spill to disk when the store is down, replay, reading."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
