"""Fixtures for integration tests: a promoted model in this test's registry, and API servers on
it. The servers, registries and traffic themselves are the harness's (``harness``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest

from harness.registries import SMALL
from harness.servers import ApiServer, start_api
from training.registry import promote
from training.settings import TrainingSettings
from training.train import TrainingResult, train


@pytest.fixture
def promoted(settings: TrainingSettings) -> TrainingResult:
    """Version 1 of the model in this test's registry, trained by the real code and promoted."""
    result = train(settings, SMALL)
    promote(settings, result.version, reason="serving test")
    return result


@pytest.fixture
def api_factory(tmp_path: Path, tracking_uri: str) -> Iterator[Callable[..., ApiServer]]:
    """Start API servers on this test's registry; each is stopped (SIGTERM) at the end."""
    started: list[ApiServer] = []

    def start(
        workers: int = 1, extra_env: dict[str, str] | None = None, **settings: str
    ) -> ApiServer:
        server = start_api(tracking_uri, tmp_path, workers, extra_env, **settings)
        started.append(server)
        return server

    yield start
    for server in started:
        try:
            server.terminate()
        finally:
            server.stop()  # nothing it started outlives the test
    mlflow.set_tracking_uri(tracking_uri)
