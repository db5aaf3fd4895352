"""Fixtures for integration tests: a registry with a promoted model, and API servers on it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from tests.servers import ApiServer
from training.model import Hyperparameters
from training.registry import promote
from training.settings import TrainingSettings
from training.train import TrainingResult, train

SMALL = Hyperparameters(max_features=20_000)


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    settings: TrainingSettings
    first: TrainingResult
    workdir: Path


def make_registry(imdb_sample: Path, workdir: Path, reference_size: int = 200) -> Registry:
    """A SQLite registry in ``workdir`` whose version 1, trained by the real code, is Production."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    settings = TrainingSettings(
        data=imdb_sample, tracking_uri=uri, reference_size=reference_size, min_rows=50
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # local artifacts land under the working folder
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        result = train(settings, SMALL)
        promote(settings, result.version, reason="serving test")
    return Registry(uri, settings, result, workdir)


@pytest.fixture
def promoted(settings: TrainingSettings) -> TrainingResult:
    """Version 1 of the model in this test's registry, trained by the real code and promoted."""
    result = train(settings, SMALL)
    promote(settings, result.version, reason="serving test")
    return result


def start_api(
    tracking_uri: str,
    workdir: Path,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
    **settings: str,
) -> ApiServer:
    env = {
        **(extra_env or {}),
        "MLFLOW_TRACKING_URI": tracking_uri,
        "EMOTITRACK_PREDICTION_LOG_URL": f"sqlite:///{workdir / 'predictions.db'}",
        "EMOTITRACK_SPILL_DIR": str(workdir / "spill"),
        "EMOTITRACK_POLL_INTERVAL_S": "300",
        **{f"EMOTITRACK_{k.upper()}": v for k, v in settings.items()},
    }
    return ApiServer(env, workdir, workers=workers)


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
        server.terminate()
    mlflow.set_tracking_uri(tracking_uri)
