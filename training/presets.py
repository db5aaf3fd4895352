"""Per-data-set hyper-parameters, so ``train`` on IMDB, SST-2 or SemEval uses what was chosen
for it without anyone remembering the numbers.

Every preset was chosen without a test split: IMDB by ``emotitrack search`` (cross-validation on
train), SST-2 and SemEval on validation data (SST-2: its own validation split; SemEval: a seeded
10 % of train). Explicit options override a preset field by field.
"""

from __future__ import annotations

import re
from pathlib import Path

from training.hyperparameters import Hyperparameters

PRESETS: dict[str, Hyperparameters] = {
    # Long reviews: the best of `emotitrack search` on IMDB train (the defaults). Why each preset
    # was chosen, with its validation figures: docs/training.md#presets.
    "imdb": Hyperparameters(),
    # Short sentences trained on phrases: the best validation accuracy within the 2x latency
    # budget (character n-grams scored higher but cost more). The temperature is fitted on the
    # validation *sentences*: fitted on training phrases it was miscalibrated on sentences.
    "sst2": Hyperparameters(ngram_max=2, min_df=3, C=4.0, calibrate_on="validation"),
    # Three-class tweets: character n-grams for spelling variants, balanced class weights for the
    # task's macro-averaged recall, no NB scaling (binary only).
    "semeval": Hyperparameters(
        ngram_max=3,
        char_ngram_max=5,
        negation=False,
        nb_scaling=False,
        class_weight="balanced",
        C=0.5,
    ),
}
AUTO = "auto"
NO_PRESET = "none"
PRESET_CHOICES = (AUTO, NO_PRESET, *PRESETS)
# Words of folder/file names that identify a data set (the names in ../shared/data and common
# spellings), each optionally followed by digits (sst2, semeval2017).
_NAME_HINTS = {"imdb": "imdb", "sst": "sst2", "semeval": "semeval", "tweeteval": "semeval"}
_HINT_TOKEN = re.compile(rf"({'|'.join(_NAME_HINTS)})\d*")


def detect_preset(data: Path) -> str | None:
    """The preset whose data set ``data`` is, judged by its path (``.../imdb``, ``sst2``, ...)."""
    path = data.resolve()
    # A file (train.parquet) is named by its folder; a folder by itself.
    name = f"{path.parent.name}/{path.name}" if path.suffix else path.name
    # Whole words only (split at anything not a letter or digit): "crosstalk" holds no "sst".
    for token in re.split(r"[^a-z0-9]+", name.lower()):
        match = _HINT_TOKEN.fullmatch(token)
        if match:
            return _NAME_HINTS[match.group(1)]
    return None


def resolve_preset(choice: str, data: Path) -> str | None:
    """``auto`` → detected from the data path; ``none`` → the defaults; else the named preset."""
    if choice == AUTO:
        return detect_preset(data)
    if choice == NO_PRESET:
        return None
    if choice not in PRESETS:
        raise ValueError(f"unknown preset {choice!r}; choose one of {', '.join(PRESET_CHOICES)}")
    return choice


def hyperparameters_for(preset: str | None, overrides: dict[str, object]) -> Hyperparameters:
    base = PRESETS[preset] if preset else Hyperparameters()
    return base.updated(**overrides)
