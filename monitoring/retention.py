"""``emotitrack prune``: the prediction log's retention. Keeps today and the ``keep_days`` days
before it; on PostgreSQL drops whole day partitions (and creates the days ahead: run it daily,
from cron or a Kubernetes CronJob), on SQLite deletes by ``created_at``. Exit 0 done, 2 cannot
run (bad option, store unreachable)."""

from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from emotitrack.core.log_queries import PruneResult, prune
from emotitrack.core.options import parse_int
from emotitrack.core.prediction_log import create_store_engine, prepare_log, redacted_url

EXIT_CANNOT_RUN = 2


class RetentionSettings(BaseSettings):
    """Every field can be set as ``EMOTITRACK_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="EMOTITRACK_", extra="ignore")

    prediction_log_url: str = Field(
        "sqlite:///predictions.db",
        description="Prediction log the API writes (SQLAlchemy URL); `emotitrack prune` trims it.",
    )
    log_retention_days: int = Field(
        30,
        ge=1,
        description="`emotitrack prune` keeps today and this many days before it; older "
        "predictions and their feedback are removed (whole day partitions on PostgreSQL).",
    )


def add_prune_command(commands: argparse._SubParsersAction) -> None:
    settings = RetentionSettings()
    parser = commands.add_parser(
        "prune",
        help="retention: remove predictions older than N days from the prediction log",
        description="Remove predictions (and their feedback) older than today minus N days. "
        "PostgreSQL: drops whole day partitions and creates the days ahead; SQLite: deletes rows.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--keep-days",
        type=_days,
        default=settings.log_retention_days,
        help="days kept before today (EMOTITRACK_LOG_RETENTION_DAYS)",
    )
    parser.add_argument(
        "--log-url",
        default=settings.prediction_log_url,
        help="prediction log (EMOTITRACK_PREDICTION_LOG_URL)",
    )
    parser.set_defaults(handler=run_prune)


def _days(value: str) -> int:
    days = parse_int(value)
    if days < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 day, got {value!r}")
    return days


def run_prune(args: argparse.Namespace) -> int:
    try:
        result = prune_log(args.log_url, args.keep_days)
    except sa.exc.SQLAlchemyError as exc:
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"emotitrack prune: prediction log {redacted_url(args.log_url)} unusable: "
            f"{type(exc).__name__}: {problem}",
            file=sys.stderr,
        )
        return EXIT_CANNOT_RUN
    dropped = result.dropped_partitions
    partitions = f"{len(dropped)} day partitions dropped, " if dropped else ""
    print(
        f"pruned {redacted_url(args.log_url)}: {partitions}{result.deleted_rows} predictions and "
        f"{result.deleted_feedback} feedback rows deleted; kept since {result.cutoff.isoformat()}"
    )
    return 0


def prune_log(url: str, keep_days: int) -> PruneResult:
    """Migrate the log if it is older than this release (the migrations know its layout),
    then prune it."""
    engine = create_store_engine(url)
    try:
        prepare_log(engine)
        return prune(engine, keep_days)
    finally:
        engine.dispose()
