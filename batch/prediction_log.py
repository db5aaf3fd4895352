"""A scored table written to the prediction log (``source`` = ``batch``), so that
``emotitrack monitor --batch-id ID`` can compare a new data set with the Production model's
training reference before anyone trusts its scores.

The rows are read back from the finished output, whichever engine wrote it, in record batches:
memory stays flat. Request ids derive from the batch id and the row's position, so a re-run of
the same batch id stores every row once."""

from __future__ import annotations

import hashlib
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import sqlalchemy as sa

from batch.model import JobModel
from emotitrack.core.descriptors import TextDescriber
from emotitrack.core.model_format import PROBABILITY_PREFIX, read_files
from emotitrack.core.prediction_log import (
    PREDICTIONS,
    PredictionRecord,
    create_store_engine,
    insert_ignoring_duplicates,
    prepare_log,
    redacted_url,
)

ENDPOINT = "batch"  # the log's endpoint column for rows no HTTP route answered
_IDS = uuid.UUID("6f1d8c1e-3c2a-4a59-9a57-2b0e4f1f7a10")  # namespace of batch rows' request ids


def new_batch_id(now: datetime | None = None) -> str:
    """A readable, unique id: ``batch-20261202T101500-1a2b3c``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S")
    return f"batch-{stamp}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class Logged:
    batch_id: str
    rows: int  # predictions stored (rows with an error have none)
    store: str  # the store's URL without its password


class LogUnavailable(RuntimeError):
    """The prediction log cannot be opened; the message says which and why, in one line."""


def open_log(store_url: str) -> sa.Engine:
    """The log's engine, its schema brought up to date: checked before any row is scored."""
    try:
        engine = create_store_engine(store_url)
    except sa.exc.ArgumentError as exc:
        raise LogUnavailable(  # not echoed: it may hold a password
            "EMOTITRACK_PREDICTION_LOG_URL is not a SQLAlchemy database URL"
        ) from exc
    try:
        prepare_log(engine)
    except sa.exc.SQLAlchemyError as exc:
        engine.dispose()
        cause = getattr(exc, "orig", None) or exc  # the driver's own message, when there is one
        reason = (str(cause).strip() or type(cause).__name__).splitlines()[0]
        raise LogUnavailable(
            f"cannot open the prediction log {redacted_url(store_url)}: {reason}"
        ) from exc
    return engine


def log_output(
    output: Path,
    model: JobModel,
    *,
    engine: sa.Engine,
    batch_id: str,
    text_column: str,
    store_text: bool,
    chunk_rows: int = 2_000,
) -> Logged:
    """Store every scored row of ``output`` (a Parquet file, or Spark's folder of part files)."""
    from tqdm import tqdm

    try:
        describer = TextDescriber.for_model(read_files(model.files))
        insert = insert_ignoring_duplicates(engine, PREDICTIONS)
        created_at = _batch_time(engine, batch_id)
        dataset = ds.dataset(output, format="parquet")
        stored = 0
        with tqdm(
            total=dataset.count_rows(), unit="rows", unit_scale=True, desc="prediction log",
            disable=None, file=sys.stderr,
        ) as bar:  # fmt: skip
            position = 0
            for batch in dataset.to_batches(
                columns=[text_column, "label", "confidence", *_probability_columns(model)],
                batch_size=chunk_rows,
            ):
                records = list(
                    _records(batch, position, model, describer, batch_id, created_at, store_text)
                )
                if records:
                    with engine.begin() as conn:
                        conn.execute(insert, [r.to_row() for r in records])
                stored += len(records)
                position += batch.num_rows
                bar.update(batch.num_rows)
        return Logged(batch_id, stored, redacted_url(engine.url.render_as_string()))
    finally:
        engine.dispose()


def _batch_time(engine: sa.Engine, batch_id: str) -> datetime:
    """The time of the batch's rows already stored, else now: on PostgreSQL the key is
    (request_id, created_at), so a re-run must repeat both to store nothing twice."""
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(sa.func.min(PREDICTIONS.c.created_at)).where(
                PREDICTIONS.c.batch_id == batch_id
            )
        ).scalar()
    if stored is None:
        return datetime.now(UTC)
    return stored if stored.tzinfo else stored.replace(tzinfo=UTC)


def _probability_columns(model: JobModel) -> list[str]:
    return [PROBABILITY_PREFIX + c for c in model.classes]


def _records(
    batch: pa.RecordBatch,
    position: int,
    model: JobModel,
    describer: TextDescriber,
    batch_id: str,
    created_at: datetime,
    store_text: bool,
) -> Iterator[PredictionRecord]:
    texts = batch.column(0).to_pylist()
    labels = batch.column(1).to_pylist()
    confidences = batch.column(2).to_pylist()
    probabilities = [batch.column(3 + i).to_pylist() for i in range(len(model.classes))]
    ref = model.ref
    for offset, (text, label) in enumerate(zip(texts, labels, strict=True)):
        if label is None:  # the row's error column says why it has no prediction
            continue
        yield PredictionRecord(
            request_id=uuid.uuid5(_IDS, f"{batch_id}/{position + offset}").hex,
            created_at=created_at,
            text=text if store_text else None,
            label=label,
            confidence=confidences[offset],
            probabilities={c: probabilities[i][offset] for i, c in enumerate(model.classes)},
            model_name=ref.name or ref.uri,
            model_version=ref.version or "",
            latency_ms=0.0,  # scored in bulk: no per-row latency
            endpoint=ENDPOINT,
            text_sha256=None if store_text else hashlib.sha256(text.encode()).hexdigest(),
            descriptors=describer.describe_one(text),
            source="batch",
            batch_id=batch_id,
        )
