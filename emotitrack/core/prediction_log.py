"""The prediction log's schema, record and reader: what serving writes and monitoring reads.

Serving's durable writer (``serving.prediction_log``) and monitoring's window queries both go
through these definitions, so the table layout lives in one place; its DDL lives in the
migrations (``emotitrack.core.log_migrations``, see docs/prediction-log.md). With
``EMOTITRACK_STORE_TEXT`` off a record carries no text, only its SHA-256 and its descriptors;
``text`` is then stored empty (not NULL: logs created before that option have ``text NOT NULL``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from emotitrack.core import log_migrations
from emotitrack.core.descriptors import DESCRIPTOR_COLUMNS

SOURCES = ("api", "batch", "shadow")  # who wrote a record: the API, `emotitrack score`, a shadow
METADATA = sa.MetaData()
# The logical layout for queries; the DDL (indexes, partitions, the per-dialect primary key) is
# the migrations'. On PostgreSQL the primary key is (request_id, created_at): a partitioned
# table's unique keys must hold its partition key.
PREDICTIONS = sa.Table(
    "predictions",
    METADATA,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON object label -> probability
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("endpoint", sa.String(32), nullable=False),
    # Set only when the text itself is not stored (EMOTITRACK_STORE_TEXT=false):
    sa.Column("text_sha256", sa.String(64), nullable=True),
    *(sa.Column(name, sa.Float, nullable=True) for name in DESCRIPTOR_COLUMNS),
    sa.Column("source", sa.String(16), nullable=False, server_default="api"),
    sa.Column("batch_id", sa.String(64), nullable=True),
)
# What a row of a log written before the column holds (a reader may meet a log not migrated
# yet: the API migrates it when it starts); the other added columns read as NULL.
COLUMN_DEFAULTS = {"source": "api"}
POSTGRES_PRIMARY_KEY = ("request_id", "created_at")
FEEDBACK = sa.Table(
    "feedback",
    METADATA,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


def new_request_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class PredictionRecord:
    """One acknowledged prediction. ``text`` is None when only its hash and descriptors are kept."""

    request_id: str
    created_at: datetime
    text: str | None
    label: str
    confidence: float
    probabilities: dict[str, float]
    model_name: str
    model_version: str
    latency_ms: float
    endpoint: str
    text_sha256: str | None = None
    descriptors: dict[str, float] | None = None
    source: str = "api"
    batch_id: str | None = None

    def to_row(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies, and this runs once per prediction.
        row = {
            "request_id": self.request_id,
            "created_at": self.created_at,
            "text": "" if self.text is None else self.text,
            "label": self.label,
            "confidence": self.confidence,
            "probabilities": json.dumps(self.probabilities),
            "model_name": self.model_name,
            "model_version": self.model_version,
            "latency_ms": self.latency_ms,
            "endpoint": self.endpoint,
            "text_sha256": self.text_sha256,
            "source": self.source,
            "batch_id": self.batch_id,
        }
        for name in DESCRIPTOR_COLUMNS:
            row[name] = self.descriptors[name] if self.descriptors else None
        return row

    def to_json(self) -> str:
        row = self.to_row()
        row["created_at"] = self.created_at.isoformat()
        return json.dumps(row)

    @classmethod
    def from_json(cls, line: str) -> PredictionRecord:
        """A spill-file line, also one written before hashes and descriptors existed."""
        row = json.loads(line)
        row["created_at"] = datetime.fromisoformat(row["created_at"])
        row["probabilities"] = json.loads(row["probabilities"])
        descriptors = {name: row.pop(name) for name in DESCRIPTOR_COLUMNS if name in row}
        row["descriptors"] = descriptors if row.get("text_sha256") else None
        if row["text"] == "" and row.get("text_sha256"):
            row["text"] = None
        return cls(**row)


def create_store_engine(url: str) -> sa.Engine:
    """An engine with short timeouts, so a dead store is noticed fast rather than hanging."""
    url = sqlalchemy_url(url)
    args: dict[str, Any] = {}
    if url.startswith("postgresql"):
        args = {"connect_args": {"connect_timeout": 3}, "pool_pre_ping": True}
    elif url.startswith("sqlite") and "timeout" not in sa.engine.make_url(url).query:
        args = {"connect_args": {"timeout": 5}}
    engine = sa.create_engine(url, **args)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_wal)
        sa.event.listen(engine, "connect", _sqlite_functions)
    return engine


def sqlalchemy_url(url: str) -> str:
    """``postgres://`` (what Heroku and others put in DATABASE_URL) as SQLAlchemy 2 names it:
    ``postgresql://``; it refuses the short scheme."""
    scheme, sep, rest = url.partition("://")
    if scheme == "postgres" or scheme.startswith("postgres+"):
        return f"postgresql{scheme.removeprefix('postgres')}{sep}{rest}"
    return url


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    """WAL: monitoring reads while the API writes, and a commit is an append, not a journal
    rewrite; synchronous=NORMAL is durable across process crashes (what a SIGKILL is)."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def sample_key(request_id: str, seed: int) -> int:
    """SQLite's sampling key (``emotitrack_sample_key``): a seeded 63-bit hash of the id."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "big") >> 1  # SQLite integers are signed 64-bit


def _sqlite_functions(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.create_function("emotitrack_sample_key", 2, sample_key, deterministic=True)


def insert_ignoring_duplicates(engine: sa.Engine, table: sa.Table) -> Any:
    """An INSERT that skips records already stored, so a replay never duplicates one. On
    PostgreSQL the predictions' key is (request_id, created_at): a replayed record carries the
    created_at it was first written with (spill files keep it to the microsecond), so the pair
    identifies it as the id alone does."""
    if engine.dialect.name == "postgresql":
        keys = list(POSTGRES_PRIMARY_KEY) if table is PREDICTIONS else ["request_id"]
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=["request_id"])


def prepare_log(engine: sa.Engine) -> None:
    """Create the log's tables, or migrate a log written by an older version, to the newest
    schema (Alembic, ``emotitrack.core.log_migrations``); on PostgreSQL also create the day
    partitions ahead. Cheap when nothing is to do, so the writer calls it on every (re)connect."""
    log_migrations.upgrade(engine)


def redacted_url(url: str) -> str:
    """The URL with its password masked, for logs and error messages."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


class PredictionReader:
    """Read access to the prediction log, for monitoring."""

    def __init__(self, url: str) -> None:
        self.engine = create_store_engine(url)

    def read(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        last: int | None = None,
        model_version: str | None = None,
        source: str | None = None,
        batch_id: str | None = None,
    ) -> pd.DataFrame:
        """Predictions (newest window first selected, returned oldest first), with the
        feedback label joined as ``true_label`` where one was given. The whole window comes
        into memory: for windows of any size use ``emotitrack.core.log_queries``."""
        columns = log_columns(self.engine)
        query = sa.select(*columns.values(), FEEDBACK.c.label.label("true_label")).select_from(
            PREDICTIONS.outerjoin(FEEDBACK, PREDICTIONS.c.request_id == FEEDBACK.c.request_id)
        )
        filters = window_filters(
            columns,
            since=since,
            until=until,
            model_version=model_version,
            source=source,
            batch_id=batch_id,
        )
        query = query.where(*filters).order_by(
            PREDICTIONS.c.created_at.desc(), PREDICTIONS.c.request_id.desc()
        )
        if last is not None:
            query = query.limit(last)
        with self.engine.connect() as conn:
            frame = records_frame(conn.execute(query).mappings().all())
        return frame.iloc[::-1].reset_index(drop=True)


def log_columns(engine: sa.Engine | sa.Connection) -> dict[str, sa.ColumnElement[Any]]:
    """The predictions' columns by name; a column the log does not have yet (a log from before
    it, not migrated) as the value its rows would hold."""
    present = {c["name"] for c in sa.inspect(engine).get_columns(PREDICTIONS.name)}
    return {
        c.name: c
        if c.name in present
        else sa.literal(COLUMN_DEFAULTS.get(c.name), c.type).label(c.name)
        for c in PREDICTIONS.c
    }


def window_filters(
    columns: dict[str, sa.ColumnElement[Any]],
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model_version: str | None = None,
    source: str | None = None,
    batch_id: str | None = None,
) -> list[sa.ColumnElement[bool]]:
    """WHERE clauses of a window: ``since`` inclusive, ``until`` exclusive. Without a
    ``source``, every source but shadows: a shadow's answers reached no client."""
    filters: list[sa.ColumnElement[bool]] = []
    if source is None:
        filters.append(columns["source"] != "shadow")
    if since is not None:
        filters.append(PREDICTIONS.c.created_at >= since)
    if until is not None:
        filters.append(PREDICTIONS.c.created_at < until)
    for name, value in (("model_version", model_version), ("source", source)):
        if value is not None:
            filters.append(columns[name] == value)
    if batch_id is not None:
        filters.append(columns["batch_id"] == batch_id)
    return filters


def records_frame(rows: Any) -> pd.DataFrame:
    """Rows of the predictions (and ``true_label``) as monitoring reads them: probabilities
    parsed, texts that were not stored as missing (not as empty texts)."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=[*PREDICTIONS.c.keys(), "true_label"])
    frame["probabilities"] = frame["probabilities"].map(json.loads)
    frame["text"] = frame["text"].where(frame["text"] != "", None)
    return frame
