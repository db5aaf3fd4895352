"""Presets picked from the data path, and hyper-parameter overrides on top of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.cli import (
    build_parser,
    chosen_hyperparameters,
    given_hyperparameters,
    parse_overrides,
)
from training.data import DataError
from training.model import Hyperparameters
from training.presets import PRESETS, detect_preset
from training.search import candidate_grid
from training.settings import TrainingSettings


@pytest.mark.parametrize(
    ("path", "preset"),
    [
        ("../shared/data/imdb", "imdb"),
        ("/data/sst2/train.parquet", "sst2"),
        ("/data/SST-2", "sst2"),
        ("/data/sst/dev.csv", "sst2"),
        ("../shared/data/semeval2017_task4a", "semeval"),
        ("../shared/data/tweeteval_sentiment", "semeval"),
        ("/data/imdb_reviews.csv", "imdb"),
        ("reviews.csv", None),
        # A hint inside another word is no hint.
        ("/data/crosstalk/train.parquet", None),
        ("/data/classtest.csv", None),
        ("/data/semevaluation", None),
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


def search_grid(*argv: str, binary: bool = True) -> list[Hyperparameters]:
    args = build_parser(TrainingSettings()).parse_args(["search", *argv])
    _, base = chosen_hyperparameters(args)
    return candidate_grid(binary, base, frozenset(given_hyperparameters(args)))


def values(grid: list[Hyperparameters], name: str) -> set[object]:
    return {getattr(hp, name) for hp in grid}


def test_search_centres_c_on_the_presets_c() -> None:
    imdb = search_grid("--data", "../shared/data/imdb")
    assert len(imdb) == 32 and values(imdb, "C") == {10.0, 30.0, 100.0, 300.0}
    sst2 = search_grid("--data", "../shared/data/sst2")
    assert values(sst2, "C") == {0.4, 1.2, 4.0, 12.0}  # the preset's C=4 is a candidate
    semeval = search_grid("--data", "../shared/data/semeval2017_task4a", binary=False)
    assert values(semeval, "C") == {0.05, 0.15, 0.5, 1.5}
    assert values(semeval, "nb_scaling") == {False}
    assert values(semeval, "class_weight") == {"balanced", "none"}


def test_search_keeps_the_options_given_and_searches_the_rest() -> None:
    grid = search_grid(
        "--data", "../shared/data/imdb", "--ngram-max", "1", "--hyperparameters", "C=50"
    )
    assert values(grid, "ngram_max") == {1} and values(grid, "C") == {50.0}
    assert values(grid, "negation") == {False, True}
    assert values(grid, "nb_scaling") == {False, True}
    # An empty value (MLproject's "not set") pins nothing.
    assert search_grid("--data", "../shared/data/imdb", "--C", "") == search_grid(
        "--data", "../shared/data/imdb"
    )
