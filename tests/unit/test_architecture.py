"""The import contracts in pyproject.toml hold, and a deliberate violation breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def root_packages() -> list[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(config["tool"]["importlinter"]["root_packages"])


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages and the contracts, copied so that a violation can be planted safely."""
    tree = tmp_path_factory.mktemp("tree")
    shutil.copy2(REPO / "pyproject.toml", tree / "pyproject.toml")
    for package in root_packages():
        shutil.copytree(
            REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    return tree


def test_the_repository_keeps_every_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-3000:]


@pytest.mark.parametrize(
    ("module", "planted", "contract"),
    [
        ("emotitrack/core/registry.py", "import serving.service", "composition root > "),
        ("monitoring/job.py", "import serving.model_store", "composition root > "),
        ("serving/service.py", "import sklearn", "serving imports no training"),
    ],
    ids=["core-imports-a-part", "part-imports-a-part", "serving-imports-sklearn"],
)
def test_a_planted_import_breaks_a_contract(
    tree_copy: Path, module: str, planted: str, contract: str
) -> None:
    target = tree_copy / module
    original = target.read_text()
    target.write_text(f"{original}\n{planted}  # planted by the test\n")
    try:
        result = lint_imports(tree_copy)
    finally:
        target.write_text(original)
    assert result.returncode != 0, f"{planted} in {module} broke no contract"
    assert contract in result.stdout and "BROKEN" in result.stdout
