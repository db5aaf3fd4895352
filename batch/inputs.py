"""Finding and checking the input: Parquet or CSV files, a folder of them or a glob, read as one
``pyarrow.dataset`` whose record batches are streamed. Every problem is found here, before the
job writes anything."""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.parquet as pq

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
TEXT_TYPES = (pa.string(), pa.large_string(), pa.string_view())
PARQUET_READ_BUFFER = 1 << 20  # bytes


class BadInput(ValueError):
    """The input cannot be scored; the message says why in one line."""


@dataclass(frozen=True)
class Input:
    """The files to score, their format and the dataset that reads them."""

    files: tuple[Path, ...]
    format: str  # "parquet" or "csv"
    dataset: ds.Dataset

    def rows(self) -> int | None:
        """Row count from Parquet footers; None for CSV (counting would read it all)."""
        return self.dataset.count_rows() if self.format == "parquet" else None

    def batches(self, batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Record batches of at most ``batch_rows`` rows in the dataset's schema, in file order.
        Parquet is read file by file with ``ParquetFile.iter_batches``, which decodes pages as
        it goes; the dataset scanner decodes whole row groups ahead and held several times
        more memory (benchmarks/README.md)."""
        if self.format != "parquet":
            yield from self.dataset.to_batches(
                batch_size=batch_rows, batch_readahead=1, fragment_readahead=1
            )
            return
        schema = self.dataset.schema
        for file in self.files:
            with pq.ParquetFile(file, pre_buffer=False, buffer_size=PARQUET_READ_BUFFER) as parquet:
                for batch in parquet.iter_batches(batch_size=batch_rows, use_threads=False):
                    yield conform(batch, schema)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` in ``schema``: its columns in that order, cast to the unified types, and nulls
    for a column this file lacks (files of one input may differ, as in a data lake)."""
    if batch.schema.equals(schema):
        return batch
    names = batch.schema.names
    columns = [
        batch.column(f.name).cast(f.type) if f.name in names else pa.nulls(batch.num_rows, f.type)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def discover(spec: str) -> tuple[Path, ...]:
    """The data files ``spec`` names: a file, a folder (searched recursively; hidden files and
    ``_``-prefixed markers such as ``_SUCCESS`` skipped) or a glob, sorted."""
    path = Path(spec)
    if path.is_file():
        candidates = [path]
    elif path.is_dir():
        candidates = [p for p in path.rglob("*") if p.is_file() and not _hidden(p, path)]
        candidates = [p for p in candidates if p.suffix.lower() in FORMATS]
        if not candidates:
            raise BadInput(f"{spec}: folder holds no .parquet or .csv file")
    elif glob.has_magic(spec):
        matches = glob.glob(spec, recursive=True)  # noqa: PTH207 - a pattern with its root
        candidates = [Path(p) for p in matches if Path(p).is_file()]
        if not candidates:
            raise BadInput(f"{spec}: no file matches")
    else:
        raise BadInput(f"{spec}: no such file or folder")
    return tuple(sorted(candidates))


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith((".", "_")) for part in path.relative_to(root).parts)


def file_format(files: Sequence[Path]) -> str:
    """The one format of ``files``, by suffix."""
    formats = set()
    for file in files:
        found = FORMATS.get(file.suffix.lower())
        if found is None:
            raise BadInput(f"{file}: not a .parquet or .csv file")
        formats.add(found)
    if len(formats) > 1:
        raise BadInput("input mixes Parquet and CSV files; score each format on its own")
    return formats.pop()


def open_input(spec: str, text_column: str) -> Input:
    """The checked input: every file readable, of one format, with ``text_column`` as text."""
    files = discover(spec)
    fmt = file_format(files)
    source = [str(f) for f in files]
    file_format_options: ds.FileFormat
    if fmt == "csv":
        # A column of numbers or of empty cells would otherwise be typed as such.
        convert = pa_csv.ConvertOptions(column_types={text_column: pa.string()})
        file_format_options = ds.CsvFileFormat(convert_options=convert)
    else:
        # Read a column chunk through a small buffer rather than pre-buffering whole row groups:
        # pre-buffered reads grew the job's memory with the size of the input.
        scan = ds.ParquetFragmentScanOptions(
            pre_buffer=False, use_buffered_stream=True, buffer_size=PARQUET_READ_BUFFER
        )
        file_format_options = ds.ParquetFileFormat(default_fragment_scan_options=scan)
    try:
        first = ds.dataset(source, format=file_format_options)
        # Each file's own schema: opens every file now, so a broken one stops the job here.
        schemas = [_schema(fragment) for fragment in first.get_fragments()]
        schema = pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise BadInput(f"cannot read the input: {_first_line(exc)}") from exc
    for file, file_schema in zip(files, schemas, strict=True):
        if text_column not in file_schema.names:
            columns = ", ".join(file_schema.names)
            raise BadInput(f"{file}: no column {text_column!r} (columns: {columns})")
        kind = file_schema.field(text_column).type
        if kind not in TEXT_TYPES and kind != pa.null():
            raise BadInput(f"{file}: column {text_column!r} holds {kind}, not text")
    return Input(files, fmt, ds.dataset(source, schema=schema, format=file_format_options))


def _schema(fragment: ds.Fragment) -> pa.Schema:
    try:
        return fragment.physical_schema
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise BadInput(f"{fragment.path}: cannot read it: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
