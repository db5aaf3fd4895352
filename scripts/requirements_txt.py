"""Write the hash-free requirement files from their profile locks: each lock's pins without
hashes, then this project. Heroku's Python buildpack and conda.yaml's pip install them; pip's
hash-checking mode would refuse both the project itself and a package pinned with and without
an extra.

Run by `make lock`; tests/unit/test_requirements.py checks the files agree with their locks."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# written file: (the lock it copies, who installs it)
WRITTEN = {
    "requirements.txt": (
        "requirements-serving.lock",
        "the API: Heroku's Python buildpack (Procfile)",
    ),
    "requirements-runtime.txt": (
        "requirements-runtime.lock",
        "every part: conda.yaml's pip (MLproject)",
    ),
}
PROJECT = "# this project\n.\n"


def pins_without_hashes(lock: str) -> list[str]:
    """``name==version`` lines of a uv/pip-compile lock, in order, hashes and comments dropped."""
    pins = []
    for line in lock.splitlines():
        text = line.strip().removesuffix("\\").strip()
        if text and not text.startswith(("#", "--hash")):
            pins.append(text)
    return pins


def requirements_txt(lock: str, lock_name: str, used_by: str) -> str:
    header = (
        f"# Written by `make lock` (scripts/requirements_txt.py) from {lock_name}:\n"
        f"# the same pins without hashes, for {used_by}.\n"
    )
    return header + "".join(f"{pin}\n" for pin in pins_without_hashes(lock)) + PROJECT


def main() -> int:
    for name, (lock_name, used_by) in WRITTEN.items():
        lock = (REPO / lock_name).read_text()
        (REPO / name).write_text(requirements_txt(lock, lock_name, used_by))
    return 0


if __name__ == "__main__":
    sys.exit(main())
