"""The log as the releases before migrations created it (``create_all`` + added columns).

A store without tables gets them; a log those releases created, with or without the text hash
and descriptor columns, gets what it lacks: they are nullable, so ``ADD COLUMN`` keeps every
row. The layout is written out here, not taken from the live metadata, so this revision means
the same schema forever.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DESCRIPTORS = ("text_length", "word_count", "oov_share", "non_letter_share")


def _added() -> list[sa.Column[object]]:
    """The nullable columns added after the first release (fresh objects: a Column has one table)."""
    return [sa.Column("text_sha256", sa.String(64)), *(sa.Column(n, sa.Float) for n in DESCRIPTORS)]


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if inspector.has_table("predictions"):
        present = {c["name"] for c in inspector.get_columns("predictions")}
        for column in _added():
            if column.name not in present:
                op.add_column("predictions", column)
    else:
        op.create_table(
            "predictions",
            sa.Column("request_id", sa.String(64), primary_key=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("text", sa.Text, nullable=False),
            sa.Column("label", sa.String(64), nullable=False),
            sa.Column("confidence", sa.Float, nullable=False),
            sa.Column("probabilities", sa.Text, nullable=False),
            sa.Column("model_name", sa.String(256), nullable=False),
            sa.Column("model_version", sa.String(64), nullable=False),
            sa.Column("latency_ms", sa.Float, nullable=False),
            sa.Column("endpoint", sa.String(32), nullable=False),
            *_added(),
        )
        op.create_index("ix_predictions_created_at", "predictions", ["created_at"])
        op.create_index("ix_predictions_model_version", "predictions", ["model_version"])
    if not inspector.has_table("feedback"):
        op.create_table(
            "feedback",
            sa.Column("request_id", sa.String(64), primary_key=True),
            sa.Column("label", sa.String(64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
