"""Window queries computed by the database, so the reader's memory does not grow with the window.

A window's counts, label shares, confidence moments and histogram come from one GROUP BY; the
drift sample is drawn in the database: the rows whose seeded hash of ``request_id`` is
smallest (``ORDER BY key LIMIT n``), a uniform sample without replacement that the same seed
draws again. The key is ``hashtextextended(request_id, seed)`` on PostgreSQL (the hash its
hash partitioning persists on disk, so it cannot change between releases) and
``emotitrack_sample_key`` (BLAKE2b, registered on each connection) on SQLite. Both databases
keep only the ``n`` smallest keys while scanning (a top-N sort), and on PostgreSQL the scan
reads the covering window index, not the table. Retention (``prune``) drops whole day
partitions on PostgreSQL and deletes by ``created_at`` on SQLite. See docs/prediction-log.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa

from emotitrack.core.log_migrations import LOCK_KEY, partitions
from emotitrack.core.prediction_log import (
    FEEDBACK,
    PREDICTIONS,
    log_columns,
    records_frame,
    window_filters,
)

HISTOGRAM_BINS = 20  # equal-width confidence bins over [0, 1]
MAX_LABELLED_ROWS = 100_000  # feedback rows loaded for the quality report


@dataclass(frozen=True)
class WindowQuery:
    """Which predictions: a time range and/or the newest ``last``, narrowed by version, source
    (api, batch, shadow) and batch id."""

    since: datetime | None = None
    until: datetime | None = None
    last: int | None = None
    model_version: str | None = None
    source: str | None = None
    batch_id: str | None = None


@dataclass(frozen=True)
class WindowAggregates:
    """What the window's every row says, summed by the database."""

    rows: int
    label_counts: dict[str, int]
    confidence_sum: float
    confidence_sum_squares: float
    confidence_histogram: list[int]  # HISTOGRAM_BINS counts, bin i is [i/bins, (i+1)/bins)
    feedback_rows: int
    feedback_correct: int
    bins: int = HISTOGRAM_BINS

    @property
    def label_shares(self) -> dict[str, float]:
        return {k: v / self.rows for k, v in sorted(self.label_counts.items())} if self.rows else {}

    @property
    def mean_confidence(self) -> float | None:
        return self.confidence_sum / self.rows if self.rows else None

    @property
    def confidence_variance(self) -> float | None:
        """The sample variance (n - 1)."""
        if self.rows < 2:
            return None
        mean = self.confidence_sum / self.rows
        return max(0.0, (self.confidence_sum_squares - self.rows * mean * mean) / (self.rows - 1))

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "label_counts": dict(sorted(self.label_counts.items())),
            "label_shares": self.label_shares,
            "mean_confidence": self.mean_confidence,
            "confidence_variance": self.confidence_variance,
            "confidence_histogram": {"bins": self.bins, "counts": self.confidence_histogram},
            "feedback_rows": self.feedback_rows,
            "feedback_correct": self.feedback_correct,
        }


def _window(conn: sa.Connection, query: WindowQuery) -> sa.Subquery:
    """The window's rows (every column) as a subquery: filters, and for ``last`` the newest."""
    columns = log_columns(conn)
    select = sa.select(*columns.values()).where(
        *window_filters(
            columns,
            since=query.since,
            until=query.until,
            model_version=query.model_version,
            source=query.source,
            batch_id=query.batch_id,
        )
    )
    if query.last is not None:
        # request_id breaks ties: a batch's rows share one created_at, and every query of the
        # window must cut the same newest N
        select = select.order_by(
            PREDICTIONS.c.created_at.desc(), PREDICTIONS.c.request_id.desc()
        ).limit(query.last)
    return select.subquery("window")


def _bucket(conn: sa.Connection, confidence: Any, bins: int) -> Any:
    """The confidence's bin, ``floor(confidence * bins)`` clamped to ``[0, bins - 1]``."""
    scaled = confidence * bins
    if conn.dialect.name == "postgresql":  # its CAST rounds; SQLite's truncates (a floor here)
        floor = sa.cast(sa.func.floor(scaled), sa.Integer)
        return sa.func.least(sa.func.greatest(floor, 0), bins - 1)
    return sa.func.min(sa.func.max(sa.cast(scaled, sa.Integer), 0), bins - 1)


def window_aggregates(
    conn: sa.Connection, query: WindowQuery, bins: int = HISTOGRAM_BINS
) -> WindowAggregates:
    """Counts by predicted label and confidence bin, confidence sums: one scan of the window,
    grouped by label (a handful of groups, so the database hashes rather than sorts); then the
    feedback agreement, a join driven by the feedback rows."""
    window = _window(conn, query)
    bucket = _bucket(conn, window.c.confidence, bins)
    select = sa.select(
        window.c.label,
        sa.func.count().label("rows"),
        sa.func.sum(window.c.confidence).label("s1"),
        sa.func.sum(window.c.confidence * window.c.confidence).label("s2"),
        *(sa.func.sum(sa.case((bucket == b, 1), else_=0)).label(f"b{b}") for b in range(bins)),
    ).group_by(window.c.label)
    labels: dict[str, int] = {}
    histogram = [0] * bins
    s1 = s2 = 0.0
    for row in conn.execute(select).mappings():
        labels[row["label"]] = int(row["rows"])
        s1 += float(row["s1"])
        s2 += float(row["s2"])
        for b in range(bins):
            histogram[b] += int(row[f"b{b}"])
    window = _window(conn, query)
    agreement = sa.select(
        sa.func.count(), sa.func.sum(sa.case((FEEDBACK.c.label == window.c.label, 1), else_=0))
    ).select_from(FEEDBACK.join(window, window.c.request_id == FEEDBACK.c.request_id))
    feedback, right = conn.execute(agreement).one()
    return WindowAggregates(
        sum(labels.values()), labels, s1, s2, histogram, int(feedback), int(right or 0), bins
    )


def sample_key(conn: sa.Connection, request_id: Any, seed: int) -> Any:
    """The seeded hash that orders a window for sampling (see the module's docstring)."""
    if conn.dialect.name == "postgresql":
        return sa.func.hashtextextended(request_id, seed)
    return sa.func.emotitrack_sample_key(request_id, seed)


def window_sample(
    conn: sa.Connection, query: WindowQuery, rows: int, seed: int = 0, chunk: int = 5_000
) -> pd.DataFrame:
    """At most ``rows`` predictions of the window drawn uniformly in the database (the same
    seed draws the same rows), every column and ``true_label``, oldest first: the frame
    ``PredictionReader.read`` returns, for a sample instead of the whole window."""
    window = _window(conn, query)
    key = sample_key(conn, window.c.request_id, seed)
    # Only the ids go through the top-N sort; the texts are then read for the chosen rows
    # alone, by primary key, within the window's time range (its partitions on PostgreSQL).
    chosen = conn.execute(
        sa.select(window.c.request_id).order_by(key, window.c.request_id).limit(rows)
    ).scalars()
    ids = list(chosen)
    columns = log_columns(conn)
    frames = []
    for start in range(0, len(ids), chunk):
        select = (
            sa.select(*columns.values(), FEEDBACK.c.label.label("true_label"))
            .select_from(
                PREDICTIONS.outerjoin(FEEDBACK, FEEDBACK.c.request_id == PREDICTIONS.c.request_id)
            )
            .where(
                PREDICTIONS.c.request_id.in_(ids[start : start + chunk]),
                *window_filters(columns, since=query.since, until=query.until),
            )
        )
        frames.append(records_frame(conn.execute(select).mappings().all()))
    if not frames:
        return records_frame([])
    sample = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return sample.sort_values(["created_at", "request_id"], ignore_index=True)


def window_labelled(
    conn: sa.Connection, query: WindowQuery, limit: int = MAX_LABELLED_ROWS
) -> pd.DataFrame:
    """The window's predictions that have a feedback label (``true_label``), oldest first;
    bounded by the labels given, and by ``limit``."""
    window = _window(conn, query)
    select = (
        sa.select(*window.c, FEEDBACK.c.label.label("true_label"))
        .select_from(window.join(FEEDBACK, FEEDBACK.c.request_id == window.c.request_id))
        .order_by(window.c.created_at.desc(), window.c.request_id.desc())
        .limit(limit)
    )
    return records_frame(conn.execute(select).mappings().all()).iloc[::-1].reset_index(drop=True)


@dataclass(frozen=True)
class PruneResult:
    cutoff: datetime
    dropped_partitions: list[str]
    deleted_rows: int
    deleted_feedback: int


def retention_cutoff(keep_days: int, now: datetime | None = None) -> datetime:
    """The start (UTC midnight) of the oldest day kept: today and ``keep_days`` days before it."""
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    day = today - timedelta(days=keep_days)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def prune(
    engine: sa.Engine, keep_days: int, now: datetime | None = None, chunk_rows: int = 10_000
) -> PruneResult:
    """Remove predictions (and their feedback) older than the retention cutoff. PostgreSQL:
    whole day partitions dropped (no row is read), the default partition's old rows deleted,
    the days ahead created (the maintenance step); SQLite: deleted in chunks, so the API's
    writer waits at most one chunk for its lock."""
    cutoff = retention_cutoff(keep_days, now)
    if engine.dialect.name == "postgresql":
        return _prune_partitions(engine, cutoff)
    deleted = _delete_in_chunks(engine, PREDICTIONS, cutoff, chunk_rows)
    with engine.begin() as conn:
        feedback = conn.execute(_stale_feedback(cutoff)).rowcount
    return PruneResult(cutoff, [], deleted, feedback)


def _stale_feedback(cutoff: datetime) -> sa.Delete:
    """Feedback given before the cutoff, or whose prediction is gone (labels come after their
    prediction: a day's grace covers them, and spares a label whose prediction still waits in
    a spill file)."""
    orphan = ~sa.exists().where(PREDICTIONS.c.request_id == FEEDBACK.c.request_id)
    return FEEDBACK.delete().where(
        sa.or_(
            FEEDBACK.c.created_at < cutoff,
            sa.and_(orphan, FEEDBACK.c.created_at < cutoff + timedelta(days=1)),
        )
    )


def _delete_in_chunks(engine: sa.Engine, table: sa.Table, cutoff: datetime, chunk: int) -> int:
    total = 0
    while True:
        ids = sa.select(table.c.request_id).where(table.c.created_at < cutoff).limit(chunk)
        with engine.begin() as conn:
            deleted = conn.execute(table.delete().where(table.c.request_id.in_(ids))).rowcount
        total += deleted
        if deleted < chunk:
            return total


def _prune_partitions(engine: sa.Engine, cutoff: datetime) -> PruneResult:
    dropped = []
    with engine.begin() as conn:
        # Dropping a partition locks the whole table: wait a bounded time for a long reader
        # rather than queue the API's writes behind this statement.
        conn.execute(sa.text("SET LOCAL lock_timeout = '10s'"))
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
        for day in partitions.partition_days(conn):
            if day < cutoff.date():
                name = partitions.partition_name(day)
                conn.execute(sa.text(f"DROP TABLE {name}"))
                dropped.append(name)
        deleted = conn.execute(
            sa.text(f"DELETE FROM {partitions.DEFAULT_PARTITION} WHERE created_at < :cutoff"),  # noqa: S608  # nosec B608
            {"cutoff": cutoff},
        ).rowcount
        feedback = conn.execute(_stale_feedback(cutoff)).rowcount
        partitions.ensure_ahead(conn)
    return PruneResult(cutoff, dropped, deleted, feedback)
