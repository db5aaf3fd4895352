"""The prediction log's schema, record and reader: what serving writes and monitoring reads.

Serving's durable writer (``serving.prediction_log``) and monitoring's window queries both go
through these definitions, so the table layout lives in one place. With
``EMOTITRACK_STORE_TEXT`` off a record carries no text, only its SHA-256 and its descriptors;
``text`` is then stored empty (not NULL: logs created before that option have ``text NOT NULL``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from emotitrack.core.descriptors import DESCRIPTOR_COLUMNS

METADATA = sa.MetaData()
PREDICTIONS = sa.Table(
    "predictions",
    METADATA,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("label", sa.String(64), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("probabilities", sa.Text, nullable=False),  # JSON object label -> probability
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=False, index=True),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("endpoint", sa.String(32), nullable=False),
    # Set only when the text itself is not stored (EMOTITRACK_STORE_TEXT=false):
    sa.Column("text_sha256", sa.String(64), nullable=True),
    *(sa.Column(name, sa.Float, nullable=True) for name in DESCRIPTOR_COLUMNS),
)
ADDED_COLUMNS = ("text_sha256", *DESCRIPTOR_COLUMNS)  # absent from logs written before them
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


def insert_ignoring_duplicates(engine: sa.Engine, table: sa.Table) -> Any:
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=["request_id"])


def create_tables(engine: sa.Engine) -> None:
    """Create the log's tables, or bring a log written by an older version up to date."""
    METADATA.create_all(engine)
    _add_missing_columns(engine)


def _add_missing_columns(engine: sa.Engine) -> None:
    """Bring a log created by an older version up to date: the added columns are nullable, so
    ``ADD COLUMN`` is enough on SQLite and PostgreSQL, and old rows keep their texts."""
    present = {c["name"] for c in sa.inspect(engine).get_columns(PREDICTIONS.name)}
    with engine.begin() as conn:
        for name in ADDED_COLUMNS:
            if name not in present:
                column = PREDICTIONS.c[name]
                kind = column.type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {PREDICTIONS.name} ADD COLUMN {name} {kind}"))


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
    ) -> pd.DataFrame:
        """Predictions (newest window first selected, returned oldest first), with the
        feedback label joined as ``true_label`` where one was given."""
        present = {c["name"] for c in sa.inspect(self.engine).get_columns(PREDICTIONS.name)}
        columns = [c for c in PREDICTIONS.c if c.name in present]
        query = sa.select(*columns, FEEDBACK.c.label.label("true_label")).select_from(
            PREDICTIONS.outerjoin(FEEDBACK, PREDICTIONS.c.request_id == FEEDBACK.c.request_id)
        )
        if since is not None:
            query = query.where(PREDICTIONS.c.created_at >= since)
        if until is not None:
            query = query.where(PREDICTIONS.c.created_at < until)
        if model_version is not None:
            query = query.where(PREDICTIONS.c.model_version == model_version)
        query = query.order_by(PREDICTIONS.c.created_at.desc())
        if last is not None:
            query = query.limit(last)
        with self.engine.connect() as conn:
            frame = pd.DataFrame(conn.execute(query).mappings().all())
        if frame.empty:
            return pd.DataFrame(columns=[*PREDICTIONS.c.keys(), "true_label"])
        frame["probabilities"] = frame["probabilities"].map(json.loads)
        for name in ADDED_COLUMNS:  # a log written before these columns existed
            if name not in frame:
                frame[name] = None
        # Texts that were not stored read as missing, not as empty texts.
        frame["text"] = frame["text"].where(frame["text"] != "", None)
        return frame.iloc[::-1].reset_index(drop=True)
