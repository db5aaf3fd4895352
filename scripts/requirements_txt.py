"""Write requirements.txt: requirements-runtime.lock's pins without their hashes, then this
project. Heroku's Python buildpack and conda.yaml's pip install it; pip's hash-checking mode
would refuse both the project itself and a package pinned with and without an extra.

Run by `make lock`; tests/unit/test_requirements.py checks the two files agree."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEADER = (
    "# Written by `make lock` (scripts/requirements_txt.py) from requirements-runtime.lock:\n"
    "# the same pins without hashes, for Heroku's Python buildpack and conda.yaml's pip.\n"
)
PROJECT = "# this project (its `emotitrack` command)\n.\n"


def pins_without_hashes(lock: str) -> list[str]:
    """``name==version`` lines of a uv/pip-compile lock, in order, hashes and comments dropped."""
    pins = []
    for line in lock.splitlines():
        text = line.strip().removesuffix("\\").strip()
        if text and not text.startswith(("#", "--hash")):
            pins.append(text)
    return pins


def requirements_txt(lock: str) -> str:
    return HEADER + "".join(f"{pin}\n" for pin in pins_without_hashes(lock)) + PROJECT


def main() -> int:
    lock = (REPO / "requirements-runtime.lock").read_text()
    (REPO / "requirements.txt").write_text(requirements_txt(lock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
