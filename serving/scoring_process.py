"""Scoring in a separate process, so the model's tokenising does not compete with HTTP for the GIL.

One uvicorn worker runs the event loop, the micro-batcher and the prediction log; under load its
model thread holds the GIL for a good part of the time, and the threads together saturate one
interpreter. A child process that reads the same model files uses another core instead (as
MLServer's parallel inference workers do).

The child is an optimisation, not a dependency: the model scores in-process until its child
answers, and whenever the child fails (killed, crashed, hung past a deadline, pipe broken) the
batch is scored in-process, the child is killed and another is started after a back-off. Each
loaded model version owns its child; when the version is replaced, its child stops after the
batch it may be answering, and that version's remaining batches are scored in-process.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path

import numpy as np

from emotitrack.core.model_format import ModelFiles, read_files

log = logging.getLogger("emotitrack.serving")
Score = Callable[[list[str]], np.ndarray]

START_TIMEOUT_S = 120.0  # loading the model in the child
# A batch's deadline: generous, it catches a hung child, not a slow one.
BATCH_TIMEOUT_S = 5.0
BATCH_TIMEOUT_PER_TEXT_S = 0.02
RESTART_BACKOFF_S = (1.0, 60.0)  # first and longest wait before starting a replacement


def _serve(conn: Connection) -> None:
    """The child: read the model's files, then answer batches of texts until the pipe closes."""
    # Ctrl-C in a terminal reaches the whole process group: the parent decides when we stop
    # (it closes the pipe or kills us).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        config, arrays = conn.recv()  # the model's files, as paths
        try:
            score = read_files(ModelFiles(Path(config), Path(arrays))).probabilities
            score(["warm-up"])
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
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

    Calls come from the micro-batcher's single model thread. The lock is held for a whole round
    trip (send, answer), so the pipe never carries two conversations; ``close`` does not wait
    for it: it kills the child, which ends a round trip in progress."""

    def __init__(self, in_process: Score, *, label: str, files: ModelFiles) -> None:
        self._files = files  # the model's config and arrays, read by the child
        self.in_process = in_process  # the micro-batcher scores a lone text with this
        self._label = label
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: BaseProcess | None = None
        self._closing = threading.Event()
        self._starting = False
        self._backoff_s = RESTART_BACKOFF_S[0]
        self.restarts = 0
        self.failures = 0

    # -- lifecycle -----------------------------------------------------------------------------
    def start_in_background(self, delay_s: float = 0.0) -> None:
        """Start the child without waiting: until it is up, batches are scored in-process."""
        with self._lock:
            if self._closing.is_set() or self._starting or self._conn is not None:
                return
            self._starting = True
        threading.Thread(
            target=self._start, args=(delay_s,), name=f"scoring-start-{self._label}", daemon=True
        ).start()

    def _start(self, delay_s: float = 0.0) -> None:
        if delay_s and self._closing.wait(delay_s):
            with self._lock:
                self._starting = False
            return
        started = time.perf_counter()
        context = multiprocessing.get_context("spawn")  # no fork: the parent has threads
        parent, child = context.Pipe()
        process = context.Process(
            target=_serve, args=(child,), name=f"emotitrack-scoring-{self._label}", daemon=True
        )
        try:
            try:
                process.start()
            finally:
                child.close()  # the child has its own copy (or never started)
            parent.send((str(self._files.config), str(self._files.arrays)))
            if not parent.poll(START_TIMEOUT_S):
                raise TimeoutError(f"not ready within {START_TIMEOUT_S:g} s")
            status, detail = parent.recv()
            if status != "ready":
                raise RuntimeError(detail)
        except Exception as exc:
            if self._closing.is_set():  # the server stopped while the child was starting
                log.info("scoring process for %s: start abandoned at shutdown", self._label)
            else:
                log.warning("scoring process for %s did not start: %s", self._label, _short(exc))
            _kill(process, parent)
            with self._lock:
                self._starting = False
            return
        with self._lock:
            self._starting = False
            if self._closing.is_set():
                _kill(process, parent)
                return
            self._conn, self._process = parent, process
            self._backoff_s = RESTART_BACKOFF_S[0]
        log.info(
            "scoring process for %s up (pid %s) in %.1f s",
            self._label,
            process.pid,
            time.perf_counter() - started,
        )

    def close(self) -> None:
        """Stop the child for good. A round trip in progress ends (EOF) and is scored in-process."""
        self._closing.set()
        process = self._process
        if process is not None and process.pid is not None and process.is_alive():
            process.kill()  # not the pipe: the model thread may be reading it
        with self._lock:  # the round trip, if any, has ended by now
            if self._process is not None and self._conn is not None:
                _kill(self._process, self._conn)
            self._conn = self._process = None

    @property
    def in_child(self) -> bool:
        process = self._process
        return self._conn is not None and process is not None and process.is_alive()

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    # -- scoring -------------------------------------------------------------------------------
    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            conn = self._conn
            if conn is not None and not self._closing.is_set():
                deadline = BATCH_TIMEOUT_S + BATCH_TIMEOUT_PER_TEXT_S * len(texts)
                try:
                    conn.send(list(texts))
                    if not conn.poll(deadline):
                        raise TimeoutError(f"no answer within {deadline:g} s")
                    status, result = conn.recv()
                except Exception as exc:  # EOF, broken pipe, hung, garbled: the child is lost
                    self._lost_child(exc)
                else:
                    if status == "ok":
                        return np.asarray(result)
                    log.warning("scoring process for %s failed a batch: %s", self._label, result)
        return self.in_process(texts)  # no child yet, or it failed: answer anyway

    def _lost_child(self, exc: BaseException) -> None:
        """Called with the lock held: kill the child, then start another after a back-off."""
        if self._process is not None and self._conn is not None:
            _kill(self._process, self._conn)
        self._conn = self._process = None
        if self._closing.is_set():  # close() killed it on purpose
            return
        self.failures += 1
        log.warning(
            "scoring process for %s lost (%s); scoring in-process, a new one in %.0f s",
            self._label,
            _short(exc),
            self._backoff_s,
        )
        if not self._starting:
            self.restarts += 1
            self._starting = True
            delay, self._backoff_s = self._backoff_s, min(self._backoff_s * 2, RESTART_BACKOFF_S[1])
            threading.Thread(
                target=self._start,
                args=(delay,),
                name=f"scoring-restart-{self._label}",
                daemon=True,
            ).start()


def _kill(process: BaseProcess, conn: Connection) -> None:
    """End the child at once (it is lost, hung, or no longer wanted) and reap it."""
    conn.close()
    if process.pid is None:  # never started
        return
    if process.is_alive():
        process.kill()
    process.join(timeout=5)


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
