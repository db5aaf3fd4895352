"""Write ``docs/configuration.md``, the configuration reference, from each part's settings model.

    python -m emotitrack.settings_reference           # rewrite docs/configuration.md
    python -m emotitrack.settings_reference --check   # exit 1 if it is out of date

It sits beside the composition root (``emotitrack.cli``) because it imports every part's
settings, which the shared core may not (import-linter's layers contract). Only the models'
declarations are read, never the environment: no value set on this machine, secret or not,
can end up in the page.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from batch.settings import BatchSettings
from monitoring.retention import RetentionSettings
from monitoring.settings import MonitoringSettings
from serving.settings import ServingSettings
from training.settings import TrainingSettings

REPO = Path(__file__).resolve().parent.parent
DOCS_PAGE = REPO / "docs" / "configuration.md"
COMMAND = "python -m emotitrack.settings_reference"


@dataclass(frozen=True)
class Part:
    title: str
    module: str
    settings: type[BaseSettings]
    read_by: str


PARTS = (
    Part(
        "Training",
        "training/settings.py",
        TrainingSettings,
        "`emotitrack train`, `search`, `promote`, `demo` and `monitor --retrain-on-drift`",
    ),
    Part("Serving", "serving/settings.py", ServingSettings, "`emotitrack serve` (the API)"),
    Part("Monitoring", "monitoring/settings.py", MonitoringSettings, "`emotitrack monitor`"),
    Part("Batch scoring", "batch/settings.py", BatchSettings, "`emotitrack score`"),
    Part("Retention", "monitoring/retention.py", RetentionSettings, "`emotitrack prune`"),
)
# Read by other code than the settings models (MLflow, prometheus_client, the serve command).
OTHER_VARIABLES = (
    (
        "PORT",
        "`python -m serving`, `emotitrack serve`",
        "Default of `--port` (8000 when unset); Heroku sets it.",
    ),
    (
        "MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD",
        "MLflow, in every part",
        "Login for a tracking server with basic authentication (docker-compose.yml runs one).",
    ),
    (
        "PROMETHEUS_MULTIPROC_DIR",
        "prometheus_client, in the API",
        "Where every worker writes its metrics so `/metrics` sums them; emptied at start. "
        "Unset with `--workers` above 1: a temporary folder.",
    ),
)
# Attributes of pydantic's constraint objects (``Field(gt=0)`` holds ``Gt(gt=0)``).
_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def environment_variables(settings: type[BaseSettings], name: str, field: FieldInfo) -> list[str]:
    """The variables that set a field: its aliases when it declares some, else prefix + name."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [choice for choice in alias.choices if isinstance(choice, str)]
    if isinstance(alias, str):
        return [alias]
    prefix = str(settings.model_config.get("env_prefix", ""))
    return [f"{prefix}{name}".upper()]


def type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``secret``, ``list of str``, ``one of a, b``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(arg) for arg in args)
    if origin in (Union, types.UnionType):
        kept = [arg for arg in args if arg is not type(None)]
        return " or ".join(type_name(arg) for arg in kept)
    if origin in (tuple, list):
        return f"list of {type_name(args[0])}" if args else "list"
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return "one of " + ", ".join(str(member.value) for member in annotation)
    return getattr(annotation, "__name__", str(annotation))


def bounds(field: FieldInfo) -> str:
    """The field's numeric constraints, e.g. ``> 0, < 0.5``."""
    found = []
    for constraint in field.metadata:
        for attribute, symbol in _BOUNDS:
            value = getattr(constraint, attribute, None)
            if value is not None:
                found.append(f"{symbol} {value}")
    return ", ".join(found)


def default_text(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if _is_secret(field.annotation):
        return "unset" if value in (None, ()) else "set (hidden)"
    if value is None:
        return "unset"
    if value == ():
        return "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Enum):
        value = value.value
    return f"`{value}`"


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(arg) for arg in get_args(annotation))


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def part_section(part: Part) -> list[str]:
    lines = [
        f"## {part.title}",
        "",
        f"`{part.settings.__name__}` in [`{part.module}`](../{part.module}), read by {part.read_by}.",
        "",
        "| variable | type | default | description |",
        "|---|---|---|---|",
    ]
    for name, field in part.settings.model_fields.items():
        variables = " or ".join(f"`{v}`" for v in environment_variables(part.settings, name, field))
        kind = type_name(field.annotation)
        limits = bounds(field)
        if limits:
            kind = f"{kind} ({limits})"
        description = field.description or ""
        lines.append(
            f"| {variables} | {_cell(kind)} | {_cell(default_text(field))} | {_cell(description)} |"
        )
    return [*lines, ""]


def configuration_reference() -> str:
    """The whole page, as ``docs/configuration.md`` should hold it."""
    lines = [
        "# Configuration reference",
        "",
        f"Generated from the settings models by `{COMMAND}`; `tests/unit/test_docs.py` fails",
        "when this page and the models disagree.",
        "",
        "Every part reads its own settings from environment variables; command-line options",
        "override them per run (`emotitrack COMMAND --help` shows each option with its default).",
        "Values are checked against the types and bounds below when a command starts.",
        "A variable listed under several parts is one setting they share.",
        "Secret values are never shown here.",
        "",
    ]
    for part in PARTS:
        lines += part_section(part)
    lines += [
        "## Read elsewhere",
        "",
        "| variable | read by | description |",
        "|---|---|---|",
        *(
            f"| `{'`, `'.join(v.split(', '))}` | {who} | {what} |"
            for v, who, what in OTHER_VARIABLES
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=COMMAND, description="Write docs/configuration.md from the settings models."
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the page differs instead of writing it"
    )
    parser.add_argument("--out", type=Path, default=DOCS_PAGE, help="page to write or check")
    args = parser.parse_args(argv)
    page = configuration_reference()
    if args.check:
        current = args.out.read_text() if args.out.is_file() else ""
        if current != page:
            print(f"{args.out} is out of date: run `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
