"""``/docs`` and ``/redoc`` render in a real browser (Debian's headless Chromium) with every host
but the API's unreachable: the pages need nothing from the internet."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from harness.servers import ApiServer, start_api

pytestmark = pytest.mark.integration
# Every name but loopback resolves to nothing: a CDN fetch would fail and the page stay blank.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """No model needed: the pages describe the API, loaded or not."""
    workdir = tmp_path_factory.mktemp("docs-browser")
    server = start_api(f"sqlite:///{workdir / 'mlflow.db'}", workdir)
    yield server
    assert server.terminate() == 0


def rendered(url: str) -> str:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian chromium not installed; run `make system-deps`", pytrace=False)
    command = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", OFFLINE, "--virtual-time-budget=15000", "--dump-dom", url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_swagger_ui_renders_every_route_offline(api: ApiServer) -> None:
    dom = rendered(f"{api.url}/docs")
    for path in ("/predict", "/invocations", "/ping", "/v2/models/{name}/infer", "/feedback"):
        assert f'data-path="{path}"' in dom, path


def test_redoc_renders_offline(api: ApiServer) -> None:
    dom = rendered(f"{api.url}/redoc")
    assert "MLflow scoring-server compatible predictions" in dom
    assert "Open Inference Protocol" in dom
