"""Model URIs pinned to registry versions: every part resolves ``models:/NAME@alias`` the same way.

An alias (``@production``) or a stage (``/Production``) moves when someone promotes; a fixed
version, a run or a path does not. ``resolve`` turns any of them into the one version it names
now, so a job or a server never mixes versions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow import MlflowClient


@dataclass(frozen=True)
class ModelRef:
    """What a model URI points at right now."""

    uri: str
    name: str | None
    version: str | None
    run_id: str | None
    reference: str  # alias, stage, version, run or path: how the URI named it
    load_uri: str  # a URI that cannot move: models:/NAME/VERSION, or the original one

    @property
    def key(self) -> str:
        return self.load_uri


class ModelUnavailable(RuntimeError):
    """No model could be resolved or loaded; the message says why."""


def resolve(client: MlflowClient, uri: str) -> ModelRef:
    """Pin a model URI to the version it names now."""
    if not uri.startswith("models:/"):
        run_id = uri.split("/")[1] if uri.startswith("runs:/") else None
        return ModelRef(uri, None, None, run_id, "run" if run_id else "path", uri)
    path = uri.removeprefix("models:/")
    if "@" in path:
        name, alias = path.split("@", 1)
        mv = _registry_call(lambda: client.get_model_version_by_alias(name, alias), uri)
        reference = f"alias {alias}"
    else:
        name, _, what = path.partition("/")
        if what.isdigit():
            mv = _registry_call(lambda: client.get_model_version(name, what), uri)
            reference = f"version {what}"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # legacy stages, on purpose
                found = _registry_call(lambda: client.get_latest_versions(name, [what]), uri)
            if not found:
                raise ModelUnavailable(f"no version of {name} is in stage {what}")
            mv = found[0]
            reference = f"stage {what}"
    version = str(mv.version)
    return ModelRef(uri, name, version, mv.run_id, reference, f"models:/{name}/{version}")


def _registry_call(call: Callable[[], Any], uri: str) -> Any:
    try:
        return call()
    except mlflow.exceptions.MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ModelUnavailable(
                f"{uri} does not name a model version yet: {exc.message}"
            ) from exc
        raise
