"""The served model: resolve the configured URI to a concrete version, load it, follow moves.

The URI may name an alias (``models:/NAME@production``) or a stage (``models:/NAME/Production``),
which move when someone promotes; a fixed version, a run or a path, which do not. Every check
resolves the URI to one version; a different version is loaded off the event loop, warmed with
one prediction and swapped in with a single assignment, so requests never wait on a reload and
never see a half-loaded model.

An EmotiTrack model is read from its config and arrays (``emotitrack.core.model_format``): no
unpickling, no scikit-learn. Any other pyfunc model (and EmotiTrack versions registered before
the format) is loaded by MLflow and scored through ``predict``'s ``prob_<class>`` columns.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from emotitrack.core import model_format
from emotitrack.core.descriptors import TextDescriber
from emotitrack.core.model_format import PROBABILITY_PREFIX, SentimentScorer
from emotitrack.core.registry import ModelRef, ModelUnavailable, resolve
from serving.scoring_process import ScoringProcess

log = logging.getLogger("emotitrack.serving")

HEADLINE_METRICS = ("test_accuracy", "test_f1_macro", "test_roc_auc", "val_accuracy")


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    classes: list[str]
    score: Callable[[list[str]], np.ndarray]  # texts -> probabilities (rows x classes)
    loaded_at: datetime
    load_seconds: float
    metrics: dict[str, float]
    # texts -> per text, per class, the n-grams that pushed towards it; None: cannot explain
    explain: Callable[[list[str]], list[dict[str, Any]]] | None = None
    # the model format's scorer of an EmotiTrack model; None for any other pyfunc
    scorer: SentimentScorer | None = None
    # the child process ``score`` uses when it is up; None: scored in-process only
    scoring: ScoringProcess | None = None
    # the downloaded model, which the scoring process reads (again after a restart)
    directory: Path | None = None

    def close(self) -> None:
        """Stop this version's scoring process (a batch it was answering is scored in-process)
        and delete its downloaded files."""
        if self.scoring is not None:
            self.scoring.close()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    @property
    def version(self) -> str:
        return self.ref.version or self.ref.run_id or "unversioned"

    def text_describer(self) -> TextDescriber:
        """The descriptors of texts as this model tokenizes them (only needed, and so only
        built, when the log may not keep texts)."""
        return TextDescriber.for_model(self.scorer)

    @property
    def name(self) -> str:
        return self.ref.name or "unregistered"


def load(client: MlflowClient, ref: ModelRef, *, scoring_process: bool = False) -> LoadedModel:
    """Download, load and warm a model; the caller decides whether to swap it in (and starts
    its scoring process, if any, once it serves)."""
    started = time.perf_counter()
    directory = Path(tempfile.mkdtemp(prefix="emotitrack-model-"))
    score: Callable[[list[str]], np.ndarray]
    try:
        model_dir = model_format.download(ref.load_uri, directory)
        files = model_format.logged_files(model_dir)
        scorer = model_format.read_files(files) if files is not None else None
        if scorer is not None:
            classes, score = scorer.classes, scorer.probabilities
        else:
            classes, score = _pyfunc_scorer(model_format.load_pyfunc(model_dir))
        score(["warm-up"])
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    scoring = None
    if scoring_process and files is not None:
        scoring = ScoringProcess(score, label=f"version {ref.version or ref.load_uri}", files=files)
    metrics: dict[str, float] = {}
    if ref.run_id:
        run_metrics = client.get_run(ref.run_id).data.metrics
        metrics = {k: run_metrics[k] for k in HEADLINE_METRICS if k in run_metrics}
    return LoadedModel(
        ref=ref,
        classes=classes,
        score=score if scoring is None else scoring,
        loaded_at=datetime.now(UTC),
        load_seconds=time.perf_counter() - started,
        metrics=metrics,
        explain=scorer.explain if scorer is not None else None,
        scorer=scorer,
        scoring=scoring,
        directory=directory,
    )


def _pyfunc_scorer(pyfunc: Any) -> tuple[list[str], Callable[[list[str]], np.ndarray]]:
    """Any pyfunc model that returns ``prob_<class>`` columns, scored through ``predict``."""
    sample = pd.DataFrame(pyfunc.predict(pd.DataFrame({"text": ["warm-up"]})))
    columns = [c for c in sample.columns if str(c).startswith(PROBABILITY_PREFIX)]
    if not columns:
        raise ModelUnavailable("the model does not return prob_<class> columns")
    classes = [c.removeprefix(PROBABILITY_PREFIX) for c in columns]

    def score_pyfunc(texts: list[str]) -> np.ndarray:
        out = pd.DataFrame(pyfunc.predict(pd.DataFrame({"text": texts})))
        return out[columns].to_numpy(np.float64)

    return classes, score_pyfunc


def freeze_long_lived_objects(*, collect: bool) -> None:
    """Move everything alive now (modules, the model) out of the cyclic garbage collector's
    reach. Each full collection otherwise walks the whole heap: under load that costs much of
    the throughput and most of the p99. After a swap, collected first so that the replaced
    model's cycles are not frozen. Frozen objects freed later are still freed by reference
    counting; only cycles among them stay."""
    if collect:
        gc.collect()
    gc.freeze()


@dataclass
class StoreStatus:
    registry_reachable: bool = False
    last_check_at: datetime | None = None
    last_error: str = ""


class ModelStore:
    """Holds the current model and replaces it when the URI moves to another version."""

    def __init__(
        self,
        uri: str,
        tracking_uri: str,
        on_outcome: Callable[[str, LoadedModel | None], None] = lambda outcome, model: None,
        *,
        scoring_process: bool = False,
    ) -> None:
        self.uri = uri
        self.scoring_process = scoring_process
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        self.current: LoadedModel | None = None
        self.status = StoreStatus()
        self._on_outcome = on_outcome
        self._lock = asyncio.Lock()
        self._settling: set[asyncio.Task[None]] = set()

    async def refresh(self) -> str:
        """Check the registry once; reload if the URI now names another version.

        Outcomes: ``loaded``, ``unchanged``, ``no_model``, ``registry_unreachable``,
        ``load_failed``. On failure the current model keeps serving."""
        async with self._lock:
            outcome, model = await asyncio.to_thread(self._check)
            self.status.last_check_at = datetime.now(UTC)
            if model is not None:
                previous, self.current = self.current, model  # the swap: one assignment
                # After the swap, not before: readiness (start-up) does not wait for them.
                task = asyncio.create_task(self._settle(model, previous))
                self._settling.add(task)  # a strong reference until it is done
                task.add_done_callback(self._settling.discard)
            self._on_outcome(outcome, self.current)
            return outcome

    async def _settle(self, model: LoadedModel, previous: LoadedModel | None) -> None:
        if model.scoring is not None:
            model.scoring.start_in_background()
        if previous is not None:
            await asyncio.to_thread(previous.close)
            del previous  # collected before the freeze below, not frozen with everything else
            await asyncio.to_thread(freeze_long_lived_objects, collect=True)
        else:  # start-up: a full collection now would hold the GIL and delay the first answers
            await asyncio.to_thread(freeze_long_lived_objects, collect=False)

    async def close(self) -> None:
        await asyncio.gather(*self._settling, return_exceptions=True)
        if self.current is not None:
            await asyncio.to_thread(self.current.close)

    def _check(self) -> tuple[str, LoadedModel | None]:
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            ref = resolve(self.client, self.uri)
        except ModelUnavailable as exc:
            self.status.registry_reachable = True
            self.status.last_error = str(exc)
            return "no_model", None
        except Exception as exc:  # network, server errors: keep serving what we have
            self.status.registry_reachable = False
            self.status.last_error = f"registry unreachable: {_short(exc)}"
            log.warning("model registry check failed: %s", self.status.last_error)
            return "registry_unreachable", None
        self.status.registry_reachable = True
        if self.current is not None and self.current.ref.key == ref.key:
            self.status.last_error = ""
            return "unchanged", None
        try:
            model = load(self.client, ref, scoring_process=self.scoring_process)
        except Exception as exc:  # corrupt or missing artifacts, incompatible model
            self.status.last_error = (
                f"loading {ref.load_uri} failed: {_short(exc)}"
                f" (artifacts: {self._artifact_location(ref)})"
            )
            log.error(
                "model reload refused, still serving %s: %s",
                self._serving(),
                self.status.last_error,
            )
            return "load_failed", None
        self.status.last_error = ""
        log.info(
            "serving %s version %s (%s, run %s), loaded in %.2f s",
            model.name,
            model.version,
            ref.reference,
            ref.run_id,
            model.load_seconds,
        )
        return "loaded", model

    def _artifact_location(self, ref: ModelRef) -> str:
        """Where the failed version's files should be: MLflow's own error for a missing folder
        names none (``No such artifact: ''``), and on-call needs the path."""
        if ref.name is None or ref.version is None:
            return ref.load_uri
        try:
            source = str(self.client.get_model_version(ref.name, ref.version).source)
            if source.startswith("models:/m-"):  # MLflow 3: a version points at a logged model
                return str(
                    self.client.get_logged_model(source.removeprefix("models:/")).artifact_location
                )
            return source
        except Exception as exc:  # the registry may be gone by now: say so, keep the rest
            return f"unknown ({type(exc).__name__})"

    def _serving(self) -> str:
        return f"version {self.current.version}" if self.current else "nothing"

    async def poll_forever(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # never let the poller die
                log.exception("model refresh crashed; retrying in %.0f s", interval_s)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}"
