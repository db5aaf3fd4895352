"""``emotitrack monitor``: one drift report. Exit codes a scheduler can use: 0 done (nothing
found, or something found without --fail-on-drift), 2 cannot run (nothing written), 3 one of the
verdicts named by --fail-on found something, with --fail-on-drift, 4 report written but not
logged to MLflow, 5 report written and logged but the Pushgateway push failed. 4 and 5 outrank 3:
the verdict line is printed all the same."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from emotitrack.core.options import parse_bool, parse_int
from monitoring.settings import VERDICT_KEYS, MonitoringSettings

if TYPE_CHECKING:
    from monitoring.drift import DriftSummary

EXIT_CANNOT_RUN = 2
EXIT_DRIFT = 3
EXIT_NOT_LOGGED = 4
EXIT_NOT_PUSHED = 5
# settings field -> the option that sets it, to name the option in an error
OPTION_OF = {
    "model_uri": "--model-uri",
    "window_hours": "--window-hours",
    "min_window_rows": "--min-rows",
    "reports_dir": "--reports-dir",
}


# Called with the settings and the report's path when drift is found and --retrain-on-drift is
# given; the composition root (``emotitrack.cli``) supplies it, so monitoring imports no training.
Retrain = Callable[[MonitoringSettings, str], None]


def add_monitor_command(
    commands: argparse._SubParsersAction, retrain: Retrain | None = None
) -> None:
    settings = MonitoringSettings()
    monitor = commands.add_parser(
        "monitor",
        help="drift report: live predictions vs the Production model's training reference",
        description="Compare a window of the prediction log with the reference sample of the "
        "model's training run (Evidently), write HTML + JSON, log them to MLflow, update the index.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    monitor.add_argument(
        "--model-uri", default=settings.model_uri, help="model whose reference is used"
    )
    monitor.add_argument(
        "--window-hours",
        type=float,
        default=settings.window_hours,
        help="current window: last N hours",
    )
    monitor.add_argument(
        "--last",
        type=parse_int,  # MLproject passes its float parameters as `500.0`
        default=None,
        help="current window: last N predictions instead (0: by hours, as without it)",
    )
    monitor.add_argument(
        "--all-versions", action="store_true", help="include traffic of other model versions"
    )
    monitor.add_argument(
        "--source",
        choices=["api", "batch"],
        default=None,
        help="only predictions from this source (the API's or `emotitrack score "
        "--log-predictions`)",
    )
    monitor.add_argument(
        "--batch-id",
        default=None,
        help="only the predictions of this scored batch, all of them whenever they were scored "
        "(the id `emotitrack score --log-predictions` prints)",
    )
    monitor.add_argument(
        "--min-rows", type=int, default=settings.min_window_rows, help="fewest current rows"
    )
    monitor.add_argument(
        "--reports-dir", type=Path, default=settings.reports_dir, help="output folder"
    )
    monitor.add_argument(
        "--fail-on-drift",
        nargs="?",
        const=True,
        default=False,
        type=parse_bool,  # a value too: MLproject always passes one (`--fail-on-drift false`)
        help=f"exit {EXIT_DRIFT} when a verdict named by --fail-on finds something",
    )
    monitor.add_argument(
        "--fail-on",
        type=parse_verdicts,
        default=list(VERDICT_KEYS),
        metavar="VERDICTS",
        help="which verdicts count for --fail-on-drift and --retrain-on-drift, comma-separated: "
        f"{', '.join(VERDICT_KEYS)} (default: all)",
    )
    monitor.add_argument(
        "--retrain-on-drift",
        action="store_true",
        help="on drift, train on EMOTITRACK_DATA and promote through the gate (as `emotitrack "
        "train --promote --gate`)",
    )
    monitor.set_defaults(handler=lambda args: _monitor(args, retrain))


def _monitor(args: argparse.Namespace, retrain: Retrain | None) -> int:
    from monitoring.job import DeliveryError, MonitoringError, run_monitoring

    try:
        settings = _settings(args)
    except ValidationError as exc:
        print(f"error: {_invalid_options(exc)}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    if args.last is not None and args.last < 0:
        print(f"error: --last {args.last}: expected 0 (window by hours) or more", file=sys.stderr)
        return EXIT_CANNOT_RUN
    undelivered: DeliveryError | None = None
    try:
        summary = run_monitoring(
            settings,
            last=args.last or None,
            all_versions=args.all_versions,
            source=args.source,
            batch_id=args.batch_id,
        )
    except MonitoringError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    except DeliveryError as exc:  # the report exists: its verdict still counts
        summary, undelivered = exc.summary, exc
    found = summary.detected(VERDICT_KEYS[name] for name in args.fail_on)
    _print_verdict(summary, settings, found)
    if found and args.retrain_on_drift and retrain is not None:
        retrain(settings, summary.report_html)
    if undelivered is not None:
        print(f"error: {undelivered}", file=sys.stderr)
        return EXIT_NOT_PUSHED if summary.mlflow_run_id else EXIT_NOT_LOGGED
    return EXIT_DRIFT if found and args.fail_on_drift else 0


def parse_verdicts(value: str) -> list[str]:
    """``data,prediction,quality`` (any non-empty subset, or ``all``)."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if names == ["all"]:
        return list(VERDICT_KEYS)
    unknown = [name for name in names if name not in VERDICT_KEYS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated list of {', '.join(VERDICT_KEYS)} (or all), got {value!r}"
        )
    return names


def _settings(args: argparse.Namespace) -> MonitoringSettings:
    """The environment's settings with the options on top, validated as the environment's are
    (``model_copy(update=...)`` would let ``--min-rows 0`` past the bounds)."""
    options = {
        "model_uri": args.model_uri,
        "window_hours": args.window_hours,
        "min_window_rows": args.min_rows,
        "reports_dir": args.reports_dir,
    }
    return MonitoringSettings.model_validate(MonitoringSettings().model_dump() | options)


def _invalid_options(exc: ValidationError) -> str:
    """One line: each bad option, its value, and what is wrong with it."""
    return "; ".join(
        f"{OPTION_OF.get(str(error['loc'][0]), error['loc'][0])} {error['input']}: {error['msg']}"
        for error in exc.errors()
    )


def _print_verdict(summary: DriftSummary, settings: MonitoringSettings, found: list[str]) -> None:
    """One line: DRIFT (a counted verdict found something) or no drift, then each verdict."""
    drifted = [name for name, c in summary.columns.items() if c.drifted]
    skipped = "".join(f"; {name} drift {why}" for name, why in summary.skipped_columns.items())
    verdicts = "; ".join(
        f"{key.replace('_', ' ')}: {'YES' if verdict['detected'] else 'no'} ({verdict['reason']})"
        for key, verdict in summary.verdicts.items()
    )
    print(
        f"{'DRIFT' if found else 'no drift'}: {verdicts}; "
        f"{summary.drifted_columns} of {len(summary.columns)} columns drifted "
        f"({', '.join(drifted) or 'none'}); {summary.counts['current']} predictions of "
        f"{summary.model['name']} v{summary.model['version']}; report {summary.report_html}; "
        f"index {settings.reports_dir / 'index.html'}; "
        f"MLflow run {summary.mlflow_run_id or 'none'}{skipped}"
    )
    for pair in summary.shadow.get("pairs", []):
        labelled = (
            f"; on {pair['labelled']} labelled: served {pair['primary_accuracy']:.3f}, "
            f"shadow {pair['shadow_accuracy']:.3f}"
            if pair["labelled"]
            else ""
        )
        print(
            f"shadow {pair['shadow_model']} v{pair['shadow_version']}: agrees with "
            f"v{pair['primary_version']} on {pair['agreement']:.1%} of {pair['rows']} "
            f"requests{labelled}"
        )
