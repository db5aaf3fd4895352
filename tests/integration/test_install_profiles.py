"""The API's install profile, installed as its image installs it: a fresh virtualenv from
requirements-serving.lock plus this project serves a model that the full profile trained, and
holds none of training's, monitoring's or the tracking server's libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from harness.processes import Server, free_port
from harness.registries import Registry, make_registry
from harness.servers import api_environment
from tests.conftest import REPO

pytestmark = pytest.mark.integration
UV = Path(sys.executable).parent / "uv"  # installed by `make` with the dev virtualenv
NOT_SERVED = ("evidently", "matplotlib", "sklearn", "scipy", "flask", "pyarrow")


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def serving_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a virtualenv built once for this module, as the `api` image builds
    it: the lock exactly (hashes checked), then the project without dependencies."""
    venv = tmp_path_factory.mktemp("serving-profile") / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    lock = REPO / "requirements-serving.lock"
    run(UV, "pip", "sync", "--quiet", "--compile-bytecode", "--python", python, "--require-hashes", lock)  # fmt: skip
    run(UV, "pip", "install", "--quiet", "--python", python, "--no-deps", "-e", REPO)
    return python


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Trained and registered by this (the full) virtualenv."""
    return make_registry(imdb_sample, tmp_path_factory.mktemp("profile-registry"))


def test_the_serving_profile_is_consistent_and_leaves_the_other_parts_out(
    serving_python: Path, tmp_path: Path
) -> None:
    run(UV, "pip", "check", "--python", serving_python)
    for module in NOT_SERVED:
        missing = subprocess.run(
            [serving_python, "-c", f"import {module}"], cwd=tmp_path, capture_output=True, text=True
        )
        assert missing.returncode != 0 and "ModuleNotFoundError" in missing.stderr, module
    run(serving_python, "-c", "import mlflow, fastapi, uvicorn, serving", cwd=tmp_path)


def test_the_api_serves_from_the_serving_profile(
    serving_python: Path, registry: Registry, tmp_path: Path
) -> None:
    run(serving_python, "-c", "import serving.app", cwd=tmp_path)  # its failure says what's missing
    port = free_port()
    command = [str(serving_python), "-m", "serving", "--port", str(port)]
    env = api_environment(registry.tracking_uri, tmp_path, poll_interval_s="300")
    with Server(command, port, tmp_path / "api.log", cwd=tmp_path, env=env) as api:
        ready = httpx.get(f"{api.url}/ready", timeout=30)
        assert ready.status_code == 200, api.output()[-3000:]
        answer = httpx.post(f"{api.url}/predict", json={"text": "A lovely, moving film."})
        assert answer.status_code == 200, api.output()[-3000:]
        assert answer.json()["sentiment"] == "positive"
        assert answer.json()["model_version"] == registry.first.version
        assert api.terminate() == 0  # graceful stop: the prediction log flushed
