"""The prediction log's schema migrations (Alembic), run from code: no ``alembic.ini`` needed.

``upgrade(engine)`` brings any log to the newest schema: a new store gets every table, a log
created before migrations existed (by ``create_all``, with or without the hash and descriptor
columns) is brought up to revision 1 and then migrated like any other. The revision lives in
its own table, ``emotitrack_log_version``: MLflow keeps ``alembic_version`` for its own schema,
and the two may share a database. See docs/prediction-log.md.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.util import CommandError

from emotitrack.core.log_migrations import partitions

VERSION_TABLE = "emotitrack_log_version"
HEAD = "0002"
# One preparer at a time: API workers starting together would both create the tables.
LOCK_KEY = 0x656D6F74  # "emot", a pg_advisory_xact_lock key


class LogSchemaUnknown(sa.exc.SQLAlchemyError):
    """The log was migrated by a newer release (a revision this code does not know): a store
    problem like any other for the callers, which already handle SQLAlchemy's errors."""


def current_revision(connection: sa.Connection) -> str | None:
    """The log's revision; None for an empty store or a log from before migrations."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> None:
    """Migrate the log to ``revision``; on PostgreSQL also create the day partitions ahead."""
    with engine.connect() as conn:
        up_to_date = revision == "head" and current_revision(conn) == HEAD
    if up_to_date and engine.dialect.name != "postgresql":
        return
    with engine.begin() as conn:
        _lock(conn)
        if not up_to_date:
            try:
                command.upgrade(_config(conn), revision)
            except CommandError as exc:  # e.g. "Can't locate revision '0003'" after a rollback
                raise LogSchemaUnknown(
                    f"the prediction log's schema is newer than this release knows ({exc}); "
                    "run the release that migrated it, or a newer one"
                ) from exc
        if engine.dialect.name == "postgresql" and current_revision(conn) == HEAD:
            partitions.ensure_ahead(conn)


def downgrade(engine: sa.Engine, revision: str) -> None:
    with engine.begin() as conn:
        _lock(conn)
        command.downgrade(_config(conn), revision)


def _lock(conn: sa.Connection) -> None:
    """Serialise preparers: an advisory lock on PostgreSQL, a write transaction on SQLite."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})
    elif conn.dialect.name == "sqlite":
        # pysqlite opens no transaction before DDL; this one makes the migration atomic too.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _config(conn: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = conn
    return config
