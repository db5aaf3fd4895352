"""The prediction log: batching, spill to disk when the store is down, replay, reading."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from emotitrack.core.prediction_log import (
    PredictionReader,
    PredictionRecord,
    create_store_engine,
    new_request_id,
    redacted_url,
)
from serving.prediction_log import PredictionLog

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
    scored = replace(record(2), source="batch", batch_id="reviews-2026-12")
    assert PredictionRecord.from_json(scored.to_json()) == scored


def test_batch_records_are_written_with_their_source(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05)
    log.start()
    log.submit([record(1), replace(record(2), source="batch", batch_id="b-7")])
    log.close()
    frame = PredictionReader(url).read()
    assert frame["source"].tolist() == ["api", "batch"]
    assert frame["batch_id"].tolist()[1] == "b-7" and pd.isna(frame["batch_id"].tolist()[0])
    assert len(PredictionReader(url).read(source="batch", batch_id="b-7")) == 1


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


def wait_for(check: Callable[[], bool], timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.02)
    return check()


def test_a_full_buffer_spills_instead_of_growing(tmp_path: Path) -> None:
    # The store answers, but slower than records come (here: the writer waits on a lock), so
    # the records past the buffer's size must go to disk without waiting for the writer.
    url = f"sqlite:///{tmp_path / 'log.db'}?timeout=30"
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05, buffer_rows=10)
    log.start()
    blocker = sa.create_engine(url).raw_connection()
    blocker.execute("BEGIN EXCLUSIVE")
    records = [record(i) for i in range(30)]
    log.submit(records[:5])
    assert wait_for(lambda: log.queue_depth() == 0)  # the writer holds them, waiting
    log.submit(records[5:])
    assert wait_for(lambda: log.counters.spilled == 15)
    assert log.queue_depth() == 10
    blocker.rollback()
    blocker.close()
    log.close()
    assert sorted(PredictionReader(url).read()["request_id"]) == sorted(
        r.request_id for r in records
    )


def test_records_for_a_store_that_is_down_reach_disk_within_a_flush_interval(
    tmp_path: Path,
) -> None:
    log = PredictionLog(UNREACHABLE, tmp_path / "spill", flush_interval_s=0.1, flush_rows=5)
    log.start()
    log.submit([record(i) for i in range(200)])  # forty batches
    assert wait_for(lambda: log.counters.spilled == 200, timeout=1.0)
    assert log.queue_depth() == 0
    log.close()


def ids_on_disk(url: str, spill_dir: Path) -> set[str]:
    """Every record a SIGKILL now would not lose: in the store or in a spill file."""
    for _ in range(20):  # a file may be renamed while we read (claimed for a replay)
        try:
            ids = set(PredictionReader(url).read()["request_id"])
            for path in spill_dir.iterdir():
                for line in path.read_text().splitlines():
                    with suppress(ValueError, KeyError):
                        ids.add(PredictionRecord.from_json(line).request_id)
            return ids
        except FileNotFoundError:
            continue
    raise AssertionError("spill folder kept changing")


def test_a_slowly_failing_store_loses_at_most_about_one_flush_interval_on_sigkill(
    tmp_path: Path,
) -> None:
    """A store that fails each write after 0.4 s (under the 5 s stall guard), under steady
    traffic: at any moment, what is only in memory (what a SIGKILL loses) must be recent."""
    url = f"sqlite:///{tmp_path / 'log.db'}?timeout=0.4"
    spill = tmp_path / "spill"
    log = PredictionLog(url, spill, flush_interval_s=0.1, flush_rows=50)
    log.start()
    blocker = sa.create_engine(url).raw_connection()
    blocker.execute("BEGIN EXCLUSIVE")  # reads still work (WAL); every write times out
    submitted: list[tuple[float, str]] = []
    worst_age = 0.0
    started = time.monotonic()
    while time.monotonic() - started < 4:
        batch = [record(i) for i in range(10)]
        log.submit(batch)
        submitted.extend((time.monotonic(), r.request_id) for r in batch)
        time.sleep(0.02)
        if len(submitted) % 500 == 0:  # every ~1 s: what would a SIGKILL lose now?
            now = time.monotonic()
            on_disk = ids_on_disk(url, spill)
            ages = [now - at for at, request_id in submitted if request_id not in on_disk]
            worst_age = max([worst_age, *ages])
    blocker.rollback()
    blocker.close()
    # one flush interval, plus one failing write, plus slack for a busy machine
    assert worst_age < 1.5, f"records {worst_age:.1f} s old were only in memory"
    assert wait_for(lambda: not log.spill_files(), timeout=20)
    log.close()
    assert sorted(PredictionReader(url).read()["request_id"]) == sorted(i for _, i in submitted)


def test_workers_sharing_a_spill_folder_replay_each_record_once_and_keep_writing(
    tmp_path: Path,
) -> None:
    spill = tmp_path / "spill"
    down = PredictionLog(UNREACHABLE, spill, flush_interval_s=0.01)
    down.start()
    spilled = [record(i) for i in range(600)]
    for i in range(0, 600, 3):  # many small spill files
        down.submit(spilled[i : i + 3])
        time.sleep(0.005)
    down.close()
    assert len(down.spill_files()) > 20

    url = f"sqlite:///{tmp_path / 'log.db'}"
    workers = [PredictionLog(url, spill, flush_interval_s=0.02) for _ in range(3)]
    for worker in workers:
        worker.start()
    assert wait_for(lambda: not workers[0].spill_files(), timeout=30)
    # every writer thread survived the others taking files from under it
    later = [record(i) for i in range(3)]
    for worker, one in zip(workers, later, strict=True):
        worker.submit([one])
    assert wait_for(
        lambda: all(w.counters.written >= 1 and not w.counters.pending_ids for w in workers)
    )
    reader = PredictionReader(url)
    for worker in workers:
        worker.close()
    assert sorted(reader.read()["request_id"]) == sorted(r.request_id for r in spilled + later)
    assert not list(spill.iterdir())  # nothing unreadable, nothing left claimed


def test_a_replaying_worker_never_loses_a_file_another_is_still_writing(tmp_path: Path) -> None:
    """One worker spills (its store is down) while another, sharing the folder, replays."""
    spill = tmp_path / "spill"
    url = f"sqlite:///{tmp_path / 'log.db'}"
    replayer = PredictionLog(url, spill, flush_interval_s=0.001)
    replayer.start()
    down = PredictionLog(UNREACHABLE, spill, flush_interval_s=0.005)
    down.start()
    records = [record(i) for i in range(6000)]
    for i in range(0, 6000, 200):  # big batches: a file takes a while to write
        down.submit(records[i : i + 200])
        time.sleep(0.01)
    down.close()
    assert wait_for(lambda: not replayer.spill_files(), timeout=30)
    replayer.close()
    assert not list(spill.iterdir())  # nothing set aside as unreadable
    assert sorted(PredictionReader(url).read()["request_id"]) == sorted(
        r.request_id for r in records
    )


def test_a_heroku_style_postgres_url_is_accepted(tmp_path: Path) -> None:
    # Heroku's DATABASE_URL says postgres://, a scheme SQLAlchemy 2 refuses.
    url = "postgres://nobody:secret@127.0.0.1:9/nothing"
    assert create_store_engine(url).dialect.name == "postgresql"
    assert "secret" not in redacted_url(url)
    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05)
    log.start()  # the store is unreachable, not the URL refused
    log.submit([record(1)])
    log.close()
    assert log.counters.spilled == 1 and not log.counters.store_up


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

    # a spill line from that release: no hash, no descriptors, no source
    old_spill_line = (
        '{"request_id": "old-2", "created_at": "2026-01-01T00:00:01+00:00", "text": "older", '
        '"label": "negative", "confidence": 0.8, "probabilities": "{\\"negative\\": 0.8}", '
        '"model_name": "m", "model_version": "1", "latency_ms": 1.0, "endpoint": "batch"}'
    )
    replayed = PredictionRecord.from_json(old_spill_line)
    assert replayed.text == "older" and replayed.source == "api" and replayed.batch_id is None

    log = PredictionLog(url, tmp_path / "spill", flush_interval_s=0.05)
    log.start()
    new = hashed(1)
    log.submit([new])
    log.close()
    assert log.counters.written == 1 and log.counters.spilled == 0
    frame = PredictionReader(url).read().set_index("request_id")
    assert frame.loc["old-1", "text"] == "an old review"
    assert frame["text"].isna()[new.request_id]
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


def test_a_log_from_a_newer_release_is_a_store_error_that_says_so(tmp_path: Path) -> None:
    """After a rollback the log may carry a revision this code does not know: callers get a
    SQLAlchemy error (the API marks the store down and spills), not Alembic's own."""
    from emotitrack.core.log_migrations import VERSION_TABLE, LogSchemaUnknown
    from emotitrack.core.prediction_log import create_store_engine, prepare_log

    engine = create_store_engine(f"sqlite:///{tmp_path / 'log.db'}")
    prepare_log(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))  # noqa: S608
    with pytest.raises(LogSchemaUnknown, match="schema is newer than this release knows"):
        prepare_log(engine)
    assert issubclass(LogSchemaUnknown, sa.exc.SQLAlchemyError)
    engine.dispose()
