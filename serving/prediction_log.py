"""The durable writer of the prediction log: every prediction the API acknowledges, for monitoring.

The table layout, the record and the reader live in ``emotitrack.core.prediction_log``. Writes
happen on a background thread, in batches. When the store is down or slow, records wait in a
bounded in-memory buffer and then spill to JSON-lines files, replayed once the store answers
again. Inserts ignore request ids already present, so a replay never duplicates a record.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from emotitrack.core.prediction_log import (
    FEEDBACK,
    PREDICTIONS,
    PredictionRecord,
    create_store_engine,
    insert_ignoring_duplicates,
    prepare_log,
    redacted_url,
)

log = logging.getLogger("emotitrack.serving")


@dataclass
class LogCounters:
    """What happened to records, for metrics (read by the metrics exporter)."""

    written: int = 0
    spilled: int = 0
    replayed: int = 0
    dropped: int = 0
    store_up: bool = False
    last_error: str = ""
    pending_ids: set[str] = field(default_factory=set)


# Spill files: written as ``*.jsonl.tmp`` and renamed when complete; a replayer claims one by
# renaming it to ``*.replaying.jsonl``. ``SPILL_GLOB`` matches every whole file not yet replayed,
# claimed or not (what operators and tests count), never one being written.
SPILL_GLOB = "spill-*.jsonl"
WRITING_SUFFIX = ".tmp"
CLAIMED_SUFFIX = ".replaying.jsonl"
# A claim untouched this long is a replayer that died mid-file: its file is replayed again.
STALE_CLAIM_S = 600.0


class PredictionLog:
    """Buffered, batched, spill-to-disk writer of prediction records."""

    def __init__(
        self,
        url: str,
        spill_dir: Path,
        *,
        flush_interval_s: float = 0.5,
        flush_rows: int = 500,
        buffer_rows: int = 50_000,
        stall_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.spill_dir = spill_dir
        self.flush_interval_s = flush_interval_s
        self.flush_rows = flush_rows
        self.buffer_rows = buffer_rows
        self.stall_timeout_s = stall_timeout_s
        self.counters = LogCounters()
        self._buffer: deque[PredictionRecord] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._engine: sa.Engine | None = None
        self._thread: threading.Thread | None = None
        self._guard: threading.Thread | None = None
        # the batch the writer is inserting and since when (monotonic), for the stall guard
        self._inflight: Sequence[PredictionRecord] = ()
        self._inflight_spilled = False
        self._write_started: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self.spill_dir.mkdir(parents=True, exist_ok=True)
        self._engine = create_store_engine(self.url)
        self._ensure_tables()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()
        self._guard = threading.Thread(
            target=self._guard_stalls, name="prediction-log-guard", daemon=True
        )
        self._guard.start()

    def close(self, timeout: float = 30.0) -> None:
        """Write (or spill) everything still buffered; called on shutdown (SIGTERM)."""
        self._stop.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        while (
            self._thread is not None
            and self._thread.is_alive()
            and time.monotonic() < deadline
            and not self._stalled()
        ):
            self._thread.join(0.1)
        if self._thread is not None and self._thread.is_alive():
            # The writer is stuck in the store: trying another write would hang shutdown too.
            self._spill_stuck_records()
        else:
            self._drain()
        if self._engine is not None and not self._stalled():
            self._engine.dispose()

    # -- request path --------------------------------------------------------------------------
    def submit(self, records: Sequence[PredictionRecord]) -> None:
        """Queue records; never blocks on the store or the disk (this runs on the event loop).
        Past ``buffer_rows`` the oldest spill, on the writer or guard thread."""
        with self._lock:
            self._buffer.extend(records)
            self.counters.pending_ids.update(r.request_id for r in records)
            depth = len(self._buffer)
        if depth >= self.flush_rows or depth > self.buffer_rows:
            self._wake.set()

    def queue_depth(self) -> int:
        return len(self._buffer)

    def knows(self, request_id: str) -> bool:
        """Whether a prediction with this id was acknowledged (written, buffered or spilled)."""
        if request_id in self.counters.pending_ids:
            return True
        assert self._engine is not None
        with self._engine.connect() as conn:
            found = conn.execute(
                sa.select(PREDICTIONS.c.request_id).where(PREDICTIONS.c.request_id == request_id)
            ).first()
        return found is not None

    def add_feedback(self, request_id: str, label: str) -> bool:
        """Store the true label; False if feedback for this id exists already."""
        assert self._engine is not None
        row = {"request_id": request_id, "label": label, "created_at": datetime.now(UTC)}
        with self._engine.begin() as conn:
            result = conn.execute(insert_ignoring_duplicates(self._engine, FEEDBACK), [row])
        return bool(result.rowcount)

    # -- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self._write_pass()
            except Exception:  # a dead writer would leave every later record in memory
                log.exception("prediction log: write pass failed; retrying at the next flush")

    def _write_pass(self) -> None:
        self._spill_overflow()
        self._flush_buffer()
        if not self.counters.store_up and self.spill_files():
            self._probe()  # no new records may come to show the store is back
        if self.counters.store_up:
            self._replay_spill_files()

    def _flush_buffer(self) -> None:
        """Write the buffer a batch at a time. Once a write fails, or with the store marked
        down, all of it spills at once: one batch per failure left the rest in memory (where a
        SIGKILL loses it) for as long as the store took to fail, again and again."""
        while self.counters.store_up:
            batch = self._take(self.flush_rows)
            if not batch:
                return
            if not self._write(batch) and not self._inflight_spilled:
                self._spill(batch)
        self._spill_buffer()

    def _drain(self) -> None:
        self._flush_buffer()
        self._spill_buffer()

    def _take(self, count: int | None = None) -> list[PredictionRecord]:
        """The oldest ``count`` buffered records (all without one), out of the buffer."""
        with self._lock:
            size = len(self._buffer) if count is None else min(count, len(self._buffer))
            return [self._buffer.popleft() for _ in range(size)]

    def _spill_buffer(self) -> None:
        rest = self._take()
        if rest:
            self._spill(rest)

    def _spill_overflow(self) -> None:
        """Spill the oldest records past ``buffer_rows`` (a store slower than the traffic)."""
        overflow = self._take(max(0, len(self._buffer) - self.buffer_rows))
        if overflow:
            self._spill(overflow)

    def _write(self, records: Sequence[PredictionRecord]) -> bool:
        assert self._engine is not None
        self._inflight, self._inflight_spilled = records, False
        self._write_started = time.monotonic()
        try:
            if not self.counters.store_up:
                self._ensure_tables()
            with self._engine.begin() as conn:
                conn.execute(
                    insert_ignoring_duplicates(self._engine, PREDICTIONS),
                    [r.to_row() for r in records],
                )
        except Exception as exc:  # whatever failed, the records must reach a spill file
            self._mark_down(exc)
            return False
        finally:
            self._inflight, self._write_started = (), None
        if not self.counters.store_up:  # a write that outlived the stall guard did land
            log.info("prediction log store reachable again: %s", redacted_url(self.url))
            self.counters.store_up = True
        self.counters.written += len(records)
        self._forget(records)
        return True

    def _probe(self) -> None:
        """Ask a store marked down whether it is back (under the stall guard, like a write)."""
        self._write_started = time.monotonic()
        try:
            self._ensure_tables()
        finally:
            self._write_started = None

    # -- stall guard ---------------------------------------------------------------------------
    def _stalled(self) -> bool:
        started = self._write_started
        return started is not None and time.monotonic() - started > self.stall_timeout_s

    def _guard_stalls(self) -> None:
        """Keep records out of memory while the writer cannot: it may be stuck in a statement
        that no client-side timeout ends (a frozen server, a lock never released), or busy
        asking a store marked down whether it is back, or writing slower than records come."""
        while not self._stop.wait(self.flush_interval_s):
            try:
                self._guard_pass()
            except Exception:  # the guard must outlive one failed spill
                log.exception("prediction log: stall guard pass failed")

    def _guard_pass(self) -> None:
        if self._stalled():
            self._spill_stuck_records()
        elif not self.counters.store_up:
            self._spill_buffer()
        else:
            self._spill_overflow()

    def _spill_stuck_records(self) -> None:
        """Spill the batch the stuck writer holds (inserts are idempotent, so it may also land
        later) and everything buffered behind it."""
        if self.counters.store_up:
            self._mark_down(TimeoutError(f"write stalled over {self.stall_timeout_s:g} s"))
        inflight = list(self._inflight)
        if inflight and not self._inflight_spilled:
            self._inflight_spilled = True
            self._spill(inflight)
        self._spill_buffer()

    def _ensure_tables(self) -> None:
        assert self._engine is not None
        try:
            prepare_log(self._engine)
        except sa.exc.SQLAlchemyError as exc:
            self._mark_down(exc)
            return
        if not self.counters.store_up:
            log.info("prediction log store reachable: %s", redacted_url(self.url))
        self.counters.store_up = True

    def _mark_down(self, exc: Exception) -> None:
        if self.counters.store_up or not self.counters.last_error:
            log.warning(
                "prediction log store unreachable (records will spill): %s", type(exc).__name__
            )
        self.counters.store_up = False
        self.counters.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"

    def _forget(self, records: Iterable[PredictionRecord]) -> None:
        with self._lock:
            self.counters.pending_ids.difference_update(r.request_id for r in records)

    # -- spill files ---------------------------------------------------------------------------
    def _spill(self, records: Sequence[PredictionRecord]) -> None:
        """One spill file, complete or absent: written under a temporary name, then renamed."""
        name = f"spill-{time.time_ns()}-{os.getpid()}-{threading.get_ident()}.jsonl"
        path = self.spill_dir / name
        partial = path.with_name(name + WRITING_SUFFIX)
        try:
            with partial.open("w", encoding="utf-8") as f:
                f.writelines(r.to_json() + "\n" for r in records)
                f.flush()
                os.fsync(f.fileno())
            partial.replace(path)
            _fsync_directory(self.spill_dir)  # the rename itself survives a power loss too
        except OSError as exc:
            with suppress(OSError):
                partial.unlink()
            self.counters.dropped += len(records)
            self._forget(records)
            log.error("prediction log: %d records dropped, spill failed: %s", len(records), exc)
            return
        self.counters.spilled += len(records)

    def spill_files(self) -> list[Path]:
        """Spill files not replayed yet (some perhaps being replayed), oldest first."""
        return sorted(self.spill_dir.glob(SPILL_GLOB))

    def _unclaimed_spill_files(self) -> list[Path]:
        return [path for path in self.spill_files() if not path.name.endswith(CLAIMED_SUFFIX)]

    def _replay_spill_files(self) -> None:
        """Replay every spill file, oldest first, writing new records between batches so that
        they do not wait in memory for the whole replay. Workers may share the spill folder:
        each file is claimed (renamed) before it is read, and one claimed by another is skipped."""
        self._release_stale_claims()
        for path in self._unclaimed_spill_files():
            claimed = _claim(path)
            if claimed is not None and not self._replay(claimed, path):
                return  # store went down again; the file is back for the next try

    def _replay(self, claimed: Path, path: Path) -> bool:
        """Write one claimed spill file; False (and the file released) if the store fails."""
        try:
            records = [
                PredictionRecord.from_json(line)
                for line in claimed.read_text().splitlines()
                if line
            ]
        except FileNotFoundError:  # released as stale and taken by another worker meanwhile
            return True
        except (OSError, ValueError) as exc:
            log.error("prediction log: cannot read spill file %s: %s", path.name, exc)
            _rename_if_present(claimed, path.with_suffix(".unreadable"))
            return True
        for start in range(0, len(records), self.flush_rows):
            if not self._write(records[start : start + self.flush_rows]):
                _rename_if_present(claimed, path)
                return False
            _touch_if_present(claimed)  # a live claim, not a dead replayer's
            self._flush_buffer()
            if not self.counters.store_up:
                _rename_if_present(claimed, path)
                return False
        self.counters.replayed += len(records)  # before the file goes: watchers see both
        with suppress(FileNotFoundError):
            claimed.unlink()
        log.info("prediction log: replayed %d spilled records from %s", len(records), path.name)
        return True

    def _release_stale_claims(self) -> None:
        cutoff = time.time() - STALE_CLAIM_S
        for claimed in self.spill_dir.glob("spill-*" + CLAIMED_SUFFIX):
            with suppress(FileNotFoundError):
                if claimed.stat().st_mtime < cutoff:
                    log.warning("prediction log: replaying abandoned %s again", claimed.name)
                    _rename_if_present(claimed, _unclaimed_name(claimed))


def _claim(path: Path) -> Path | None:
    """Take a spill file for replay by renaming it (atomic): None if another worker has it."""
    claimed = path.with_name(path.name.removesuffix(".jsonl") + CLAIMED_SUFFIX)
    try:
        path.rename(claimed)
    except FileNotFoundError:
        return None
    _touch_if_present(claimed)  # the claim's age, for _release_stale_claims
    return claimed


def _unclaimed_name(claimed: Path) -> Path:
    return claimed.with_name(claimed.name.removesuffix(CLAIMED_SUFFIX) + ".jsonl")


def _rename_if_present(source: Path, target: Path) -> None:
    with suppress(FileNotFoundError):
        source.replace(target)


def _touch_if_present(path: Path) -> None:
    with suppress(FileNotFoundError):
        path.touch()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
