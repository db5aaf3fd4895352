"""Day partitions of the PostgreSQL prediction log: created ahead, dropped by retention.

``predictions`` is partitioned by range of ``created_at``, one partition per UTC day
(``predictions_pYYYYMMDD``), plus ``predictions_default`` for any row no day partition takes
(a writer running past the days created ahead, a replay of records from a pruned day), so an
insert never fails for want of a partition. The writer creates ``DAYS_AHEAD`` days ahead on
every (re)connect and ``emotitrack prune`` does on every run; a day created later moves the
rows the default partition holds for it into its own partition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa

TABLE = "predictions"
DEFAULT_PARTITION = f"{TABLE}_default"
DAYS_AHEAD = 7
_NAME = re.compile(rf"^{TABLE}_p(\d{{8}})$")


def partition_name(day: date) -> str:
    return f"{TABLE}_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def is_partitioned(conn: sa.Connection) -> bool:
    found = conn.execute(
        sa.text(
            "SELECT 1 FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid "
            "WHERE c.oid = to_regclass(:table)"
        ),
        {"table": TABLE},
    ).first()
    return found is not None


def partition_days(conn: sa.Connection) -> list[date]:
    """The days that have a partition, oldest first."""
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:table)"
        ),
        {"table": TABLE},
    ).scalars()
    days = []
    for name in names:
        match = _NAME.match(name)
        if match:
            days.append(datetime.strptime(match.group(1), "%Y%m%d").date())
    return sorted(days)


def ensure_days(conn: sa.Connection, days: Iterable[date]) -> list[date]:
    """Create the missing partitions of ``days``; the caller holds the preparers' lock."""
    have = set(partition_days(conn))
    created = []
    for day in sorted(set(days) - have):
        _create(conn, day)
        created.append(day)
    return created


def ensure_ahead(conn: sa.Connection, today: date | None = None) -> list[date]:
    """Yesterday (a late writer), today and ``DAYS_AHEAD`` days after it."""
    today = today or datetime.now(UTC).date()
    return ensure_days(conn, (today + timedelta(days=n) for n in range(-1, DAYS_AHEAD + 1)))


def _create(conn: sa.Connection, day: date) -> None:
    """A day's partition, taking over the rows the default partition holds for that day.
    Created apart and attached: attaching takes a lighter lock on the table than
    ``CREATE ... PARTITION OF`` (writers keep writing), and only the default is checked."""
    name = partition_name(day)
    bounds = {"lo": day_start(day), "hi": day_start(day + timedelta(days=1))}
    conn.execute(sa.text(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)"))
    conn.execute(
        sa.text(
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} "  # noqa: S608  # nosec B608 - our names
            "WHERE created_at >= :lo AND created_at < :hi RETURNING *) "
            f"INSERT INTO {name} SELECT * FROM moved"
        ),
        bounds,
    )
    # The bounds as literals: DDL takes no bind parameters.
    lo, hi = (f"'{bounds[k].isoformat()}'" for k in ("lo", "hi"))
    conn.execute(
        sa.text(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
    )
