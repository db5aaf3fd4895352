"""The real data the harness trains on and sends: where it is, seeded samples of it."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from harness import REPO


def shared_data_root() -> Path:
    """``../shared/data`` beside the repository, or ``EMOTITRACK_SHARED_DATA``."""
    return Path(os.environ.get("EMOTITRACK_SHARED_DATA", REPO.parent / "shared" / "data"))


def write_sample(source: Path, target: Path, rows: Mapping[str, int], seed: int = 7) -> Path:
    """A seeded, stratified sample of a data set's splits (``{"train": 1600, ...}``), written
    as Parquet to ``target``: training on it stays short."""
    target.mkdir(parents=True, exist_ok=True)
    for split, size in rows.items():
        frame = pd.read_parquet(source / f"{split}.parquet")
        per_label = min(size // frame["label"].nunique(), int(frame["label"].value_counts().min()))
        sample = frame.groupby("label").sample(n=per_label, random_state=seed)
        sample.sample(frac=1, random_state=seed).to_parquet(
            target / f"{split}.parquet", index=False
        )
    return target


def review_sample(data: Path, count: int, seed: int) -> list[str]:
    """``count`` real held-out reviews (the test split of ``data``), a seeded draw."""
    frame = pd.read_parquet(data / "test.parquet", columns=["text"])
    texts = [str(text) for text in frame["text"].tolist() if str(text).strip()]
    return random.Random(seed).sample(texts, min(count, len(texts)))  # noqa: S311 - not a secret
