"""Presets picked from the data path, and hyper-parameter overrides on top of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.cli import build_parser, chosen_hyperparameters, parse_overrides
from training.data import DataError
from training.model import Hyperparameters
from training.presets import PRESETS, detect_preset
from training.settings import TrainingSettings


@pytest.mark.parametrize(
    ("path", "preset"),
    [
        ("../shared/data/imdb", "imdb"),
        ("/data/sst2/train.parquet", "sst2"),
        ("../shared/data/semeval2017_task4a", "semeval"),
        ("../shared/data/tweeteval_sentiment", "semeval"),
        ("reviews.csv", None),
    ],
)
def test_preset_is_detected_from_the_data_path(path: str, preset: str | None) -> None:
    assert detect_preset(Path(path)) == preset


def choose(*argv: str) -> tuple[str | None, Hyperparameters]:
    args = build_parser(TrainingSettings()).parse_args(["train", *argv])
    return chosen_hyperparameters(args)


def test_options_override_the_detected_preset_field_by_field() -> None:
    preset, hp = choose("--data", "../shared/data/semeval2017_task4a", "--C", "2")
    assert preset == "semeval"
    assert hp == PRESETS["semeval"].updated(C=2.0)


def test_mlproject_overrides_string_and_empty_values() -> None:
    _, hp = choose("--data", "x.csv", "--hyperparameters", "C=10, ngram_max=2,negation=false")
    assert (hp.C, hp.ngram_max, hp.negation) == (10.0, 2, False)
    _, defaults = choose("--data", "x.csv", "--hyperparameters", "", "--C", "")
    assert defaults == Hyperparameters()  # "" is MLproject's "not set"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("C", "expected KEY=VALUE"),
        ("alpha=1", "KEY one of ngram_max"),
        ("ngram_max=two", "expected a whole number"),
    ],
)
def test_bad_overrides_say_what_to_fix(text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        parse_overrides(text)


def test_impossible_combinations_are_refused_before_training() -> None:
    with pytest.raises(DataError, match="class_weight must be one of"):
        choose("--data", "x.csv", "--class-weight", "heavy")
