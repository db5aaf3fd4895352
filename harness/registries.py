"""Model registries trained by the real training code, for tests and benchmarks to serve."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from training.model import Hyperparameters
from training.registry import promote
from training.settings import TrainingSettings
from training.train import TrainingResult, train

SMALL = Hyperparameters(max_features=20_000)  # a vocabulary that trains in seconds on a sample


@dataclass(frozen=True)
class Registry:
    """A SQLite registry in ``workdir`` whose first trained version is in production."""

    tracking_uri: str
    settings: TrainingSettings
    trained: tuple[TrainingResult, ...]
    workdir: Path

    @property
    def first(self) -> TrainingResult:
        return self.trained[0]

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(result.version for result in self.trained)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def _environment(**changes: str | None) -> Iterator[None]:
    """Environment variables set (``None``: removed) for the block, then restored."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        _set_environment(changes)
        yield
    finally:
        _set_environment(saved)


def make_registry(
    data: Path,
    workdir: Path,
    models: Sequence[Hyperparameters] = (SMALL,),
    *,
    reference_size: int | None = 200,
    min_rows: int | None = 50,
    db: Path | None = None,
) -> Registry:
    """One version per entry of ``models``, trained on ``data`` and registered in ``db``
    (default ``workdir/mlflow.db``, artifacts under ``workdir``); the first is promoted.
    ``reference_size`` and ``min_rows`` suit a sample; ``None`` keeps the training defaults."""
    uri = f"sqlite:///{db or workdir / 'mlflow.db'}"
    overrides = {"reference_size": reference_size, "min_rows": min_rows}
    settings = TrainingSettings(data=data, tracking_uri=uri).model_copy(
        update={name: value for name, value in overrides.items() if value is not None}
    )
    # MLflow puts local artifacts under the working folder; a run id would be reused
    with contextlib.chdir(workdir), _environment(MLFLOW_TRACKING_URI=uri, MLFLOW_RUN_ID=None):
        trained = tuple(train(settings, hp) for hp in models)
        promote(settings, trained[0].version, reason="harness: first version")
    return Registry(uri, settings, trained, workdir)


def reset_production(registry: Registry) -> None:
    """Production back on the registry's first version."""
    promote(registry.settings, registry.versions[0], reason="harness: back to the first version")
