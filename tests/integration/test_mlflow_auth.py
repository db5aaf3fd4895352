"""The tracking server as docker-compose.yml runs it: MLflow's basic-auth app, the admin from
the environment; our training CLI and the API log in with MLFLOW_TRACKING_USERNAME/PASSWORD."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from harness.servers import mlflow_server, start_api
from tests.conftest import REPO

pytestmark = pytest.mark.integration

ADMIN = ("emotitrack-admin", "a-long-test-password-81f2")
REGISTERED = "/api/2.0/mlflow/registered-models/get?name=emotitrack-sentiment"


@contextmanager
def mlflow_with_basic_auth(workdir: Path) -> Iterator[str]:
    """``mlflow server --app-name basic-auth`` with the repository's auth config (its user store
    moved into ``workdir``) and the admin's credentials in the environment, as in compose."""
    config = (REPO / "deploy" / "mlflow" / "basic_auth.ini").read_text()
    config = config.replace("sqlite:////mlauth/basic_auth.db", f"sqlite:///{workdir / 'auth.db'}")
    (workdir / "basic_auth.ini").write_text(config)
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(workdir / "basic_auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret-key",
    }
    with mlflow_server(
        f"sqlite:///{workdir / 'mlflow.db'}",
        workdir / "artifacts",
        workdir / "mlflow-server.log",
        app_name="basic-auth",
        env=env,
    ) as url:
        yield url


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[str]:
    with mlflow_with_basic_auth(tmp_path) as url:
        yield url


def emotitrack(
    *args: str, tracking: str, cwd: Path, credentials: tuple[str, str] | None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking}
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(name, None)
    if credentials:
        env |= {
            "MLFLOW_TRACKING_USERNAME": credentials[0],
            "MLFLOW_TRACKING_PASSWORD": credentials[1],
        }
    return subprocess.run(
        [sys.executable, "-m", "emotitrack", *args],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_training_and_serving_log_in_and_strangers_are_refused(
    tracking_server: str, imdb_sample: Path, tmp_path: Path
) -> None:
    # without credentials, or with a wrong password: refused, and nothing registered
    assert httpx.get(f"{tracking_server}{REGISTERED}").status_code == 401
    wrong = httpx.get(f"{tracking_server}{REGISTERED}", auth=(ADMIN[0], "guess"))
    assert wrong.status_code == 401
    refused = emotitrack(
        "train", "--data", str(imdb_sample), "--max-features", "5000",
        tracking=tracking_server, cwd=tmp_path, credentials=None,
    )  # fmt: skip
    assert refused.returncode == 4, refused.stderr[-2000:]
    assert refused.stderr.strip().splitlines()[-1].startswith(f"error: MLflow at {tracking_server}")
    assert httpx.get(f"{tracking_server}{REGISTERED}", auth=ADMIN).status_code == 404

    # with the credentials from the environment: a run, a registered version, a promotion
    trained = emotitrack(
        "train", "--data", str(imdb_sample), "--max-features", "5000", "--promote",
        tracking=tracking_server, cwd=tmp_path, credentials=ADMIN,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    model = httpx.get(f"{tracking_server}{REGISTERED}", auth=ADMIN).json()["registered_model"]
    assert model["aliases"] == [{"alias": "production", "version": "1"}]

    # the API resolves and loads Production through the authenticated server
    api = start_api(
        tracking_server,
        tmp_path,
        extra_env={"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": ADMIN[1]},
    )
    try:
        assert httpx.get(f"{api.url}/ready").json()["model_version"] == "1"
        answer = httpx.post(f"{api.url}/predict", json={"text": "A delightful film."})
        assert answer.status_code == 200 and answer.json()["model_version"] == "1"
    finally:
        assert api.terminate() == 0
    assert ADMIN[1] not in api.output()
