"""Production volume: who wrote a record (``source``, ``batch_id``), indexes for the window
queries, and on PostgreSQL the table partitioned by day.

SQLite: two columns added (``source`` NOT NULL with its default, so old rows read 'api'), the
single-column indexes replaced by one the window queries can read without the table.

PostgreSQL: a partitioned table cannot be made from a plain one in place, so the log is copied
into a new ``predictions`` PARTITIONED BY RANGE (created_at), one partition per day that holds
rows, the days ahead, and a default partition. Its primary key is (request_id, created_at): the
unique keys of a partitioned table must hold the partition key. The copy runs once, in the
migration's transaction: a crash leaves the old table as it was.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from emotitrack.core.log_migrations import partitions

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DESCRIPTORS = ("text_length", "word_count", "oov_share", "non_letter_share")
COLUMNS_V1 = (
    "request_id, created_at, text, label, confidence, probabilities, model_name, model_version, "
    "latency_ms, endpoint, text_sha256, " + ", ".join(DESCRIPTORS)
)
# Everything the window queries read, so on PostgreSQL they are index-only scans.
WINDOW_INCLUDE = ("request_id", "label", "confidence", "model_version", "source", "batch_id")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        _partition_postgres()
        return
    op.add_column(
        "predictions", sa.Column("source", sa.String(16), nullable=False, server_default="api")
    )
    op.add_column("predictions", sa.Column("batch_id", sa.String(64), nullable=True))
    # absent from a log that the first release created (create_all adds no index to a table)
    op.execute("DROP INDEX IF EXISTS ix_predictions_created_at")
    op.execute("DROP INDEX IF EXISTS ix_predictions_model_version")
    # SQLite has no INCLUDE: the same columns after the key make the index covering.
    op.create_index(
        "ix_predictions_window", "predictions", ["created_at", *WINDOW_INCLUDE[1:], "request_id"]
    )
    op.create_index(
        "ix_predictions_batch",
        "predictions",
        ["batch_id", "created_at"],
        sqlite_where=sa.text("batch_id IS NOT NULL"),
    )


def _partition_postgres() -> None:
    bind = op.get_bind()
    op.execute("ALTER TABLE predictions RENAME TO predictions_v1")
    op.execute(
        "ALTER TABLE predictions_v1 RENAME CONSTRAINT predictions_pkey TO predictions_v1_pkey"
    )
    op.execute("DROP INDEX IF EXISTS ix_predictions_created_at")
    op.execute("DROP INDEX IF EXISTS ix_predictions_model_version")
    descriptors = ", ".join(f"{name} DOUBLE PRECISION" for name in DESCRIPTORS)
    op.execute(
        f"""CREATE TABLE predictions (
            request_id VARCHAR(64) NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            text TEXT NOT NULL,
            label VARCHAR(64) NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            probabilities TEXT NOT NULL,
            model_name VARCHAR(256) NOT NULL,
            model_version VARCHAR(64) NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            endpoint VARCHAR(32) NOT NULL,
            text_sha256 VARCHAR(64),
            {descriptors},
            source VARCHAR(16) NOT NULL DEFAULT 'api',
            batch_id VARCHAR(64),
            CONSTRAINT predictions_pkey PRIMARY KEY (request_id, created_at)
        ) PARTITION BY RANGE (created_at)"""
    )
    op.execute(f"CREATE TABLE {partitions.DEFAULT_PARTITION} PARTITION OF predictions DEFAULT")
    op.execute(
        "CREATE INDEX ix_predictions_window ON predictions (created_at) "
        f"INCLUDE ({', '.join(WINDOW_INCLUDE)})"
    )
    op.execute(
        "CREATE INDEX ix_predictions_batch ON predictions (batch_id, created_at) "
        "WHERE batch_id IS NOT NULL"
    )
    days = bind.execute(
        sa.text("SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date FROM predictions_v1")
    ).scalars()
    partitions.ensure_days(bind, days)
    partitions.ensure_ahead(bind, datetime.now(UTC).date())
    copy = f"INSERT INTO predictions ({COLUMNS_V1}) SELECT {COLUMNS_V1} FROM predictions_v1"  # noqa: S608  # nosec B608
    op.execute(copy)
    op.execute("DROP TABLE predictions_v1")
    op.execute("ANALYZE predictions")


def downgrade() -> None:
    # Revision 1 has no source: batch and shadow rows would read as served traffic to the
    # release rolled back to, so they go (docs/prediction-log.md#migrations).
    op.execute("DELETE FROM predictions WHERE source <> 'api'")
    if op.get_bind().dialect.name == "postgresql":
        _unpartition_postgres()
        return
    op.drop_index("ix_predictions_batch", "predictions")
    op.drop_index("ix_predictions_window", "predictions")
    with op.batch_alter_table("predictions") as table:
        table.drop_column("batch_id")
        table.drop_column("source")
    op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
    op.create_index("ix_predictions_model_version", "predictions", ["model_version"])


def _unpartition_postgres() -> None:
    descriptors = ", ".join(f"{name} DOUBLE PRECISION" for name in DESCRIPTORS)
    op.execute(
        f"""CREATE TABLE predictions_v1 (
            request_id VARCHAR(64) NOT NULL CONSTRAINT predictions_v1_pkey PRIMARY KEY,
            created_at TIMESTAMP WITH TIME ZONE NOT NULL,
            text TEXT NOT NULL,
            label VARCHAR(64) NOT NULL,
            confidence DOUBLE PRECISION NOT NULL,
            probabilities TEXT NOT NULL,
            model_name VARCHAR(256) NOT NULL,
            model_version VARCHAR(64) NOT NULL,
            latency_ms DOUBLE PRECISION NOT NULL,
            endpoint VARCHAR(32) NOT NULL,
            text_sha256 VARCHAR(64),
            {descriptors}
        )"""
    )
    copy = (
        f"INSERT INTO predictions_v1 ({COLUMNS_V1}) SELECT {COLUMNS_V1} FROM predictions "  # noqa: S608  # nosec B608
        "ON CONFLICT (request_id) DO NOTHING"
    )
    op.execute(copy)
    op.execute("DROP TABLE predictions")  # its partitions go with it
    op.execute("ALTER TABLE predictions_v1 RENAME TO predictions")
    op.execute("ALTER TABLE predictions RENAME CONSTRAINT predictions_v1_pkey TO predictions_pkey")
    op.execute("CREATE INDEX ix_predictions_created_at ON predictions (created_at)")
    op.execute("CREATE INDEX ix_predictions_model_version ON predictions (model_version)")
