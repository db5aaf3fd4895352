"""Command line of the training part: ``train``, ``search``, ``promote``, ``repackage`` and
``fetch-imdb``.

Exit codes: 0 done; 2 bad input (data, options, unknown version); 3 promotion refused by the
gate; 4 tracking server or registry unreachable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

from pydantic import ValidationError

from emotitrack.core.options import EXIT_BAD_INPUT, parse_bool, parse_int, report_invalid_settings
from emotitrack.core.progress import configure_logging
from training.errors import GATE_METRICS, DataError, PromotionError, PromotionRefused
from training.hyperparameters import Hyperparameters
from training.presets import AUTO, PRESET_CHOICES, PRESETS, hyperparameters_for, resolve_preset
from training.settings import TrainingSettings

EXIT_REFUSED = 3
EXIT_UNREACHABLE = 4

HYPERPARAMETER_HELP = {
    "ngram_max": "longest word n-gram (1 = unigrams, 3 = up to trigrams)",
    "char_ngram_max": "longest character n-gram, 2..9 (0 = no character n-grams)",
    "max_features": "largest vocabulary per analyzer, most frequent kept (0 = no limit)",
    "min_df": "drop n-grams found in fewer documents than this",
    "max_df": "drop n-grams found in more than this share of documents",
    "sublinear_tf": "use 1 + log(tf) instead of raw term counts (true/false)",
    "negation": "mark words after not/never/n't up to the next punctuation (true/false)",
    "nb_scaling": "scale features by Naive-Bayes log-count ratios, NBSVM-style; binary only",
    "C": "inverse L2 regularisation strength of LogisticRegression",
    "class_weight": "none, or balanced (weights classes inversely to their frequency)",
    "calibration_folds": "folds for temperature calibration of the probabilities (0 = off, "
    "also with calibrate_on=validation)",
    "calibrate_on": "folds (out-of-fold logits of train) or validation (the validation split: "
    "for training texts unlike what the model scores, as SST-2's phrases)",
    "max_iter": "most solver iterations",
}


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
    _add_split_options(train, settings)
    _add_hyperparameter_options(train)
    _add_promote_options(train, "promote the new version afterwards")
    train.set_defaults(handler=_guarded(_train, settings))

    search = commands.add_parser(
        "search",
        help="cross-validated hyper-parameter search, one MLflow child run per candidate; the "
        "best is refitted, tested once and registered",
        description="Search a grid around the preset with k-fold cross-validation on the "
        "training split only: two classes, n-gram length x negation marking x NB scaling x C; "
        "more, n-gram length x character n-grams x class weights x C; C at 0.1, 0.3, 1 and 3 "
        "times the preset's (or the given) C. A hyper-parameter given on the command line is "
        "kept as given, not searched. Compare the candidates in the MLflow UI (select the child "
        "runs, Compare, parallel coordinates).",
        formatter_class=fmt,
    )
    _add_data_options(search, settings)
    _add_split_options(search, settings)
    search.add_argument(
        "--folds", type=parse_int, default=3, help="cross-validation folds (at least 2)"
    )
    search.add_argument(
        "--max-candidates",
        type=parse_int,
        default=16,
        help="most candidates drawn from the grid (at least 1)",
    )
    search.add_argument(
        "--time-budget-min",
        type=float,
        default=18.0,
        help="start no new feature set after this many minutes (the refit comes on top)",
    )
    search.add_argument(
        "--metric",
        default="auto",
        help="CV metric: accuracy, f1_macro, recall_macro; auto = accuracy for two classes, "
        "recall_macro (average recall) for more",
    )
    _add_promote_options(search, "promote the best afterwards")
    _add_hyperparameter_options(search)
    search.set_defaults(handler=_guarded(_search, settings))

    promote = commands.add_parser(
        "promote",
        help="make a model version Production (alias 'production' and stage 'Production')",
        description="Point models:/NAME@production and models:/NAME/Production at a version. "
        "Rollback: promote an older version.",
        formatter_class=fmt,
    )
    promote.add_argument("--model-name", default=settings.model_name, help="registered model")
    # SUPPRESS: the default help would add "(default: None)" after "(default: newest)"
    promote.add_argument(
        "--version", default=argparse.SUPPRESS, help="version to promote (default: newest)"
    )
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
        "--metric",
        default=settings.gate_metric,
        choices=GATE_METRICS,
        help="gate metric, one where higher is better: " + ", ".join(GATE_METRICS),
    )
    promote.add_argument(
        "--gate-evidence",
        choices=("validation", "shadow"),
        default="validation",
        help="what the gate compares on: the validation rows neither version trained on, or "
        "(shadow) the live requests Production answered and the version scored as the shadow "
        "model, that got feedback (accuracy)",
    )
    promote.add_argument(
        "--prediction-log-url",
        default=argparse.SUPPRESS,  # none shown by --help: the setting's URL may hold a password
        help="prediction log the shadow gate reads (default: EMOTITRACK_PREDICTION_LOG_URL)",
    )
    promote.add_argument(
        "--min-feedback",
        type=parse_int,
        default=argparse.SUPPRESS,
        help="fewest shadow-scored requests with feedback the shadow gate compares on "
        "(default: 200)",
    )
    promote.add_argument("--reason", default="", help="why: recorded on the version")
    promote.set_defaults(handler=_guarded(_promote, settings))

    repackage = commands.add_parser(
        "repackage",
        help="register a version logged before the model format as a new version in it",
        description="Load a version registered with a pickled pipeline (it carries its own "
        "training code), export it to the model format (config and arrays, checked to give "
        "the same probabilities), and register it as a new version of the same model, in the "
        "same run, with its tags and description. Nothing is promoted: promote the new "
        "version when ready.",
        formatter_class=fmt,
    )
    repackage.add_argument("model_uri", help="the version to repackage: models:/NAME/VERSION")
    repackage.set_defaults(handler=_guarded(_repackage, settings))

    fetch = commands.add_parser(
        "fetch-imdb",
        help="build train/test Parquet files from the public aclImdb_v1.tar.gz archive",
        formatter_class=fmt,
    )
    fetch.add_argument("source", help="path or URL of aclImdb_v1.tar.gz")
    fetch.add_argument("--out", type=Path, default=Path("data/imdb"), help="output folder")
    fetch.set_defaults(handler=_guarded(_fetch_imdb, settings))


def _add_promote_options(parser: argparse.ArgumentParser, help_promote: str) -> None:
    parser.add_argument("--promote", action="store_true", help=help_promote)
    parser.add_argument(
        "--gate",
        action="store_true",
        help="with --promote (an error without it): promote only if it passes the gate",
    )


def _add_hyperparameter_options(parser: argparse.ArgumentParser) -> None:
    """``--preset`` and one option per hyper-parameter; an option given overrides the preset,
    an empty value (how MLproject passes "not set") leaves the preset's."""
    group = parser.add_argument_group(
        "hyper-parameters",
        "Defaults come from the data set's preset (--preset auto: detected from the data path "
        "among " + ", ".join(PRESETS) + "); the values shown are those without a preset.",
    )
    group.add_argument(
        "--preset",
        default=AUTO,
        choices=PRESET_CHOICES,
        help="hyper-parameters chosen for a data set (auto: detected from --data)",
    )
    group.add_argument(
        "--hyperparameters",
        default="",
        metavar="KEY=VALUE,...",
        help="overrides as one string, e.g. 'C=10,ngram_max=2' (what MLproject passes)",
    )
    for field in fields(Hyperparameters):
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=_optional(_type_of(field.default)),
            default=argparse.SUPPRESS,
            help=f"{HYPERPARAMETER_HELP[field.name]} (default: {field.default})",
        )


def _type_of(default: object) -> Callable[[str], object]:
    if isinstance(default, bool):
        return parse_bool
    if isinstance(default, int):
        return parse_int
    return type(default)


def _optional(parse: Callable[[str], object]) -> Callable[[str], object]:
    def parse_or_unset(value: str) -> object:
        return None if value.strip() == "" else parse(value)

    parse_or_unset.__name__ = getattr(parse, "__name__", "value")  # argparse's error messages
    return parse_or_unset


def parse_overrides(text: str) -> dict[str, object]:
    """``"C=10,ngram_max=2"`` → ``{"C": 10.0, "ngram_max": 2}``, typed like the fields."""
    kinds = {f.name: _type_of(f.default) for f in fields(Hyperparameters)}
    overrides: dict[str, object] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in kinds:
            raise DataError(
                f"hyper-parameter override {item!r}: expected KEY=VALUE with KEY one of "
                f"{', '.join(kinds)}"
            )
        try:
            overrides[key] = kinds[key](value.strip())
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise DataError(f"hyper-parameter {key}: {exc}") from None
    return overrides


def given_hyperparameters(args: argparse.Namespace) -> dict[str, object]:
    """The hyper-parameters this command line sets (``--hyperparameters`` and one option each;
    an empty value is not set): what overrides the preset, and what a search keeps fixed."""
    overrides = parse_overrides(getattr(args, "hyperparameters", ""))
    overrides |= {
        f.name: getattr(args, f.name)
        for f in fields(Hyperparameters)
        if getattr(args, f.name, None) is not None
    }
    return overrides


def chosen_hyperparameters(args: argparse.Namespace) -> tuple[str | None, Hyperparameters]:
    """The preset named or detected, with the options given on the command line on top."""
    preset = resolve_preset(args.preset, Path(args.data))
    try:
        return preset, hyperparameters_for(preset, given_hyperparameters(args))
    except ValueError as exc:
        raise DataError(f"hyper-parameters: {exc}") from None


def _add_data_options(parser: argparse.ArgumentParser, settings: TrainingSettings) -> None:
    parser.add_argument(
        "--data", type=Path, default=settings.data, help="file or folder of labelled text"
    )
    parser.add_argument("--text-column", default=settings.text_column, help="text column name")
    parser.add_argument("--label-column", default=settings.label_column, help="label column name")
    parser.add_argument("--model-name", default=settings.model_name, help="registered model")
    parser.add_argument("--experiment", default=settings.experiment, help="MLflow experiment")


def _add_split_options(parser: argparse.ArgumentParser, settings: TrainingSettings) -> None:
    parser.add_argument(
        "--seed", type=parse_int, default=settings.seed, help="seed for splits, folds and model"
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=settings.validation_fraction,
        help="share of train held out for validation when the data has no validation split",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=settings.test_fraction,
        help="share held out as test when the data has no test split",
    )


def with_options(settings: TrainingSettings, options: dict[str, object]) -> TrainingSettings:
    """``settings`` with ``options`` on top, validated like the environment's values
    (``model_copy(update=...)`` would let ``--validation-fraction 0.8`` past the bounds)."""
    return TrainingSettings.model_validate(settings.model_dump() | options)


def _run_settings(args: argparse.Namespace, settings: TrainingSettings) -> TrainingSettings:
    """The settings with this command line's data, split and registry options on top."""
    return with_options(
        settings,
        {
            "data": args.data,
            "text_column": args.text_column,
            "label_column": args.label_column,
            "model_name": args.model_name,
            "experiment": args.experiment,
            "seed": args.seed,
            "validation_fraction": args.validation_fraction,
            "test_fraction": args.test_fraction,
        },
    )


def _check_gate_needs_promote(args: argparse.Namespace) -> None:
    if args.gate and not args.promote:
        # Silently ignoring it would let a user believe the gate had checked something.
        raise DataError("--gate only applies with --promote: add --promote or drop --gate")


def _train(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.registry import promote
    from training.train import train

    _check_gate_needs_promote(args)
    run_settings = _run_settings(args, settings)
    preset, hp = chosen_hyperparameters(args)
    print(f"hyper-parameters ({'preset ' + preset if preset else 'no preset'}): {hp.as_params()}")
    result = train(run_settings, hp, preset)
    print(
        f"trained run {result.run_id}: test accuracy {result.metrics['test_accuracy']:.4f}; "
        f"registered models:/{result.registered_name}/{result.version}"
    )
    if args.promote:
        promote(run_settings, result.version, gate=args.gate, reason="trained with --promote")
        print(f"promoted: models:/{result.registered_name}@production is version {result.version}")
    return 0


def _search(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.registry import promote
    from training.search import SearchOptions, search

    _check_gate_needs_promote(args)
    run_settings = _run_settings(args, settings)
    _, base = chosen_hyperparameters(args)
    try:
        options = SearchOptions(
            folds=args.folds,
            max_candidates=args.max_candidates,
            time_budget_min=args.time_budget_min,
            metric=args.metric,
        )
    except ValueError as exc:
        raise DataError(f"search options: {exc}") from None
    pinned = frozenset(given_hyperparameters(args))
    result = search(run_settings, options, base, pinned=pinned)
    print(
        f"search run {result.parent_run_id}: {result.evaluated} candidates, best cv "
        f"{result.metric} {result.best.mean:.4f} ({result.best.hp.as_params()}); test accuracy "
        f"{result.training.metrics['test_accuracy']:.4f}; registered "
        f"models:/{result.training.registered_name}/{result.training.version}"
    )
    if args.promote:
        promote(run_settings, result.training.version, gate=args.gate, reason="best of a search")
        print(f"promoted: models:/{result.training.registered_name}@production is version "
              f"{result.training.version}")  # fmt: skip
    return 0


def _promote(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.registry import promote

    run_settings = with_options(
        settings,
        {
            "model_name": args.model_name,
            "gate_tolerance": args.tolerance,
            "gate_metric": args.metric,
        },
    )
    version = getattr(args, "version", None)
    if args.gate_evidence != "validation" and not args.gate:
        raise DataError("--gate-evidence only applies with --gate: add --gate or drop it")
    shadow_options = {}
    if hasattr(args, "min_feedback"):
        if args.min_feedback < 1:
            raise DataError(f"--min-feedback {args.min_feedback}: give at least 1")
        shadow_options["min_feedback"] = args.min_feedback
    done = promote(
        run_settings,
        version,
        gate=args.gate,
        reason=args.reason,
        evidence=args.gate_evidence,
        prediction_log_url=getattr(args, "prediction_log_url", run_settings.prediction_log_url),
        **shadow_options,
    )
    gate = f" ({done.gate.summary()})" if done.gate else ""
    print(
        f"models:/{done.name}@production is version {done.version} "
        f"(previously {done.previous or 'none'}){gate}"
    )
    return 0


def _repackage(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.export import RepackageError, repackage

    try:
        uri = repackage(args.model_uri, settings.tracking_uri)
    except RepackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"repackaged {args.model_uri} as {uri} (not promoted)")
    return 0


def _fetch_imdb(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from training.imdb_archive import fetch_imdb

    written = fetch_imdb(args.source, args.out)
    print(
        f"IMDB written to {args.out} ({', '.join(sorted(written))}); train with --data {args.out}"
    )
    return 0


def _guarded(
    command: Callable[[argparse.Namespace, TrainingSettings], int], settings: TrainingSettings
) -> Callable[[argparse.Namespace], int]:
    """The command with its settings bound and expected failures turned into one line and an
    exit code."""

    def run(args: argparse.Namespace) -> int:
        # Here, not at the top: `emotitrack serve` and `monitor` should not import MLflow's
        # tracking client through training's command line.
        from mlflow.exceptions import MlflowException

        try:
            return command(args, settings)
        except PromotionRefused as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        except ValidationError as exc:  # before DataError's ValueError kin: its own form
            return report_invalid_settings(exc)
        except (DataError, PromotionError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except MlflowException as exc:
            print(f"error: MLflow at {settings.tracking_uri}: {exc.message}", file=sys.stderr)
            return EXIT_UNREACHABLE

    return run


def build_parser(settings: TrainingSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="EmotiTrack training: train, search, promote, fetch data.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(commands, settings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = TrainingSettings()
        parser = build_parser(settings)
    except ValidationError as exc:  # a bad EMOTITRACK_* variable: one line, not a traceback
        return report_invalid_settings(exc, from_environment=True)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    code: int = args.handler(args)
    return code
