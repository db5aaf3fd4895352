"""requirements.txt (Heroku's buildpack, conda.yaml) must pin exactly what the image installs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import yaml

REPO = Path(__file__).resolve().parents[2]


def _writer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "requirements_txt", REPO / "scripts" / "requirements_txt.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_txt_is_the_runtime_lock_without_hashes_plus_the_project() -> None:
    lock = (REPO / "requirements-runtime.lock").read_text()
    written = (REPO / "requirements.txt").read_text()
    assert written == _writer().requirements_txt(lock), "run `make lock`"
    lines = [line for line in written.splitlines() if line and not line.startswith("#")]
    assert "--hash" not in written and lines[-1] == "."
    pinned = {line.split("==")[0] for line in lines[:-1]}
    assert {"mlflow[auth]", "scikit-learn", "evidently", "fastapi"} <= pinned
    assert len(lines) - 1 == lock.count("==")  # every pin, once


def test_conda_env_and_heroku_use_it() -> None:
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict))
    assert pip == ["--requirement requirements.txt"]
    assert "python=3.11" in conda["dependencies"]
    # Heroku's buildpack picks Python from .python-version; pyproject allows 3.11 only
    assert (REPO / ".python-version").read_text().strip() == "3.11"
