"""The local engine: record batches streamed from the input, scored by a pool of processes (the
model read once in each), written in input order to a temporary Parquet file that is renamed
into place when complete. At most a few batches per process are in flight, so memory stays flat
whatever the input's size."""

from __future__ import annotations

import multiprocessing
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from batch import worker
from batch.inputs import Input
from batch.model import JobModel
from batch.table import OutputLayout, output_layout, scored_batch, text_problem

IN_FLIGHT_PER_WORKER = 2  # one being scored, one queued: no process waits for the reader


@dataclass
class Summary:
    rows: int = 0
    seconds: float = 0.0
    labels: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    output: Path | None = None
    started_clean: bool = False  # an incomplete output of an earlier run was removed

    def line(self, model: JobModel) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        scored = sum(self.labels.values())
        shares = ", ".join(
            f"{label} {count / scored:.1%}" for label, count in self.labels.most_common()
        )
        errors = ", ".join(f"{why} {n}" for why, n in self.errors.most_common())
        ref = model.ref
        return (
            f"scored {self.rows} rows in {self.seconds:.1f} s ({rate:.0f} rows/s); labels: "
            f"{shares or 'none'}; error rows: {sum(self.errors.values())}"
            f"{f' ({errors})' if errors else ''}; model {ref.name or ref.uri}"
            f"{f' v{ref.version}' if ref.version else ''}; output {self.output}"
        )


def partial_path(output: Path) -> Path:
    """Where the output is written until complete: beside it (one file system, so the rename
    is atomic), hidden, and the same for every run on that output so a re-run finds it."""
    return output.with_name(f".{output.name}.partial")


def score_local(
    source: Input,
    output: Path,
    model: JobModel,
    *,
    text_column: str,
    max_text_chars: int,
    batch_rows: int,
    workers: int,
    progress: bool | None = None,
) -> Summary:
    """Score ``source`` into ``output``. ``progress``: None shows the bar on a terminal only."""
    from tqdm import tqdm

    summary = Summary(output=output)
    partial = partial_path(output)
    if partial.exists():
        partial.unlink()
        summary.started_clean = True
        print(
            f"found {partial}, the incomplete output of an earlier run: removed it, starting clean",
            file=sys.stderr,
        )
    layout = output_layout(source.dataset.schema, model.classes)
    text_index = source.dataset.schema.get_field_index(text_column)
    started = time.perf_counter()
    bar = tqdm(
        total=source.rows(),
        unit="rows",
        unit_scale=True,
        dynamic_ncols=True,
        disable=None if progress is None else not progress,
        file=sys.stderr,
    )
    try:
        with pq.ParquetWriter(partial, layout.schema) as writer, _scoring(model, workers) as score:
            for scored in _scored_batches(
                source.batches(batch_rows),
                score,
                layout,
                model,
                text_index,
                max_text_chars,
                IN_FLIGHT_PER_WORKER * workers,
                summary,
            ):
                writer.write_batch(scored)
                bar.update(scored.num_rows)
        partial.replace(output)
    except BaseException:
        partial.unlink(missing_ok=True)  # an interrupted job leaves nothing that looks done
        raise
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary


class _InProcess:
    """One worker: score in this process, no pool to feed."""

    def __init__(self, model: JobModel) -> None:
        worker.load(model.files)

    def submit(self, texts: list[str]) -> Future[np.ndarray]:
        done: Future[np.ndarray] = Future()
        done.set_result(worker.probabilities(texts))
        return done


@contextmanager
def _scoring(model: JobModel, workers: int) -> Iterator[_InProcess | _Pool]:
    """A pool of ``workers`` processes that each read the model once, or this process alone."""
    if workers == 1:
        yield _InProcess(model)
        return
    # spawn, not fork: MLflow's client may hold threads and locks a fork would copy mid-use.
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=worker.load,
        initargs=(model.files,),
    )
    try:
        yield _Pool(pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _Pool:
    def __init__(self, pool: ProcessPoolExecutor) -> None:
        self.pool = pool

    def submit(self, texts: list[str]) -> Future[np.ndarray]:
        return self.pool.submit(worker.probabilities, texts)


def _scored_batches(
    batches: Iterator[pa.RecordBatch],
    score: _InProcess | _Pool,
    layout: OutputLayout,
    model: JobModel,
    text_index: int,
    max_text_chars: int,
    in_flight: int,
    summary: Summary,
) -> Iterator[pa.RecordBatch]:
    """Scored batches in input order, with at most ``in_flight`` submitted and not yet taken."""
    pending: deque[tuple[pa.RecordBatch, list[str | None], list[str | None], Future]] = deque()

    def finish() -> pa.RecordBatch:
        batch, texts, problems, future = pending.popleft()
        scored = scored_batch(batch, texts, problems, future.result(), layout, model.ref)
        count_batch(scored, summary)
        return scored

    for batch in batches:
        if batch.num_rows == 0:
            continue
        texts = batch.column(text_index).to_pylist()
        problems = [text_problem(text, max_text_chars) for text in texts]
        valid = [t for t, p in zip(texts, problems, strict=True) if p is None]
        pending.append((batch, texts, problems, score.submit(valid)))
        if len(pending) >= in_flight:
            yield finish()
    while pending:
        yield finish()


def count_batch(scored: pa.RecordBatch, summary: Summary) -> None:
    """Add a scored batch's rows, labels and errors to ``summary``."""
    summary.rows += scored.num_rows
    for name in ("label", "error"):
        counts = scored.column(name).value_counts().to_pylist()
        target = summary.labels if name == "label" else summary.errors
        for entry in counts:
            if entry["values"] is not None:
                target[entry["values"]] += entry["counts"]
