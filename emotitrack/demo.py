"""The main job, end to end on embedded defaults: train, register, promote, serve, send traffic,
build a drift report from that traffic, and leave the MLflow UI and the API running for a person
to look at."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd

from emotitrack.core.progress import log, step
from monitoring.job import DeliveryError, run_monitoring
from monitoring.settings import MonitoringSettings
from serving.settings import ServingSettings
from training.presets import detect_preset, hyperparameters_for
from training.registry import promote
from training.settings import TrainingSettings
from training.train import train

DEMO_TRAFFIC = 200  # held-out reviews sent to the API, so the prediction log holds real traffic


def run_demo(settings: TrainingSettings, *, ui: bool, host: str, port: int) -> int:
    preset = detect_preset(settings.data)
    result = train(settings, hyperparameters_for(preset, {}), preset)
    done = promote(settings, result.version, gate=True, reason="emotitrack demo")
    print(
        f"run {result.run_id}: test accuracy {result.metrics['test_accuracy']:.4f}; "
        f"models:/{done.name}@production -> version {done.version}",
        flush=True,
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    api_port = _free_port(host, 8000)
    api_url = f"http://{host}:{api_port}"
    api = _start(_serve_command(host, api_port), env)
    processes = [api]
    try:
        with step(f"starting the API at {api_url}"):
            _wait_until_ok(f"{api_url}/ready", api)
        with step(f"sending {DEMO_TRAFFIC} held-out reviews to {api_url}/predict/batch"):
            summary = _send_traffic(api_url, settings)
        print(
            f"API: {api_url}/docs  ({summary}; log: {ServingSettings().prediction_log_url})",
            flush=True,
        )
        _stop(api)  # flush the prediction log before monitoring reads it
        try:
            report = run_monitoring(
                MonitoringSettings(tracking_uri=settings.tracking_uri), last=DEMO_TRAFFIC
            )
        except DeliveryError as exc:  # the report is written; say what did not go through
            log.warning("%s", exc)
            report = exc.summary
        verdict = "DRIFT" if report.dataset_drift else "no drift"
        print(f"drift report ({verdict}): file://{Path(report.report_html).resolve()}", flush=True)
        if not ui:
            return 0
        # Ctrl-C ends the demo even when it was started with SIGINT ignored (a background job
        # of a script, or a parent that ignores it: Python then installs no handler).
        signal.signal(signal.SIGINT, signal.default_int_handler)
        processes[0] = api = _start(_serve_command(host, api_port), env)
        _wait_until_ok(f"{api_url}/ready", api)
        ui_port = _free_port(host, port)
        ui_url = f"http://{host}:{ui_port}"
        processes.append(_start(_mlflow_ui_command(settings.tracking_uri, host, ui_port), env))
        with step(f"starting the MLflow UI at {ui_url}"):
            _wait_until_ok(f"{ui_url}/health", processes[-1])
        print(f"MLflow UI: {ui_url}/#/models/{done.name}  (Ctrl-C to stop)", flush=True)
        processes[-1].wait()
    except KeyboardInterrupt:
        log.info("stopping")
    finally:
        for process in processes:
            _stop(process)
    return 0


def _send_traffic(api_url: str, settings: TrainingSettings) -> str:
    test_file = sorted(Path(settings.data).glob("test.*")) if Path(settings.data).is_dir() else []
    if test_file:
        texts = (
            pd.read_parquet(test_file[0])
            if test_file[0].suffix == ".parquet"
            else pd.read_csv(test_file[0])
        )
        sample = texts[settings.text_column].sample(
            n=min(DEMO_TRAFFIC, len(texts)), random_state=settings.seed
        )
        batch = [str(t) for t in sample]
    else:
        batch = ["A wonderful film.", "A dreadful film."] * (DEMO_TRAFFIC // 2)
    request = urllib.request.Request(  # noqa: S310 - our own loopback API
        f"{api_url}/predict/batch",
        data=json.dumps({"texts": batch}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - our loopback API  # nosec B310
        predictions = json.loads(response.read())["predictions"]
    shares = pd.Series([p["sentiment"] for p in predictions]).value_counts(normalize=True).round(2)
    return f"{len(predictions)} predictions, " + ", ".join(
        f"{k} {v:.0%}" for k, v in shares.items()
    )


def _serve_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "serving", "--host", host, "--port", str(port)]


def _mlflow_ui_command(tracking_uri: str, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", tracking_uri,
        "--host", host, "--port", str(port), "--workers", "1",
    ]  # fmt: skip


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    # The MLflow server's job runner starts many processes the demo never uses.
    env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, env=env)  # noqa: S603 - fixed commands, our own interpreter


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)  # the API flushes its prediction log on SIGTERM
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _wait_until_ok(url: str, process: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process for {url} exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL  # nosec B310
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


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
