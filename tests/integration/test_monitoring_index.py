"""The report index rebuilt from a real MLflow tracking server: three reports of the real job,
logged over HTTP, copied back into an empty folder by the command the scheduled workflow runs, and
the index drawn offline in Debian's headless Chromium (screenshot kept in test-artifacts/)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pandas as pd
import pytest
from PIL import Image

from emotitrack.cli import main as emotitrack_main
from harness.registries import SMALL
from harness.servers import mlflow_server, start_api
from training.registry import promote
from training.settings import TrainingSettings
from training.train import train

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Every name but loopback resolves to nothing: a CDN fetch would fail and the chart stay blank.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
DRIFT_SHARE_COLOUR = (0x00, 0x72, 0xB2)  # the drift share series (monitoring.index.PALETTE[0])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("index-server")
    backend = f"sqlite:///{work / 'mlflow.db'}"
    with mlflow_server(backend, work / "artifacts", work / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def logged_reports(
    server: str, imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, list[str]]:
    """A model trained and promoted on the server, 300 IMDB reviews through the real API, and
    three monitoring runs of the real job on that log: two record windows and one of hours."""
    work = tmp_path_factory.mktemp("index-reports")
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    os.environ["MLFLOW_TRACKING_URI"] = server
    os.environ.pop("MLFLOW_RUN_ID", None)
    cwd = Path.cwd()
    os.chdir(work)  # nothing may land in a local store
    try:
        mlflow.set_tracking_uri(server)
        settings = TrainingSettings(
            data=imdb_sample, tracking_uri=server, reference_size=200, min_rows=50
        )
        promote(settings, train(settings, SMALL).version, reason="index test")
        texts = pd.read_parquet(imdb_sample / "test.parquet")["text"].head(300).tolist()
        # no texts logged: the job skips the text domain classifier, the report's slowest part
        api = start_api(server, work, store_text="false")
        try:
            answer = httpx.post(f"{api.url}/predict/batch", json={"texts": texts}, timeout=300)
            assert answer.status_code == 200, answer.text[:500]
        finally:
            assert api.terminate() == 0
        reports = work / "job-reports"
        os.environ["EMOTITRACK_PREDICTION_LOG_URL"] = f"sqlite:///{work / 'predictions.db'}"
        for window in (["--last", "120"], ["--last", "240"], ["--window-hours", "24"]):
            done = emotitrack_main(
                ["monitor", *window, "--min-rows", "50", "--reports-dir", str(reports)]
            )
            assert done == 0, window
    finally:
        os.chdir(cwd)
        os.environ.pop("EMOTITRACK_PREDICTION_LOG_URL", None)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    folders = sorted(p.name for p in reports.iterdir() if (p / "summary.json").is_file())
    assert len(folders) == 3
    return reports, folders


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("Debian chromium not installed; run `make system-deps`", pytrace=False)
    command = [
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", OFFLINE, *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def test_index_rebuilt_from_mlflow_draws_every_report_offline(
    server: str, logged_reports: tuple[Path, list[str]], tmp_path: Path
) -> None:
    job_reports, folders = logged_reports
    reports = tmp_path / "reports"  # a fresh runner: nothing but what MLflow holds
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    env.pop("MLFLOW_RUN_ID", None)
    done = subprocess.run(
        [sys.executable, "-m", "monitoring.index", "--from-mlflow", "--reports-dir", str(reports)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(f"index of 3 reports: {reports / 'index.html'}")
    assert "3 runs, 3 copied, 0 already here" in done.stdout
    assert sorted(p.name for p in reports.iterdir() if p.is_dir()) == folders  # the job's names
    for name in folders:
        copied = json.loads((reports / name / "summary.json").read_text())
        written = json.loads((job_reports / name / "summary.json").read_text())
        assert copied["window"] == written["window"] and copied["counts"] == written["counts"]
        assert copied["mlflow_run_id"] == written["mlflow_run_id"] != ""
        assert (reports / name / "report.html").stat().st_size > 100_000  # Evidently's page

    dom = chromium(
        f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000", "--dump-dom",
        (reports / "index.html").as_uri(),
    ).stdout  # fmt: skip
    drift_points = re.findall(r'<circle class="point" data-report="(\w+)" data-value', dom)
    # each report drawn once per figure: drift share and the share of each predicted label
    assert drift_points.count(folders[0]) >= 3 and set(drift_points) == set(folders)
    drift_group = dom[
        dom.index('data-series="drift_share"') : dom.index(
            "</g>", dom.index('data-series="drift_share"')
        )
    ]
    assert re.findall(r'data-report="(\w+)"', drift_group) == folders  # oldest first, all three
    for label in ("negative", "positive"):
        group_start = dom.index(f'data-series="label_share:{label}"')
        assert dom[group_start : dom.index("</g>", group_start)].count("<circle") == 3
    assert "last 120 records, up to" in dom and "last 240 records, up to" in dom
    assert re.search(r"last 24 h, \d{4}-\d\d-\d\d \d\d:\d\d → \d{4}-\d\d-\d\d \d\d:\d\d UTC", dom)
    assert "None" not in dom[dom.index("<tbody>") :]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report-index.png"
    shot.unlink(missing_ok=True)
    chromium(
        f"--user-data-dir={tmp_path / 'chromium'}", "--window-size=1300,1400",
        "--virtual-time-budget=10000", f"--screenshot={shot}", (reports / "index.html").as_uri(),
    )  # fmt: skip
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24) or []
    drawn = sum(count for count, colour in colours if colour == DRIFT_SHARE_COLOUR)
    assert drawn > 50  # the drift share series is on the screen, not only in the markup
