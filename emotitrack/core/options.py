"""Command-line conventions every part follows: option parsers and the one-line settings error."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

EXIT_BAD_INPUT = 2


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


def report_invalid_settings(exc: ValidationError, from_environment: bool = False) -> int:
    """A pydantic validation error as one line (the setting, its value, what is wrong) and exit
    code 2: a traceback would bury which value to fix."""
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        if from_environment:
            name = f"EMOTITRACK_{name.upper()}"
        problems.append(f"{name}={error['input']!r}: {error['msg']}")
    print(f"error: invalid setting {'; '.join(problems)}", file=sys.stderr)
    return EXIT_BAD_INPUT
