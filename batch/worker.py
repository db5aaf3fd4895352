"""What a scoring process runs: the model read once when the process starts, then one call per
batch of texts. Imports only the model format (numpy), so a process starts quickly."""

from __future__ import annotations

import numpy as np

from emotitrack.core.model_format import ModelFiles, SentimentScorer, read_files

_scorer: SentimentScorer | None = None


def load(files: ModelFiles) -> None:
    """The process initializer: read the model this process scores with."""
    global _scorer
    _scorer = read_files(files)


def probabilities(texts: list[str]) -> np.ndarray:
    assert _scorer is not None, "load() runs first, as the pool's initializer"
    return _scorer.probabilities(texts)
