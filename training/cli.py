"""Command line of the training part: ``train``, ``promote`` and ``fetch-imdb``.

Exit codes: 0 done; 2 bad input (data, options, unknown version); 3 promotion refused by the
gate; 4 tracking server or registry unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from mlflow.exceptions import MlflowException

from training.data import DataError
from training.model import Hyperparameters
from training.progress import configure_logging
from training.registry import PromotionError, PromotionRefused
from training.settings import TrainingSettings

EXIT_BAD_INPUT = 2
EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4

HYPERPARAMETER_HELP = {
    "max_features": "largest TF-IDF vocabulary (most frequent n-grams kept)",
    "ngram_max": "longest word n-gram (1 = unigrams, 2 = uni+bigrams)",
    "min_df": "drop n-grams found in fewer documents than this",
    "max_df": "drop n-grams found in more than this share of documents",
    "sublinear_tf": "use 1 + log(tf) instead of raw term counts (true/false)",
    "C": "inverse L2 regularisation strength of LogisticRegression",
    "max_iter": "most solver iterations",
}


def parse_int(value: str) -> int:
    """An integer, also written as a float (MLproject passes ``float`` parameters as ``42.0``)."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}")
    return int(number)


def parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def add_commands(commands: argparse._SubParsersAction, settings: TrainingSettings) -> None:
    """Register the training commands on a parser (shared by ``emotitrack`` and ``python -m training``)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter

    train = commands.add_parser(
        "train",
        help="train on labelled text, log the run to MLflow and register a model version",
        description="Train TF-IDF + LogisticRegression, log params, metrics, data sets, plots, "
        "a reference sample and the model to MLflow, and register a new model version.",
        formatter_class=fmt,
    )
    _add_data_options(train, settings)
    train.add_argument(
        "--seed", type=parse_int, default=settings.seed, help="seed for splits and model"
    )
    train.add_argument(
        "--validation-fraction",
        type=float,
        default=settings.validation_fraction,
        help="share of train held out for validation when the data has no validation split",
    )
    train.add_argument(
        "--test-fraction",
        type=float,
        default=settings.test_fraction,
        help="share held out as test when the data has no test split",
    )
    hp_group = train.add_argument_group("hyper-parameters")
    for field in fields(Hyperparameters):
        kind = _type_of(field.default)
        hp_group.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=kind,
            default=field.default,
            help=HYPERPARAMETER_HELP[field.name],
        )
    train.add_argument("--promote", action="store_true", help="promote the new version afterwards")
    train.add_argument(
        "--gate", action="store_true", help="with --promote: only if it passes the gate"
    )
    train.set_defaults(handler=_train)

    promote = commands.add_parser(
        "promote",
        help="make a model version Production (alias 'production' and stage 'Production')",
        description="Point models:/NAME@production and models:/NAME/Production at a version. "
        "Rollback: promote an older version.",
        formatter_class=fmt,
    )
    promote.add_argument("--model-name", default=settings.model_name, help="registered model")
    promote.add_argument("--version", default=None, help="version to promote (default: newest)")
    promote.add_argument(
        "--gate",
        nargs="?",
        const=True,
        default=False,
        type=parse_bool,
        help="refuse (exit 3) if the version scores worse than the current Production version "
        "on the challenger's validation split by more than the tolerance",
    )
    promote.add_argument(
        "--tolerance", type=float, default=settings.gate_tolerance, help="gate tolerance"
    )
    promote.add_argument(
        "--metric", default=settings.gate_metric, help="gate metric (accuracy, f1_macro)"
    )
    promote.add_argument("--reason", default="", help="why: recorded on the version")
    promote.set_defaults(handler=_promote)

    fetch = commands.add_parser(
        "fetch-imdb",
        help="build train/test Parquet files from the public aclImdb_v1.tar.gz archive",
        formatter_class=fmt,
    )
    fetch.add_argument("source", help="path or URL of aclImdb_v1.tar.gz")
    fetch.add_argument("--out", type=Path, default=Path("data/imdb"), help="output folder")
    fetch.set_defaults(handler=_fetch_imdb)


def _type_of(default: object) -> Callable[[str], object]:
    if isinstance(default, bool):
        return parse_bool
    if isinstance(default, int):
        return parse_int
    return type(default)


def _add_data_options(parser: argparse.ArgumentParser, settings: TrainingSettings) -> None:
    parser.add_argument(
        "--data", type=Path, default=settings.data, help="file or folder of labelled text"
    )
    parser.add_argument("--text-column", default=settings.text_column, help="text column name")
    parser.add_argument("--label-column", default=settings.label_column, help="label column name")
    parser.add_argument("--model-name", default=settings.model_name, help="registered model")
    parser.add_argument("--experiment", default=settings.experiment, help="MLflow experiment")


def _train(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.registry import promote
    from training.train import train

    run_settings = settings.model_copy(
        update={
            "data": args.data,
            "text_column": args.text_column,
            "label_column": args.label_column,
            "model_name": args.model_name,
            "experiment": args.experiment,
            "seed": args.seed,
            "validation_fraction": args.validation_fraction,
            "test_fraction": args.test_fraction,
        }
    )
    hp = Hyperparameters(**{f.name: getattr(args, f.name) for f in fields(Hyperparameters)})
    result = train(run_settings, hp)
    print(
        f"trained run {result.run_id}: test accuracy {result.metrics['test_accuracy']:.4f}; "
        f"registered models:/{result.registered_name}/{result.version}"
    )
    if args.promote:
        promote(run_settings, result.version, gate=args.gate, reason="trained with --promote")
        print(f"promoted: models:/{result.registered_name}@production is version {result.version}")
    return 0


def _promote(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.registry import promote

    run_settings = settings.model_copy(
        update={
            "model_name": args.model_name,
            "gate_tolerance": args.tolerance,
            "gate_metric": args.metric,
        }
    )
    done = promote(run_settings, args.version, gate=args.gate, reason=args.reason)
    gate = f" ({done.gate.summary()})" if done.gate else ""
    print(
        f"models:/{done.name}@production is version {done.version} "
        f"(previously {done.previous or 'none'}){gate}"
    )
    return 0


def _fetch_imdb(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.imdb_archive import fetch_imdb

    written = fetch_imdb(args.source, args.out)
    print(
        f"IMDB written to {args.out} ({', '.join(sorted(written))}); train with --data {args.out}"
    )
    return 0


def run_command(args: argparse.Namespace, settings: TrainingSettings) -> int:
    """Run the chosen command; turn expected failures into one line and an exit code."""
    configure_logging(getattr(args, "verbose", False))
    try:
        code: int = args.handler(args, settings)
    except PromotionRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (DataError, PromotionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MlflowException as exc:
        print(f"error: MLflow at {settings.tracking_uri}: {exc.message}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return code


def build_parser(settings: TrainingSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training", description="EmotiTrack training: train, promote, fetch data."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(commands, settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    settings = TrainingSettings()
    args = build_parser(settings).parse_args(argv)
    return run_command(args, settings)
