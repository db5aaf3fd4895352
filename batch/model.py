"""The one model version a job scores with: resolved once, downloaded once, read by every
scoring process from the same files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from emotitrack.core.model_format import ModelFiles, download, logged_files
from emotitrack.core.registry import ModelRef, ModelUnavailable, resolve


@dataclass(frozen=True)
class JobModel:
    ref: ModelRef  # load_uri is models:/NAME/VERSION for registry URIs: promotions do not move it
    files: ModelFiles
    classes: tuple[str, ...]


def pin_model(tracking_uri: str, uri: str, workdir: Path) -> JobModel:
    """Resolve ``uri`` to the version it names now and download that version into ``workdir``.
    Raises ``ModelUnavailable`` when there is none, or it is not in the EmotiTrack format."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    try:
        ref = resolve(MlflowClient(tracking_uri=tracking_uri), uri)
        model_dir = download(ref.load_uri, workdir)
    except mlflow.exceptions.MlflowException as exc:
        raise ModelUnavailable(f"{uri}: {exc.message}") from exc
    files = logged_files(model_dir)
    if files is None:
        raise ModelUnavailable(
            f"{ref.load_uri} is not in the EmotiTrack model format (registered before it?): "
            f"export it with `emotitrack repackage {ref.load_uri}`"
        )
    classes = tuple(str(c) for c in json.loads(files.config.read_text("utf-8"))["classes"])
    return JobModel(ref, files, classes)
