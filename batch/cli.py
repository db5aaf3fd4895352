"""``emotitrack score INPUT OUTPUT``: score a table of texts with one pinned model version.

Exit codes: 0 done, 2 cannot run (bad input, bad option, no such model: one line on stderr,
nothing written)."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from batch.settings import BatchSettings
from emotitrack.core.options import EXIT_BAD_INPUT, parse_int, report_invalid_settings

EXIT_NOT_LOGGED = 4  # OUTPUT written, the prediction log failed midway (as monitor's 4)

BATCH_ID_MAX_CHARS = 64  # the prediction log's batch_id column
# settings field -> the option that sets it, to name the option in an error
OPTION_OF = {
    "model_uri": "--model-uri",
    "text_column": "--text-column",
    "batch_workers": "--workers",
    "batch_rows": "--batch-rows",
    "max_text_chars": "--max-text-chars",
    "spark_master": "--spark-master",
}


def add_score_command(commands: argparse._SubParsersAction) -> None:
    settings = BatchSettings()
    score = commands.add_parser(
        "score",
        help="batch scoring: a Parquet/CSV table of texts -> Parquet with the predictions",
        description="Score INPUT (a Parquet or CSV file, a folder of them, or a glob) with one "
        "model version and write OUTPUT (Parquet): every input column, then label, confidence, "
        "prob_<class>, model_name, model_version, model_run_id and error (why a row got no "
        "prediction). An input column named like an output column is kept as input_<name>.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_score_options(score, settings)
    score.set_defaults(handler=score_command)


def add_score_options(parser: argparse.ArgumentParser, settings: BatchSettings) -> None:
    parser.add_argument("input", help="Parquet or CSV file, folder of them, or glob (quoted)")
    parser.add_argument("output", type=Path, help="Parquet file to write (replaced if present)")
    parser.add_argument(
        "--model-uri", default=settings.model_uri, help="model, pinned to one version for the job"
    )
    parser.add_argument("--text-column", default=settings.text_column, help="column of texts")
    parser.add_argument(
        "--workers",
        type=parse_int,
        default=settings.batch_workers,
        help="scoring processes (default: one per core)",
    )
    parser.add_argument(
        "--batch-rows", type=parse_int, default=settings.batch_rows, help="rows per record batch"
    )
    parser.add_argument(
        "--max-text-chars",
        type=parse_int,
        default=settings.max_text_chars,
        help="longer texts get an error and no prediction",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "spark"),
        default="local",
        help="local: a pool of processes on this machine; spark: mlflow.pyfunc.spark_udf",
    )
    parser.add_argument(
        "--spark-master", default=settings.spark_master, help="Spark master or sc:// URL"
    )
    parser.add_argument(
        "--log-predictions",
        action="store_true",
        help="also store the scored rows in the prediction log (EMOTITRACK_PREDICTION_LOG_URL) "
        "with source 'batch', for `emotitrack monitor --batch-id`",
    )
    parser.add_argument(
        "--batch-id",
        help="id of the rows in the prediction log (default: batch-<UTC time>-<random>); "
        "re-using an id stores each row once",
    )


def score_command(args: argparse.Namespace) -> int:
    from batch.inputs import BadInput, open_input
    from batch.local import score_local
    from batch.model import pin_model
    from batch.table import output_layout
    from emotitrack.core.registry import ModelUnavailable

    try:
        settings = _settings(args)
    except ValidationError as exc:
        return _fail(_invalid_options(exc))
    output: Path = args.output
    problem = (
        _output_problem(output, args.engine)
        or _engine_problem(args.engine)
        or _batch_id_problem(args.batch_id, args.log_predictions)
    )
    if problem:
        return _fail(problem)
    try:
        source = open_input(args.input, settings.text_column)
    except BadInput as exc:
        return _fail(str(exc))
    log = None
    if args.log_predictions:
        from batch.prediction_log import LogUnavailable, open_log

        try:
            log = open_log(settings.prediction_log_url)
        except LogUnavailable as exc:
            return _fail(str(exc))
    with tempfile.TemporaryDirectory(prefix="emotitrack-score-") as workdir:
        try:
            model = pin_model(settings.tracking_uri, settings.model_uri, Path(workdir))
        except ModelUnavailable as exc:
            return _fail(str(exc))
        ref = model.ref
        print(
            f"scoring {len(source.files)} {source.format} file(s) with {ref.load_uri} "
            f"({ref.reference} of {ref.uri}); text column {settings.text_column!r}",
            file=sys.stderr,
        )
        renamed = output_layout(source.dataset.schema, model.classes).renamed
        if renamed:
            kept = ", ".join(f"{a} as {b}" for a, b in renamed.items())
            print(f"input columns kept under new names: {kept}", file=sys.stderr)
        if args.engine == "spark":
            from batch.spark import score_spark

            try:
                summary = score_spark(
                    source,
                    output,
                    model,
                    text_column=settings.text_column,
                    max_text_chars=settings.max_text_chars,
                    master=settings.spark_master,
                )
            except BadInput as exc:
                return _fail(str(exc))
        else:
            summary = score_local(
                source,
                output,
                model,
                text_column=settings.text_column,
                max_text_chars=settings.max_text_chars,
                batch_rows=settings.batch_rows,
                workers=settings.batch_workers or os.cpu_count() or 1,
            )
        print(summary.line(model))
        if log is not None:
            import sqlalchemy as sa

            from batch.prediction_log import log_output, new_batch_id

            batch_id = args.batch_id or new_batch_id()
            try:
                logged = log_output(
                    output,
                    model,
                    engine=log,
                    batch_id=batch_id,
                    text_column=renamed.get(settings.text_column, settings.text_column),
                    store_text=settings.store_text,
                )
            except sa.exc.SQLAlchemyError as exc:  # the store went away after it was checked
                cause = getattr(exc, "orig", None) or exc
                print(
                    f"error: {output} is written, but storing it in the prediction log failed "
                    f"({type(cause).__name__}: {str(cause).strip().splitlines()[0]}); run the "
                    f"same command with --batch-id {batch_id} to store the rest (none twice)",
                    file=sys.stderr,
                )
                return EXIT_NOT_LOGGED
            print(
                f"prediction log: {logged.rows} predictions stored in {logged.store} as batch "
                f"{logged.batch_id} (emotitrack monitor --batch-id {logged.batch_id})"
            )
    return 0


def _engine_problem(engine: str) -> str | None:
    """What the Spark engine lacks on this machine, found before any work starts."""
    if engine != "spark":
        return None
    if importlib.util.find_spec("pyspark") is None:
        return "the Spark engine needs pyspark: pip install 'emotitrack[spark]'"
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        return "the Spark engine needs Java 17 or newer (Debian: openjdk-17-jre-headless)"
    return None


def _batch_id_problem(batch_id: str | None, log_predictions: bool) -> str | None:
    if batch_id is None:
        return None
    if not log_predictions:
        return "--batch-id names rows in the prediction log: add --log-predictions"
    if not 0 < len(batch_id) <= BATCH_ID_MAX_CHARS or not batch_id.isprintable():
        return f"--batch-id {batch_id!r}: give 1 to {BATCH_ID_MAX_CHARS} printable characters"
    return None


def _output_problem(output: Path, engine: str) -> str | None:
    if output.is_dir() and engine == "local":
        return f"{output}: is a folder; give the Parquet file to write"
    if not output.parent.is_dir():
        return f"{output.parent}: no such folder for the output"
    if not os.access(output.parent, os.W_OK):
        return f"{output.parent}: not writable"
    return None


def _settings(args: argparse.Namespace) -> BatchSettings:
    """The environment's settings with the options on top, validated as the environment's are."""
    options = {
        "model_uri": args.model_uri,
        "text_column": args.text_column,
        "batch_workers": args.workers,
        "batch_rows": args.batch_rows,
        "max_text_chars": args.max_text_chars,
        "spark_master": args.spark_master,
    }
    return BatchSettings.model_validate(BatchSettings().model_dump() | options)


def _invalid_options(exc: ValidationError) -> str:
    return "; ".join(
        f"{OPTION_OF.get(str(error['loc'][0]), error['loc'][0])} {error['input']}: {error['msg']}"
        for error in exc.errors()
    )


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m batch INPUT OUTPUT``: the same job as ``emotitrack score``."""
    from emotitrack.core.progress import configure_logging

    try:
        settings = BatchSettings()
    except ValidationError as exc:
        return report_invalid_settings(exc, from_environment=True)
    parser = argparse.ArgumentParser(
        prog="python -m batch", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    add_score_options(parser, settings)
    configure_logging()
    return score_command(parser.parse_args(argv))
