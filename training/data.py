"""Labelled text: load it, check it, split it, describe it.

Everything downstream sees frames with exactly two columns, ``text`` and ``label`` (strings),
whatever the source columns were called.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from mlflow.data.digest_utils import compute_pandas_digest
from sklearn.model_selection import train_test_split

from training.errors import DataError

TEXT = "text"
LABEL = "label"
SUPPORTED_SUFFIXES = (".parquet", ".csv")
# The run artifact listing ``text_fingerprints`` of the training rows, one per line.
TRAIN_FINGERPRINTS_ARTIFACT = "data/train_fingerprints.txt"
# File stems recognised as splits in a data folder; anything else is pooled as unsplit data.
SPLIT_ALIASES = {
    "train": "train",
    "test": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
}


@dataclass(frozen=True)
class LabelledData:
    """Labelled text as found at ``source``: the splits it provides (``pool`` if it has none)."""

    source: str
    splits: dict[str, pd.DataFrame]


@dataclass(frozen=True)
class Splits:
    """What a run trains on, validates on (model choice, promotion gate) and tests on once."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    test_from_source: bool

    @property
    def labels(self) -> list[str]:
        return sorted(self.train[LABEL].unique())


def load_labelled(
    path: Path | str, text_column: str = TEXT, label_column: str = LABEL
) -> LabelledData:
    """Read a Parquet/CSV file, or a folder of split files, into checked ``text``/``label`` frames."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data not found: {path} (set EMOTITRACK_DATA or pass --data)")
    files = _data_files(path)
    splits: dict[str, list[pd.DataFrame]] = {}
    for file in files:
        split = SPLIT_ALIASES.get(file.stem.lower(), "pool") if path.is_dir() else "pool"
        frame = _normalise(_read_table(file), text_column, label_column, file)
        splits.setdefault(split, []).append(frame)
    merged = {name: pd.concat(parts, ignore_index=True) for name, parts in splits.items()}
    if "pool" in merged and "train" in merged:
        # Files that are not named splits beside a train file would silently change the data.
        extra = [f.name for f in files if SPLIT_ALIASES.get(f.stem.lower()) is None]
        raise DataError(f"{path}: files {extra} are not train/validation/test splits; move them")
    return LabelledData(source=str(path), splits=merged)


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DataError(f"{path}: unsupported file type; use .parquet or .csv")
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no .parquet or .csv files in this folder")
    return files


def _read_table(file: Path) -> pd.DataFrame:
    try:
        if file.suffix.lower() == ".parquet":
            # Single-threaded: Arrow's decoding threads, torn down at interpreter exit, can abort
            # a process that stops soon after reading (SIGABRT, apache/arrow#34314).
            return pd.read_parquet(file, use_threads=False)
        return pd.read_csv(file)
    except Exception as exc:  # any reader failure means the same thing to the user
        raise DataError(f"{file}: cannot be read as {file.suffix[1:]}: {exc}") from exc


def _normalise(
    frame: pd.DataFrame, text_column: str, label_column: str, file: Path
) -> pd.DataFrame:
    missing = [c for c in (text_column, label_column) if c not in frame.columns]
    if missing:
        raise DataError(
            f"{file}: missing column(s) {missing}; found {list(frame.columns)} "
            "(set --text-column/--label-column)"
        )
    out = pd.DataFrame({TEXT: frame[text_column], LABEL: frame[label_column]})
    _check_strings(out[TEXT], "text", text_column, file)
    _check_strings(out[LABEL], "label", label_column, file)
    empty = out.index[out[TEXT].str.strip() == ""]
    if len(empty):
        raise DataError(
            f"{file}: {len(empty)} empty text(s) in column '{text_column}' "
            f"(first at row {empty[0]}); drop or fill them"
        )
    return out.astype({TEXT: str, LABEL: str})


def _check_strings(values: pd.Series, role: str, column: str, file: Path) -> None:
    nulls = values.index[values.isna()]
    if len(nulls):
        raise DataError(
            f"{file}: {len(nulls)} missing {role}(s) in column '{column}' (first at row {nulls[0]})"
        )
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind not in ("string", "empty"):
        hint = " (map label ids to names, e.g. 0 -> negative)" if role == "label" else ""
        raise DataError(f"{file}: column '{column}' must hold strings, found {kind}{hint}")


def make_splits(
    data: LabelledData,
    *,
    seed: int,
    validation_fraction: float,
    test_fraction: float,
    min_rows: int,
) -> Splits:
    """Use the data's own splits where present, otherwise stratified, seeded splits."""
    parts = data.splits
    test_from_source = "test" in parts
    train = parts.get("train", parts.get("pool"))
    if train is None:
        raise DataError(f"{data.source}: no train split (train.parquet/csv) and no unsplit data")
    _check_trainable(train, data.source, min_rows)
    if test_from_source:
        test = parts["test"]
    else:
        train, test = _stratified_split(train, test_fraction, seed)
    if "validation" in parts:
        validation = parts["validation"]
    else:
        train, validation = _stratified_split(train, validation_fraction, seed)
    for name, held_out in (("validation", validation), ("test", test)):
        unknown = sorted(set(held_out[LABEL]) - set(train[LABEL]))
        if unknown:
            raise DataError(f"{data.source}: {name} labels {unknown} never occur in train")
    _check_trainable(train, data.source, min_rows)
    return Splits(
        train=train.reset_index(drop=True),
        validation=validation.reset_index(drop=True),
        test=test.reset_index(drop=True),
        test_from_source=test_from_source,
    )


def _check_trainable(train: pd.DataFrame, source: str, min_rows: int) -> None:
    if len(train) < min_rows:
        raise DataError(f"{source}: {len(train)} training rows, need at least {min_rows}")
    classes = train[LABEL].unique()
    if len(classes) < 2:
        raise DataError(f"{source}: only one class ({classes[0]!r}); need at least two")


def _stratified_split(
    frame: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = frame[LABEL].value_counts()
    stratify = frame[LABEL] if counts.min() >= 2 else None
    try:
        kept, held = train_test_split(
            frame, test_size=fraction, random_state=seed, stratify=stratify
        )
    except ValueError as exc:  # e.g. fewer held-out rows than classes
        raise DataError(f"cannot split {len(frame)} rows {fraction:.0%}: {exc}") from exc
    return kept, held


def splits_digest(splits: Splits) -> str:
    """One digest of the three splits' contents (MLflow's dataset digest of each), logged as
    the run's ``data_digest``: the gate checks with it that it rebuilt the same splits."""
    digests = [compute_pandas_digest(f) for f in (splits.train, splits.validation, splits.test)]
    return hashlib.sha256("-".join(digests).encode()).hexdigest()[:16]


def text_fingerprints(texts: Iterable[str]) -> list[str]:
    """A short SHA-256 of each text: what a run records of its training rows, so that a later
    gate can tell which rows a model has seen without the run storing the texts."""
    return [hashlib.sha256(t.encode("utf-8", "surrogatepass")).hexdigest()[:16] for t in texts]


def data_report(splits: Splits) -> dict[str, object]:
    """Row counts, label balance, duplicates and overlaps between splits, as plain JSON."""
    named = {"train": splits.train, "validation": splits.validation, "test": splits.test}
    train_texts = set(splits.train[TEXT])
    report: dict[str, object] = {
        "labels": splits.labels,
        "splits": {name: _describe(frame) for name, frame in named.items()},
        "overlap": {
            "train_test": _overlap(train_texts, splits.test[TEXT]),
            "train_validation": _overlap(train_texts, splits.validation[TEXT]),
        },
    }
    return report


def _describe(frame: pd.DataFrame) -> dict[str, object]:
    texts = frame[TEXT]
    labels_per_text = frame.groupby(TEXT)[LABEL].nunique()
    return {
        "rows": len(frame),
        "label_counts": {k: int(v) for k, v in frame[LABEL].value_counts().sort_index().items()},
        "label_shares": {
            k: round(float(v), 4)
            for k, v in frame[LABEL].value_counts(normalize=True).sort_index().items()
        },
        "duplicate_texts": int(texts.duplicated().sum()),
        "texts_with_conflicting_labels": int((labels_per_text > 1).sum()),
        "median_chars": float(texts.str.len().median()),
    }


def _overlap(reference: set[str], texts: Iterable[str]) -> int:
    """How many rows of ``texts`` occur verbatim in ``reference``."""
    return sum(1 for t in texts if t in reference)
