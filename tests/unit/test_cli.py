"""The command line: help, option parsing, and one-line errors with exit codes."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import get_args

import mlflow
import pandas as pd
import pytest
from pydantic import ValidationError

from emotitrack.cli import main
from emotitrack.core.options import parse_bool, parse_int
from training.cli import main as training_main
from training.model import Hyperparameters
from training.registry import GATE_METRICS
from training.settings import GateMetric, TrainingSettings


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


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--folds", "1"], "folds must be at least 2, got 1"),
        (["search", "--max-candidates", "0"], "max_candidates must be at least 1, got 0"),
        (["search", "--time-budget-min", "0"], "time_budget_min must be above 0"),
        (["search", "--metric", "ece"], "unknown metric 'ece'"),
        (["train", "--C", "-1"], "C must be above 0, got -1.0"),
        (["search", "--max-iter", "0"], "max_iter must be at least 1"),
        (["train", "--min-df", "0"], "min_df must be at least 1"),
        (["train", "--hyperparameters", "max_df=1.5"], "max_df must be above 0 and at most 1"),
        (
            ["train", "--validation-fraction", "0.8"],
            "validation_fraction=0.8: Input should be less",
        ),
        (["search", "--test-fraction", "0"], "test_fraction=0.0: Input should be greater than 0"),
        (["train", "--gate"], "--gate only applies with --promote"),
        (["search", "--gate"], "--gate only applies with --promote"),
    ],
)
def test_bad_options_exit_2_with_one_line_before_any_run(
    argv: list[str],
    message: str,
    imdb_sample: Path,
    tracking_uri: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main([*argv, "--data", str(imdb_sample)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_a_bad_environment_setting_exits_2_with_one_line_whatever_the_command(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EMOTITRACK_MIN_ROWS", "1")
    assert main(["fetch-imdb", "archive.tar.gz"]) == 2
    assert training_main(["fetch-imdb", "archive.tar.gz"]) == 2
    for line in capsys.readouterr().err.strip().splitlines():
        assert line.startswith("error: invalid setting EMOTITRACK_MIN_ROWS='1': ")
        assert "greater than or equal to 2" in line


def test_a_bad_monitoring_setting_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the monitor command's defaults come from the monitoring settings, read for every command
    monkeypatch.setenv("EMOTITRACK_WINDOW_HOURS", "-5")
    assert main(["fetch-imdb", "archive.tar.gz"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: invalid setting EMOTITRACK_WINDOW_HOURS='-5': "
    )


def test_the_gate_metric_is_one_where_higher_is_better(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert get_args(GateMetric) == GATE_METRICS  # the setting and the registry agree
    with pytest.raises(ValidationError):
        TrainingSettings(gate_metric="log_loss")
    with pytest.raises(SystemExit) as exit_info:
        main(["promote", "--gate", "--metric", "ece"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'ece'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["promote", "--help"])
    help_text = capsys.readouterr().out
    assert "accuracy, f1_macro, recall_macro, roc_auc" in help_text
    assert "(default: None)" not in help_text and "(default: newest)" in help_text


def test_help_names_every_command_and_what_a_search_keeps_fixed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        training_main(["--help"])
    assert "train, search, promote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert "given on the command line is kept as given, not searched" in capsys.readouterr().out
