"""The prediction log on a real PostgreSQL: an existing log of the pre-migration schema migrated
into day partitions, the writer's replays still exactly once, window queries in the database,
partitions created ahead and dropped by retention."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from emotitrack.core import log_migrations
from emotitrack.core.log_migrations import partitions
from emotitrack.core.log_queries import (
    WindowQuery,
    prune,
    window_aggregates,
    window_sample,
)
from emotitrack.core.prediction_log import (
    PredictionReader,
    PredictionRecord,
    create_store_engine,
    new_request_id,
    prepare_log,
)
from harness.servers import PostgresCluster, postgres_bin, postgres_cluster
from serving.prediction_log import PredictionLog

# The table as the release before migrations created it (create_all + its indexes), and the
# feedback table, as PostgreSQL holds them.
BEFORE_MIGRATIONS = [
    """CREATE TABLE predictions (
        request_id VARCHAR(64) NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL,
        text TEXT NOT NULL, label VARCHAR(64) NOT NULL, confidence FLOAT NOT NULL,
        probabilities TEXT NOT NULL, model_name VARCHAR(256) NOT NULL,
        model_version VARCHAR(64) NOT NULL, latency_ms FLOAT NOT NULL, endpoint VARCHAR(32) NOT NULL,
        text_sha256 VARCHAR(64), text_length FLOAT, word_count FLOAT, oov_share FLOAT,
        non_letter_share FLOAT, PRIMARY KEY (request_id))""",
    "CREATE INDEX ix_predictions_created_at ON predictions (created_at)",
    "CREATE INDEX ix_predictions_model_version ON predictions (model_version)",
    """CREATE TABLE feedback (request_id VARCHAR(64) NOT NULL, label VARCHAR(64) NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE NOT NULL, PRIMARY KEY (request_id))""",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PostgresCluster]:
    try:
        postgres_bin()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    with postgres_cluster() as running:
        yield running


@pytest.fixture
def log_url(cluster: PostgresCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database per test on the module's cluster."""
    name = request.node.name.lower().replace("[", "_").replace("]", "")[:60]
    admin = sa.create_engine(
        cluster.url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield cluster.url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    admin.dispose()


def record(i: int, at: datetime, **fields: object) -> PredictionRecord:
    label = "positive" if i % 3 else "negative"
    confidence = 0.5 + (i * 37 % 50) / 100
    made = PredictionRecord(
        request_id=new_request_id(),
        created_at=at,
        text=f"review {i}",
        label=label,
        confidence=confidence,
        probabilities={label: confidence},
        model_name="m",
        model_version="1",
        latency_ms=1.0,
        endpoint="predict",
    )
    return replace(made, **fields)  # type: ignore[arg-type]


def write(url: str, records: list[PredictionRecord], spill: Path) -> PredictionLog:
    log = PredictionLog(url, spill, flush_interval_s=0.05)
    log.start()
    log.submit(records)
    log.close()
    assert log.counters.written == len(records), log.counters
    return log


def partition_of(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT request_id, tableoid::regclass::text FROM predictions")
        return dict(rows.all())


def test_an_existing_log_is_migrated_into_day_partitions(log_url: str, tmp_path: Path) -> None:
    engine = create_store_engine(log_url)
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    old_days = [today - timedelta(days=40), today - timedelta(days=39, hours=3)]
    with engine.begin() as conn:
        for statement in BEFORE_MIGRATIONS:
            conn.exec_driver_sql(statement)
        for n, at in enumerate([*old_days, today]):
            conn.execute(
                sa.text(
                    "INSERT INTO predictions (request_id, created_at, text, label, confidence, "
                    "probabilities, model_name, model_version, latency_ms, endpoint) VALUES "
                    "(:id, :at, 'an old review', 'positive', 0.9, '{}', 'm', '1', 2.0, 'predict')"
                ),
                {"id": f"old-{n}", "at": at},
            )
        conn.exec_driver_sql("INSERT INTO feedback VALUES ('old-2', 'negative', now())")

    new = [record(i, datetime.now(UTC)) for i in range(5)]
    write(log_url, new, tmp_path / "spill")  # the API's writer migrates when it starts

    with engine.connect() as conn:
        assert log_migrations.current_revision(conn) == log_migrations.HEAD
        days = partitions.partition_days(conn)
        kind = conn.exec_driver_sql(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = 'predictions'::regclass"
        ).scalar()
        key = conn.exec_driver_sql(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'predictions'::regclass AND contype = 'p'"
        ).scalar()
    assert kind == "r" and key == "PRIMARY KEY (request_id, created_at)"
    wanted = {at.date() for at in old_days}
    wanted |= {today.date() + timedelta(days=n) for n in range(-1, partitions.DAYS_AHEAD + 1)}
    assert set(days) == wanted
    where = partition_of(engine)
    assert where["old-0"] == partitions.partition_name(old_days[0].date())
    assert where["old-1"] == partitions.partition_name(old_days[1].date())
    frame = PredictionReader(log_url).read().set_index("request_id")
    assert len(frame) == 8 and set(frame["source"]) == {"api"}
    assert frame.loc["old-2", "true_label"] == "negative"
    assert frame.loc["old-0", "text"] == "an old review"


def test_replays_stay_exactly_once_on_the_partitioned_table(log_url: str, tmp_path: Path) -> None:
    records = [record(i, datetime.now(UTC) - timedelta(minutes=i)) for i in range(20)]
    spill = tmp_path / "spill"
    write(log_url, records[:12], spill)
    # a crash after the write landed: the same records (same ids and created_at, as in the
    # spill file's JSON) offered again, with new ones
    again = [PredictionRecord.from_json(r.to_json()) for r in records]
    log = PredictionLog(log_url, spill, flush_interval_s=0.05)
    log.start()
    log.submit(again)
    log.close()
    frame = PredictionReader(log_url).read()
    assert sorted(frame["request_id"]) == sorted(r.request_id for r in records)


def test_a_day_without_its_partition_lands_in_the_default_and_moves_later(
    log_url: str, tmp_path: Path
) -> None:
    far = datetime.now(UTC) + timedelta(days=partitions.DAYS_AHEAD + 3)
    late = record(1, far, source="batch", batch_id="b-1")
    write(log_url, [late], tmp_path / "spill")
    engine = create_store_engine(log_url)
    assert partition_of(engine)[late.request_id] == partitions.DEFAULT_PARTITION
    with engine.begin() as conn:
        assert partitions.ensure_days(conn, [far.date()]) == [far.date()]
    assert partition_of(engine)[late.request_id] == partitions.partition_name(far.date())
    frame = PredictionReader(log_url).read(batch_id="b-1")
    assert frame["source"].tolist() == ["batch"]


def test_window_queries_run_in_the_database(log_url: str, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    records = [record(i, now - timedelta(minutes=7 * i)) for i in range(400)]  # ~47 h
    records += [
        record(i, now - timedelta(minutes=i), source="batch", batch_id="b") for i in range(30)
    ]
    log = write(log_url, records, tmp_path / "spill")
    assert log.add_feedback(records[3].request_id, "negative")
    query = WindowQuery(
        since=now - timedelta(hours=24), until=now + timedelta(seconds=1), source="api"
    )
    everything = PredictionReader(log_url).read(since=query.since, until=query.until, source="api")
    engine = create_store_engine(log_url)
    with engine.connect() as conn:
        got = window_aggregates(conn, query)
        sample = window_sample(conn, query, 50, seed=3)
        same = window_sample(conn, query, 50, seed=3)
        # the plan reads only the window's day partitions
        plan = "\n".join(
            conn.exec_driver_sql(
                "EXPLAIN SELECT count(*) FROM predictions WHERE created_at >= %(since)s "
                "AND created_at < %(until)s",
                {"since": query.since, "until": query.until},
            ).scalars()
        )
    assert got.rows == len(everything) and got.rows > 150
    assert got.label_counts == everything["label"].value_counts().to_dict()
    assert got.mean_confidence == pytest.approx(everything["confidence"].mean())
    assert got.feedback_rows == 1 and got.feedback_correct == int(records[3].label == "negative")
    assert len(sample) == 50 and list(sample["request_id"]) == list(same["request_id"])
    assert set(sample["request_id"]) <= set(everything["request_id"])
    assert list(sample.columns) == list(everything.columns)
    scanned = set(re.findall(rf"{partitions.TABLE}_(?:p\d{{8}}|default)\b", plan))
    days = {partitions.partition_name((now - timedelta(days=n)).date()) for n in (0, 1)}
    assert scanned == days, plan


def test_prune_drops_whole_days_and_creates_the_days_ahead(log_url: str, tmp_path: Path) -> None:
    engine = create_store_engine(log_url)
    prepare_log(engine)
    today = datetime.now(UTC).date()
    old = [today - timedelta(days=n) for n in (9, 8, 3)]
    with engine.begin() as conn:
        partitions.ensure_days(conn, old)  # a log that has been written for days
    at = [
        datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5) for day in old
    ]
    records = [record(i, at[i % 3]) for i in range(30)] + [record(99, datetime.now(UTC))]
    write(log_url, records, tmp_path / "spill")
    started = time.monotonic()
    result = prune(engine, keep_days=5)
    assert time.monotonic() - started < 5
    assert result.dropped_partitions == [partitions.partition_name(d) for d in old[:2]]
    with engine.connect() as conn:
        days = partitions.partition_days(conn)
    assert old[2] in days and old[0] not in days and today + timedelta(days=7) in days
    left = PredictionReader(log_url).read()
    assert len(left) == 11


def test_a_migrated_log_goes_back_to_revision_one_and_up_again(
    log_url: str, tmp_path: Path
) -> None:
    engine = create_store_engine(log_url)
    write_one = [record(1, datetime.now(UTC))]
    write(log_url, write_one, tmp_path / "spill")
    log_migrations.downgrade(engine, "0001")
    with engine.connect() as conn:
        assert not partitions.is_partitioned(conn)
    prepare_log(engine)
    with engine.connect() as conn:
        assert partitions.is_partitioned(conn)
    assert PredictionReader(log_url).read()["request_id"].tolist() == [write_one[0].request_id]
