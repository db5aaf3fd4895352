"""``emotitrack``: one command for every part (``train``, ``search``, ``promote``, ``fetch-imdb``,
``serve``, ``monitor``, ``score``, ``demo``).

This module and ``emotitrack.demo`` are the composition root: the only places that join the parts.
Each part registers its own commands; each handler reads its own part's settings.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import ValidationError

from batch.cli import add_score_command
from emotitrack.core.options import report_invalid_settings
from emotitrack.core.progress import configure_logging
from monitoring.cli import add_monitor_command
from monitoring.index import add_monitor_index_command
from monitoring.retention import add_prune_command
from monitoring.settings import MonitoringSettings
from serving.cli import add_serve_command
from training.cli import add_commands
from training.settings import TrainingSettings


def build_parser(settings: TrainingSettings) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emotitrack",
        description="EmotiTrack sentiment analysis on MLflow. Settings come from EMOTITRACK_* "
        "variables and MLFLOW_TRACKING_URI; options override them.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_commands(commands, settings)
    add_serve_command(commands)
    add_monitor_command(commands, retrain=_retrain)
    add_monitor_index_command(commands)
    add_prune_command(commands)
    add_score_command(commands)
    demo = commands.add_parser(
        "demo",
        help="the main job: train on the default data, register, promote, open the MLflow UI",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument(
        "--no-ui", action="store_true", help="exit when done instead of serving the MLflow UI"
    )
    demo.add_argument("--host", default="127.0.0.1", help="MLflow UI address")
    demo.add_argument(
        "--port", type=int, default=5000, help="MLflow UI port (next free one if taken)"
    )
    demo.set_defaults(handler=lambda args: _demo(args, settings))
    return parser


def _demo(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from emotitrack.demo import run_demo

    return run_demo(settings, ui=not args.no_ui, host=args.host, port=args.port)


def _retrain(settings: MonitoringSettings, report: str) -> None:
    """``monitor --retrain-on-drift``: a new version, promoted only if the gate passes."""
    from training.presets import detect_preset, hyperparameters_for
    from training.registry import PromotionRefused, promote
    from training.settings import TrainingSettings
    from training.train import train

    training = TrainingSettings(tracking_uri=settings.tracking_uri)
    preset = detect_preset(training.data)  # as `emotitrack train` on the same data would
    result = train(training, hyperparameters_for(preset, {}), preset)
    try:
        done = promote(training, result.version, gate=True, reason=f"retrained on drift ({report})")
    except PromotionRefused as exc:
        print(f"retrained version {result.version} not promoted: {exc}")
        return
    print(f"retrained on drift: models:/{done.name}@production is version {done.version}")


def main(argv: Sequence[str] | None = None) -> int:
    # Every part's settings are read here (the serve and monitor options take their defaults
    # from them): a bad EMOTITRACK_* variable is one line and exit 2, whatever the command.
    try:
        settings = TrainingSettings()
        parser = build_parser(settings)
    except ValidationError as exc:
        return report_invalid_settings(exc, from_environment=True)
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    code: int = args.handler(args)
    return code
