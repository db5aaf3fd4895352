"""Scoring in a separate process, so the model's tokenising does not compete with HTTP for the GIL.

One uvicorn worker runs the event loop, the micro-batcher and the prediction log; its model
thread held the GIL for ~20% of the time under load, and the two threads together saturated one
interpreter at ~1,100-1,300 req/s on 2 cores. A child process that holds a copy of the pipeline
uses the second core instead (as MLServer's parallel inference workers do).

The child is an optimisation, never a dependency: the model scores in-process until its child
answers, and whenever the child fails (killed, crashed, pipe broken) the batch is scored
in-process and a new child is started in the background. Each loaded model version owns its
child; the child of a replaced version stops once its last batch is answered.
"""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from training.model import load_pipeline
from training.scoring import compile_scorer

log = logging.getLogger("emotitrack.serving")
Score = Callable[[list[str]], np.ndarray]


def _serve(conn: Connection) -> None:
    """The child: receive the pickled pipeline, then answer batches of texts until the pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when we stop
    # (it closes the pipe), so batches in flight during its shutdown are still answered here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        kind, source = conn.recv()
        pipeline = (
            load_pipeline(Path(source)) if kind == "path" else pickle.loads(source)  # noqa: S301 - sent by our own parent  # nosec B301
        )
        score = compile_scorer(pipeline)
        if score is None:
            conn.send(("error", "the pipeline cannot be compiled"))
            return
        score(["warm-up"])
        conn.send(("ready", None))
        while True:
            texts = conn.recv()
            try:
                conn.send(("ok", score(texts)))
            except Exception as exc:  # a bad batch must not kill the child
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    except (EOFError, OSError):
        return  # the parent went away or stopped us


class ScoringProcess:
    """Scores with a child process when it is up, in-process otherwise; callable like ``Score``.

    Calls come from the micro-batcher's single model thread, one at a time; the lock only
    guards against a concurrent ``close`` or restart."""

    def __init__(
        self, pipeline: Any, in_process: Score, *, label: str, pipeline_path: Path | None = None
    ) -> None:
        self._pipeline = pipeline
        self._pipeline_path = pipeline_path
        self.in_process = in_process  # the micro-batcher scores a lone text with this
        self._in_process = in_process
        self._label = label
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._closed = False
        self._starting = False
        self.restarts = 0
        self.failures = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start_in_background(self) -> None:
        """Start the child without waiting: until it is up, batches are scored in-process."""
        with self._lock:
            if self._closed or self._starting or self._conn is not None:
                return
            self._starting = True
        threading.Thread(
            target=self._start, name=f"scoring-start-{self._label}", daemon=True
        ).start()

    def _start(self) -> None:
        started = time.perf_counter()
        context = multiprocessing.get_context("spawn")  # no fork: the parent has threads
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve, args=(child,), name=f"emotitrack-scoring-{self._label}", daemon=True
        )
        try:
            process.start()
            child.close()
            parent.send(self._pipeline_source())
            status, detail = parent.recv()
            if status != "ready":
                raise RuntimeError(detail)
        except Exception as exc:
            log.warning("scoring process for %s did not start: %s", self._label, exc)
            _stop(process, parent)
            with self._lock:
                self._starting = False
            return
        with self._lock:
            self._starting = False
            if self._closed:
                _stop(process, parent)
                return
            self._conn, self._process = parent, process
        log.info(
            "scoring process for %s up (pid %s) in %.1f s",
            self._label,
            process.pid,
            time.perf_counter() - started,
        )

    def _pipeline_source(self) -> tuple[str, Any]:
        """The file the model was loaded from, read by the child itself: pickling the pipeline
        here instead held this process's GIL for ~0.2 s (IMDB) just as it began to serve."""
        if self._pipeline_path is not None and self._pipeline_path.is_file():
            return "path", str(self._pipeline_path)
        return "pickle", pickle.dumps(self._pipeline, protocol=5)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, process = self._conn, self._process
            self._conn = self._process = None
        if process is not None and conn is not None:
            _stop(process, conn)

    @property
    def in_child(self) -> bool:
        return self._conn is not None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    # -- scoring -------------------------------------------------------------------------------
    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            conn = self._conn
            if conn is not None:
                try:
                    conn.send(list(texts))
                    status, result = conn.recv()
                except (EOFError, OSError) as exc:
                    self._lost_child(exc)
                else:
                    if status == "ok":
                        return np.asarray(result)
                    log.warning("scoring process for %s failed a batch: %s", self._label, result)
        return self._in_process(texts)  # no child yet, or it failed: answer anyway

    def _lost_child(self, exc: BaseException) -> None:
        """Called with the lock held: forget the child and start another."""
        self.failures += 1
        log.warning(
            "scoring process for %s lost (%s); scoring in-process until a new one is up",
            self._label,
            type(exc).__name__,
        )
        if self._process is not None and self._conn is not None:
            _stop(self._process, self._conn)
        self._conn = self._process = None
        if not self._closed and not self._starting:
            self.restarts += 1
            self._starting = True
            threading.Thread(
                target=self._start, name=f"scoring-restart-{self._label}", daemon=True
            ).start()


def _stop(process: multiprocessing.process.BaseProcess, conn: Connection) -> None:
    conn.close()  # the child sees EOF and returns
    if process.pid is None:  # never started
        return
    process.join(timeout=5)
    if process.is_alive():
        process.kill()
        process.join(timeout=5)
