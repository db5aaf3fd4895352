"""``emotitrack``: one command for every part (``train``, ``search``, ``promote``, ``fetch-imdb``,
``serve``, ``monitor``, ``demo``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pydantic import ValidationError

from monitoring.cli import add_monitor_command
from serving.cli import add_serve_command
from training.cli import (
    add_commands,
    report_invalid_settings,
    run_command,
)
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
    add_monitor_command(commands)
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
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace, settings: TrainingSettings) -> int:
    from emotitrack.demo import run_demo

    return run_demo(settings, ui=not args.no_ui, host=args.host, port=args.port)


def main(argv: Sequence[str] | None = None) -> int:
    # Every part's settings are read here (the serve and monitor options take their defaults
    # from them): a bad EMOTITRACK_* variable is one line and exit 2, whatever the command.
    try:
        settings = TrainingSettings()
        parser = build_parser(settings)
    except ValidationError as exc:
        return report_invalid_settings(exc, from_environment=True)
    return run_command(parser.parse_args(argv), settings)
