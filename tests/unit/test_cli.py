"""The command line: help, option parsing, and one-line errors with exit codes."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pytest

from emotitrack.cli import main
from training.cli import parse_bool, parse_int
from training.model import Hyperparameters


@pytest.fixture(autouse=True)
def wide_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # argparse wraps help to the terminal width
    monkeypatch.delenv("EMOTITRACK_DATA", raising=False)


def test_train_help_explains_every_hyperparameter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for field in fields(Hyperparameters):
        assert f"--{field.name.replace('_', '-')}" in out
    assert "(default: ../shared/data/imdb)" in out


def test_data_setting_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMOTITRACK_DATA", "/srv/reviews")
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "(default: /srv/reviews)" in capsys.readouterr().out


@pytest.mark.parametrize(("text", "value"), [("42", 42), ("42.0", 42), ("1e3", 1000)])
def test_parse_int_accepts_mlproject_floats(text: str, value: int) -> None:
    assert parse_int(text) == value


@pytest.mark.parametrize("text", ["4.5", "many"])
def test_parse_int_refuses_fractions(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_int(text)


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("False", False), ("1", True), ("no", False)]
)
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_bad_data_exits_2_with_one_line(
    tmp_path: Path, tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pd.DataFrame({"review": ["a", "b"], "label": ["x", "y"]}).to_parquet(tmp_path / "d.parquet")
    code = main(["train", "--data", str(tmp_path / "d.parquet")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: ") and "missing column(s) ['text']" in err[-1]
    assert not any("Traceback" in line for line in err)


def test_promote_without_versions_exits_2(
    tracking_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["promote", "--model-name", "nothing-here"])
    assert code == 2
    assert (
        "registered model 'nothing-here' has no versions; train one first"
        in capsys.readouterr().err
    )
