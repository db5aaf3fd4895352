"""The main job, end to end on embedded defaults: train, register, promote, show the MLflow UI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from training.model import Hyperparameters
from training.progress import log, step
from training.registry import promote
from training.settings import TrainingSettings
from training.train import train


def run_demo(settings: TrainingSettings, *, ui: bool, host: str, port: int) -> int:
    result = train(settings, Hyperparameters())
    done = promote(settings, result.version, gate=True, reason="emotitrack demo")
    print(
        f"run {result.run_id}: test accuracy {result.metrics['test_accuracy']:.4f}; "
        f"models:/{done.name}@production -> version {done.version}"
    )
    if not ui:
        return 0
    port = _free_port(host, port)
    url = f"http://{host}:{port}"
    server = _start_mlflow_ui(settings.tracking_uri, host, port)
    try:
        with step(f"starting the MLflow UI at {url}"):
            _wait_until_healthy(url, server)
        print(f"MLflow UI: {url}/#/models/{done.name}  (Ctrl-C to stop)", flush=True)
        server.wait()
    except KeyboardInterrupt:
        log.info("stopping the MLflow UI")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


def _start_mlflow_ui(tracking_uri: str, host: str, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # 2 processes, not 15
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking_uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return subprocess.Popen(command, env=env)  # noqa: S603 - fixed command, our own interpreter


def _wait_until_healthy(url: str, server: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:  # noqa: S310 - our own loopback URL
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server at {url} not healthy after {timeout:.0f} s")


def _free_port(host: str, preferred: int) -> int:
    """``preferred`` if nothing listens there, else a free port the OS picks."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port on {host}")
