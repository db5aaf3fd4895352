"""API replicas on fixed loopback ports (a load balancer's configuration names them), sharing one
tracking server and one prediction log, each with its own spill folder; and steady ``/predict``
traffic that keeps, per request, what the client saw and the load balancer's request id."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa

from emotitrack.core.prediction_log import PREDICTIONS, create_store_engine
from harness.ledger import TAG, tagged
from harness.processes import Server, free_port
from harness.servers import api_command, scrape_metrics


@dataclass
class Replica:
    """One API process (``python -m serving``) that can be killed and started again on its
    port, with the same spill folder (what it left there is replayed by the next start)."""

    name: str
    port: int
    workdir: Path
    env: dict[str, str]
    server: Server | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def spill_dir(self) -> Path:
        return self.workdir / "spill"

    def start(self, timeout: float = 120) -> None:
        self.starts += 1
        log = self.workdir / f"{self.name}-{self.starts}.log"
        self.server = Server(
            api_command(self.port), self.port, log, ready_path="/ready",
            cwd=self.workdir, env=self.env, timeout=timeout,
        )  # fmt: skip

    def running(self) -> Server:
        assert self.server is not None, f"{self.name} is not running"
        return self.server

    def scrape(self) -> dict[str, float]:
        return scrape_metrics(self.url)

    def model_version(self) -> str | None:
        version = httpx.get(f"{self.url}/ready", timeout=5).json().get("model_version")
        return None if version is None else str(version)

    def spill_files(self) -> list[Path]:
        return sorted(self.spill_dir.glob("spill-*.jsonl"))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def make_replicas(
    count: int, workdir: Path, tracking_uri: str, log_url: str, **settings: str
) -> list[Replica]:
    """``count`` replicas (``api1``...), not started; ``settings`` as ``EMOTITRACK_<NAME>``."""
    replicas = []
    for i in range(1, count + 1):
        folder = workdir / f"api{i}"
        folder.mkdir(parents=True, exist_ok=True)
        env = {
            "MLFLOW_TRACKING_URI": tracking_uri,
            "EMOTITRACK_PREDICTION_LOG_URL": log_url,
            "EMOTITRACK_SPILL_DIR": str(folder / "spill"),
            **{f"EMOTITRACK_{name.upper()}": value for name, value in settings.items()},
        }
        replicas.append(Replica(f"api{i}", free_port(), folder, env))
    return replicas


def start_all(replicas: Sequence[Replica], timeout: float = 180) -> None:
    """Start every replica at once; each is ready when its ``/ready`` answers 200."""
    with ThreadPoolExecutor(len(replicas)) as pool:
        for future in [pool.submit(r.start, timeout) for r in replicas]:
            future.result()


def stop_all(replicas: Sequence[Replica]) -> None:
    """Stop every replica at once (SIGTERM, then SIGKILL after the grace period)."""
    with ThreadPoolExecutor(len(replicas)) as pool:
        for future in [pool.submit(r.stop) for r in replicas]:
            future.result()


# --------------------------------------------------------------------------- traffic


@dataclass
class Exchange:
    """One ``/predict`` as its client saw it; times are wall-clock (``time.time()``), as in the
    load balancer's access log."""

    tag: int
    sent: float
    ended: float
    status: int | None  # None: no answer at all
    lb_id: str = ""  # the load balancer's X-Request-ID
    request_id: str = ""
    version: str = ""
    error: str = ""


@dataclass
class SteadyTraffic:
    """``clients`` threads each sending one tagged real review to ``/predict`` at a time (a short
    ``pause`` between), until the block ends. ``tags`` is shared so tags stay unique."""

    url: str
    texts: list[str]
    clients: int = 3
    pause_s: float = 0.02
    tags: Callable[[], int] = field(default_factory=lambda: itertools.count(1).__next__)
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._send, args=(seed,), daemon=True)
            for seed in range(self.clients)
        ]

    def __enter__(self) -> SteadyTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _send(self, seed: int) -> None:
        rng = random.Random(seed)  # noqa: S311 - a reproducible choice of texts
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                with self._lock:
                    tag = self.tags()
                sent = time.time()
                try:
                    answer = client.post(
                        "/predict", json={"text": tagged(tag, rng.choice(self.texts))}
                    )
                except httpx.HTTPError as exc:
                    self._keep(Exchange(tag, sent, time.time(), None, error=repr(exc)))
                    continue
                exchange = Exchange(
                    tag,
                    sent,
                    time.time(),
                    answer.status_code,
                    answer.headers.get("x-request-id", ""),
                )
                if answer.status_code == 200:
                    body = answer.json()
                    exchange.request_id = body["request_id"]
                    exchange.version = str(body["model_version"])
                else:
                    exchange.error = answer.text[:300]
                self._keep(exchange)
                self._stop.wait(self.pause_s)

    def _keep(self, exchange: Exchange) -> None:
        with self._lock:
            self.exchanges.append(exchange)

    def wait_for(self, count: int, timeout: float = 60) -> None:
        """Until ``count`` more exchanges than now have ended."""
        target, deadline = len(self.exchanges) + count, time.monotonic() + timeout
        while len(self.exchanges) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.exchanges)} exchanges, waited for {target}")
            time.sleep(0.05)

    def acknowledged(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.status == 200]

    def failed(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.status != 200]


def logged_predictions(log_url: str) -> list[tuple[str, int | None, str]]:
    """Every row of the prediction log as (request id, text tag or None, model version)."""
    engine = create_store_engine(log_url)
    head = sa.func.substr(PREDICTIONS.c.text, 1, 32)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(PREDICTIONS.c.request_id, head, PREDICTIONS.c.model_version)
            ).all()
    finally:
        engine.dispose()
    logged = []
    for request_id, text_head, version in rows:
        found = TAG.match(text_head)
        logged.append((request_id, int(found.group(1)) if found else None, str(version)))
    return logged
