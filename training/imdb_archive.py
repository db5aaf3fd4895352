"""Build the IMDB data set from the public ``aclImdb_v1.tar.gz`` archive (Maas et al. 2011).

For users without ``../shared/data``: give a local path or a URL to the archive; the result is
the same ``train``/``test`` Parquet layout the training run reads.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import pandas as pd

from emotitrack.core.progress import log, step
from training.data import DataError

# aclImdb/<split>/<pos|neg>/<id>_<rating>.txt ; unsup/ and other files are ignored.
MEMBER = re.compile(r"(?:^|/)aclImdb/(train|test)/(pos|neg)/(\d+)_(\d+)\.txt$")
LABELS = {"pos": "positive", "neg": "negative"}


def fetch_imdb(source: str, out: Path) -> dict[str, Path]:
    """Read the archive at ``source`` (path or http(s)/file URL) and write ``out/{train,test}.parquet``."""
    with tempfile.TemporaryDirectory() as tmp:
        archive = _local_copy(source, Path(tmp))
        with step(f"reading {archive.name}"):
            frames = read_archive(archive)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, frame in frames.items():
        path = out / f"{split}.parquet"
        frame.to_parquet(path, index=False)
        written[split] = path
        log.info("%s: %d reviews -> %s", split, len(frame), path)
    return written


def _local_copy(source: str, tmp: Path) -> Path:
    if "://" not in source:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"IMDB archive not found: {path}")
        return path
    if not source.startswith(("http://", "https://", "file://")):
        raise DataError(f"unsupported URL scheme in {source}; use http(s):// or file://")
    target = tmp / "aclImdb.tar.gz"
    with step(f"downloading {source}"):
        try:
            with urllib.request.urlopen(source, timeout=60) as response, target.open("wb") as f:  # noqa: S310 - scheme checked above  # nosec B310
                shutil.copyfileobj(response, f, length=1 << 20)
        except OSError as exc:
            raise DataError(f"cannot download {source}: {exc}") from exc
    return target


def read_archive(archive: Path) -> dict[str, pd.DataFrame]:
    """Reviews per split, ordered by label then numeric id (as in ``../shared/data/imdb``)."""
    rows: dict[str, list[tuple[str, int, str]]] = {"train": [], "test": []}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                match = MEMBER.search(member.name)
                if not (member.isfile() and match):
                    continue
                split, polarity, review_id, _rating = match.groups()
                handle = tar.extractfile(member)
                assert handle is not None  # regular file
                text = handle.read().decode("utf-8")
                rows[split].append((LABELS[polarity], int(review_id), text))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: not a readable tar archive: {exc}") from exc
    if not any(rows.values()):
        raise DataError(f"{archive}: no aclImdb/{{train,test}}/{{pos,neg}}/*.txt reviews inside")
    return {
        split: pd.DataFrame(
            [(text, label) for label, _, text in sorted(items, key=lambda r: (r[0], r[1]))],
            columns=["text", "label"],
        )
        for split, items in rows.items()
        if items
    }
