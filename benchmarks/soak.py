"""Soak benchmark: minutes of mixed traffic against a real server that reloads under load.

One run trains two versions of the model with the real training code (on a seeded sample of
IMDB unless ``--full-data``), promotes the first, starts our server (``python -m serving``,
uvicorn, loopback only) on the prediction log (SQLite, or a private PostgreSQL cluster with
``--postgres``) and drives it for ``--minutes`` with ``--concurrency`` clients: seven in eight
send single ``/predict``, ``/predict/batch`` and ``/invocations``, one in eight sends
``/feedback`` for ids it got back. Meanwhile the ``production`` alias alternates between the
two versions every ``--promote-every`` seconds. Optional faults: PostgreSQL stopped (or frozen,
``--pg-outage-kind freeze``) for ``--pg-outage`` seconds, and ``--sigkill`` (the server is
killed under load, restarted, and its spill files replayed).

It prints progress, then a table: requests and failures, p50/p99 per route, RSS per window and
its growth, reloads, prediction-log counters and the reconciliation of the log against every
acknowledged prediction (each text carries a unique tag, so ``/invocations``, which returns no
request id, is reconciled too). The result also goes to ``<workdir>/soak.json``. Exit code 0
when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the repo's packages importable
    sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import orjson  # noqa: E402

from benchmarks.serving_benchmark import (  # noqa: E402
    HOST,
    PYTHON,
    free_port,
    process_tree,
    rss_mib,
    say,
    stop,
    tail,
)

ROUTES = ("/predict", "/predict/batch", "/invocations", "/feedback")
TAG = re.compile(r"^\[soak (\d+)\] ")
P99_BUDGET_MS = 500.0  # the serving issue's latency budget (and the p99 alert's threshold)
RSS_GROWTH_LIMIT = 0.10
DEFAULT_DATA = REPO.parent / "shared" / "data" / "imdb"


@dataclass
class SoakConfig:
    workdir: Path
    minutes: float = 5.0
    concurrency: int = 32
    promote_every_s: float = 30.0
    data: Path = DEFAULT_DATA
    full_data: bool = False
    train_rows: int = 4000
    test_rows: int = 1000
    postgres: bool = False
    pg_outage_s: float = 0.0
    pg_outage_at_s: float | None = None  # default: a third into the run
    pg_outage_kind: str = "stop"  # stop: pg_ctl stop (refused); freeze: SIGSTOP (hung)
    sigkill: bool = False
    batch_texts: int = 8
    invocation_texts: int = 4
    poll_interval_s: float = 1.0
    progress_every_s: float = 10.0
    seed: int = 42
    # the server's log batching (its defaults); the SIGKILL bound is stated in these terms
    log_flush_interval_s: float = 0.5
    log_flush_rows: int = 500

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    @property
    def outage_at_s(self) -> float:
        return self.seconds / 3 if self.pg_outage_at_s is None else self.pg_outage_at_s


# --------------------------------------------------------------------------- setup


@dataclass(frozen=True)
class Registry:
    tracking_uri: str
    versions: tuple[str, str]
    data: Path  # the (sampled) training data, for TrainingSettings


def sample_splits(source: Path, target: Path, train_rows: int, test_rows: int, seed: int) -> Path:
    """A seeded, stratified sample of IMDB's train and test splits, to keep training short."""
    import pandas as pd

    target.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train_rows), ("test", test_rows)):
        frame = pd.read_parquet(source / f"{split}.parquet")
        per_label = min(rows // frame["label"].nunique(), int(frame["label"].value_counts().min()))
        sample = frame.groupby("label").sample(n=per_label, random_state=seed)
        sample.sample(frac=1, random_state=seed).to_parquet(
            target / f"{split}.parquet", index=False
        )
    return target


def train_two_versions(config: SoakConfig) -> Registry:
    """Versions 1 and 2 (different vocabulary sizes), trained by the real code; 1 is promoted."""
    from training.model import Hyperparameters
    from training.registry import promote
    from training.train import train

    data = config.data
    if not config.full_data:
        data = sample_splits(
            config.data, config.workdir / "data", config.train_rows, config.test_rows, config.seed
        )
    uri = f"sqlite:///{config.workdir / 'mlflow.db'}"
    settings = training_settings(data, uri)
    sizes = (100_000, 50_000) if config.full_data else (20_000, 10_000)
    started = time.perf_counter()
    os.environ.pop("MLFLOW_RUN_ID", None)
    with contextlib.chdir(config.workdir):  # local artifacts land under the work folder
        first = train(settings, Hyperparameters(max_features=sizes[0]))
        second = train(settings, Hyperparameters(max_features=sizes[1]))
        promote(settings, first.version, reason="soak: start")
    say(f"trained versions {first.version} and {second.version} in "
        f"{time.perf_counter() - started:.0f} s on {data}")  # fmt: skip
    return Registry(uri, (first.version, second.version), data)


def reset_production(registry: Registry) -> None:
    from training.registry import promote

    settings = training_settings(registry.data, registry.tracking_uri)
    promote(settings, registry.versions[0], reason="soak: start")


def training_settings(data: Path, tracking_uri: str) -> Any:
    from training.settings import TrainingSettings

    return TrainingSettings(data=data, tracking_uri=tracking_uri, reference_size=200, min_rows=50)


def traffic_texts(data: Path, count: int, seed: int) -> list[str]:
    """Real held-out reviews (IMDB test split) to send."""
    import pandas as pd

    texts = [t for t in pd.read_parquet(data / "test.parquet", columns=["text"])["text"] if t]
    return random.Random(seed).sample(texts, min(count, len(texts)))  # noqa: S311 - not a secret


@dataclass
class ApiProcess:
    """Our server as a child process in its own session (SIGTERM/SIGKILL reach all of it)."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def server_env(config: SoakConfig, registry: Registry, log_url: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": registry.tracking_uri,
        "EMOTITRACK_PREDICTION_LOG_URL": log_url,
        "EMOTITRACK_SPILL_DIR": str(config.workdir / "spill"),
        "EMOTITRACK_POLL_INTERVAL_S": str(config.poll_interval_s),
        "EMOTITRACK_LOG_FLUSH_INTERVAL_S": str(config.log_flush_interval_s),
        "EMOTITRACK_LOG_FLUSH_ROWS": str(config.log_flush_rows),
    }


def start_server(config: SoakConfig, env: dict[str, str], name: str) -> ApiProcess:
    port = free_port()
    log_path = config.workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [PYTHON, "-m", "serving", "--port", str(port), "--workers", "1"],
            cwd=config.workdir,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = ApiProcess(process, port, log_path)
    wait_until_ready(server)
    return server


def wait_until_ready(server: ApiProcess, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"server exited with {server.process.returncode}; log {server.log_path}:\n"
                + tail(server.log_path)
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout:.0f} s; log {server.log_path}")


def terminate(server: ApiProcess, timeout: float = 60.0) -> int:
    """SIGTERM (graceful: in-flight requests finish, the log is flushed) and the exit code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.process.pid, signal.SIGTERM)
    return server.process.wait(timeout)


def scrape(url: str) -> dict[str, float]:
    """``/metrics`` as {series: value} (``*_created`` series left out)."""
    text = httpx.get(f"{url}/metrics", timeout=10, follow_redirects=True).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            if not series.split("{")[0].endswith("_created"):
                samples[series] = float(value)
    return samples


# --------------------------------------------------------------------------- load


@dataclass
class Promotion:
    version: str
    at_s: float  # seconds into the run when the alias moved
    served_after_s: float | None = None  # until the first answer from that version


@dataclass
class Ledger:
    """What the clients sent and were acknowledged; everything the report is built from."""

    started: float = field(default_factory=time.monotonic)
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROUTES})
    failures: Counter[str] = field(default_factory=Counter)
    failure_samples: list[str] = field(default_factory=list)
    acked_tags: set[int] = field(default_factory=set)  # every acknowledged prediction's tag
    acked_ids: dict[str, int] = field(default_factory=dict)  # request id -> tag
    ack_times: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, predictions)
    feedback_queue: deque[tuple[str, str]] = field(default_factory=deque)
    feedback_acked: set[str] = field(default_factory=set)
    feedback_deferred: int = 0  # 503 while the log store was down: retried later
    versions: Counter[str] = field(default_factory=Counter)
    promotions: list[Promotion] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    cut_by_kill: int = 0  # requests without an answer because the server was killed
    killed_at: float | None = None
    outage: tuple[float, float] | None = None  # seconds into the run
    cpu_cores: dict[str, float] = field(default_factory=dict)
    queue_depth: list[tuple[float, float]] = field(default_factory=list)  # the log's, every 5 s

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def total(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values()) + sum(self.failures.values())

    def fail(self, route: str, what: str) -> None:
        self.failures[route] += 1
        if len(self.failure_samples) < 10:
            self.failure_samples.append(f"{self.now_s():.1f}s {route}: {what[:300]}")

    def acknowledge(self, tags: list[int], ids: list[str | None], labels: list[str]) -> None:
        self.acked_tags.update(tags)
        self.ack_times.append((time.monotonic(), len(tags)))
        for tag, request_id, label in zip(tags, ids, labels, strict=True):
            if request_id is not None:
                self.acked_ids[request_id] = tag
                if random.random() < 0.25:  # noqa: S311 - feedback for a share of the answers
                    self.feedback_queue.append((request_id, label))

    def saw_version(self, version: str) -> None:
        self.versions[version] += 1
        latest = self.promotions[-1] if self.promotions else None
        if latest and latest.version == version and latest.served_after_s is None:
            latest.served_after_s = self.now_s() - latest.at_s


class Traffic:
    """``concurrency`` clients, each sending one request at a time until stopped."""

    def __init__(self, config: SoakConfig, url: str, texts: list[str], ledger: Ledger) -> None:
        self.config = config
        self.url = url
        self.texts = texts
        self.ledger = ledger
        self.tags = itertools.count(1)
        self.stopping = asyncio.Event()
        self.rng = random.Random(config.seed)  # noqa: S311 - a reproducible mix

    def tagged(self, count: int) -> tuple[list[int], list[str]]:
        tags = [next(self.tags) for _ in range(count)]
        return tags, [f"[soak {tag}] {self.rng.choice(self.texts)}" for tag in tags]

    def choose_route(self) -> str:
        draw = self.rng.random()
        if draw < 0.5:
            return "/predict"
        return "/predict/batch" if draw < 0.78 else "/invocations"

    async def run(self) -> None:
        # aiohttp, not httpx: httpx's async client cost ~4 ms of CPU per request here, a third
        # of a core the server then did not get (aiohttp is locked, as a dependency of mlflow).
        connector = aiohttp.TCPConnector(limit=self.config.concurrency)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(self.url, connector=connector, timeout=timeout) as client:
            # one client in eight sends feedback: other users than those asking for predictions,
            # so a stuck /feedback (it needs the store) cannot starve the prediction clients
            feedback = self.config.concurrency // 8
            await asyncio.gather(
                *(self.predicting(client) for _ in range(self.config.concurrency - feedback)),
                *(self.giving_feedback(client) for _ in range(feedback)),
            )

    async def predicting(self, client: aiohttp.ClientSession) -> None:
        while not self.stopping.is_set():
            await self.send_prediction(client, self.choose_route())

    async def giving_feedback(self, client: aiohttp.ClientSession) -> None:
        while not self.stopping.is_set():
            if self.ledger.feedback_queue:
                await self.send_feedback(client)
            else:
                await asyncio.sleep(0.01)

    async def send_prediction(self, client: aiohttp.ClientSession, route: str) -> None:
        count = {"/predict": 1, "/predict/batch": self.config.batch_texts}.get(
            route, self.config.invocation_texts
        )
        tags, texts = self.tagged(count)
        body: dict[str, Any] = (
            {"text": texts[0]}
            if route == "/predict"
            else {"texts": texts}
            if route == "/predict/batch"
            else {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}
        )
        response = await self.post(client, route, body)
        if response is None:
            return
        status, payload = response
        if status != 200:
            self.ledger.fail(route, f"{status} {payload[:300]!r}")
            return
        answer = orjson.loads(payload)
        predictions = [answer] if route == "/predict" else answer["predictions"]
        if len(predictions) != count:
            self.ledger.fail(route, f"{len(predictions)} predictions for {count} texts")
            return
        if route == "/invocations":  # MLflow's response shape: no request id, no version
            self.ledger.acknowledge(tags, [None] * count, [p["label"] for p in predictions])
            return
        self.ledger.saw_version(str(answer["model_version"]))
        self.ledger.acknowledge(
            tags, [p["request_id"] for p in predictions], [p["sentiment"] for p in predictions]
        )

    async def send_feedback(self, client: aiohttp.ClientSession) -> None:
        request_id, label = self.ledger.feedback_queue.popleft()
        response = await self.post(client, "/feedback", {"request_id": request_id, "label": label})
        if response is None:
            return
        status, payload = response
        if status == 200:
            self.ledger.feedback_acked.add(request_id)
        elif status == 503 and self.config.pg_outage_s > 0:
            # by design while the log store is down ("retry later"): a client retries
            self.ledger.feedback_deferred += 1
            self.ledger.feedback_queue.append((request_id, label))
        else:
            self.ledger.fail("/feedback", f"{status} {payload[:300]!r}")

    async def post(
        self, client: aiohttp.ClientSession, route: str, body: dict[str, Any]
    ) -> tuple[int, bytes] | None:
        """(status, body) of one request, or None when it got no answer."""
        started = time.perf_counter()
        try:
            async with client.post(
                route, data=orjson.dumps(body), headers={"content-type": "application/json"}
            ) as answer:
                response = answer.status, await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            if self.ledger.killed_at is not None:
                self.ledger.cut_by_kill += 1  # never acknowledged: not a failure
                self.stopping.set()
            else:
                self.ledger.fail(route, f"{type(exc).__name__}: {exc}")
            return None
        if response[0] == 200:
            self.ledger.latencies_ms[route].append((time.perf_counter() - started) * 1000)
        return response


async def promote_periodically(
    config: SoakConfig, registry: Registry, ledger: Ledger, stopping: asyncio.Event
) -> None:
    """Move ``production`` to the other version every ``promote_every_s`` (the server polls)."""
    from training.registry import promote

    settings = training_settings(registry.data, registry.tracking_uri)
    for version in itertools.cycle([registry.versions[1], registry.versions[0]]):
        if await stopped_within(stopping, config.promote_every_s):
            return
        await asyncio.to_thread(promote, settings, version, reason="soak: reload under load")
        ledger.promotions.append(Promotion(version, ledger.now_s()))


async def stopped_within(event: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


async def sample_rss(server: ApiProcess, ledger: Ledger, stopping: asyncio.Event) -> None:
    while True:
        if ledger.killed_at is None and server.process.poll() is None:
            ledger.rss.append((ledger.now_s(), rss_mib(server.process.pid)))
            with contextlib.suppress(httpx.HTTPError):
                metrics = await asyncio.to_thread(scrape, server.url)
                depth = metrics.get("emotitrack_prediction_log_queue_depth", 0.0)
                ledger.queue_depth.append((ledger.now_s(), depth))
        if await stopped_within(stopping, 5.0):
            return


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (``/proc/PID/stat``), threads included."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def report_progress(config: SoakConfig, ledger: Ledger, stopping: asyncio.Event) -> None:
    last_total, last_at = 0, ledger.now_s()
    while not await stopped_within(stopping, config.progress_every_s):
        total, now = ledger.total(), ledger.now_s()
        rss = ledger.rss[-1][1] if ledger.rss else 0.0
        served = ledger.versions.most_common(1)[0][0] if ledger.versions else "-"
        say(
            f"  {now:5.0f}/{config.seconds:.0f} s  {total:7d} requests "
            f"({(total - last_total) / max(now - last_at, 1e-9):4.0f}/s)  "
            f"failed {sum(ledger.failures.values())}  promotions {len(ledger.promotions)}  "
            f"most served v{served}  RSS {rss:.0f} MiB"
        )
        last_total, last_at = total, now


async def postgres_outage(config: SoakConfig, cluster: Any, ledger: Ledger) -> None:
    """Take the prediction log's PostgreSQL away mid-traffic for ``pg_outage_s``: stopped
    (connections refused) or frozen (SIGSTOP: connections hang, as with a stuck server or a
    silent network path)."""
    await asyncio.sleep(max(config.outage_at_s - ledger.now_s(), 0))
    began = ledger.now_s()
    frozen = config.pg_outage_kind == "freeze"
    say(f"  {'freezing' if frozen else 'stopping'} PostgreSQL for {config.pg_outage_s:.0f} s")
    if frozen:
        signal_postgres(cluster, signal.SIGSTOP)
    else:
        await asyncio.to_thread(cluster.stop)
    try:
        await asyncio.sleep(config.pg_outage_s)
    finally:
        if frozen:
            signal_postgres(cluster, signal.SIGCONT)
        else:
            await asyncio.to_thread(cluster.start)
    ledger.outage = (began, ledger.now_s())
    say("  PostgreSQL is back")


def signal_postgres(cluster: Any, signum: int) -> None:
    """Send a signal to the cluster's postmaster and every backend it forked."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        for pid in process_tree(postmaster):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)


async def drive(
    config: SoakConfig,
    registry: Registry,
    server: ApiProcess,
    texts: list[str],
    ledger: Ledger,
    cluster: Any,
) -> dict[str, float]:
    """The timed part; returns the server's metrics scraped at its end (before any kill)."""
    traffic = Traffic(config, server.url, texts, ledger)
    background = [
        asyncio.create_task(promote_periodically(config, registry, ledger, traffic.stopping)),
        asyncio.create_task(sample_rss(server, ledger, traffic.stopping)),
        asyncio.create_task(report_progress(config, ledger, traffic.stopping)),
    ]
    outage = None
    if cluster is not None and config.pg_outage_s > 0:
        outage = asyncio.create_task(postgres_outage(config, cluster, ledger))
    load = asyncio.create_task(traffic.run())
    cpu_before = cpu_seconds(server.process.pid), time.process_time()
    await asyncio.sleep(config.seconds)
    ledger.cpu_cores = {  # who used the two cores: the server, or this load generator
        "server": (cpu_seconds(server.process.pid) - cpu_before[0]) / config.seconds,
        "load_generator": (time.process_time() - cpu_before[1]) / config.seconds,
    }
    metrics = await asyncio.to_thread(scrape, server.url)
    if config.sigkill:  # under load: the clients are still sending
        ledger.killed_at = time.monotonic()
        os.killpg(server.process.pid, signal.SIGKILL)
        say(f"  SIGKILL at {ledger.now_s():.1f} s under load")
    traffic.stopping.set()
    await load
    await asyncio.gather(*background)
    if outage is not None:
        await outage  # the store must be back before the log is reconciled
    return metrics


# --------------------------------------------------------------------------- results


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def rss_windows(ledger: Ledger, seconds: float) -> list[dict[str, float]]:
    """Mean RSS per minute (per third of the run when shorter than three minutes)."""
    width = 60.0 if seconds >= 180 else seconds / 3
    windows = []
    for start in np.arange(0, seconds - 1e-9, width):
        inside = [mib for at, mib in ledger.rss if start <= at < start + width]
        if inside:
            windows.append(
                {
                    "from_s": float(start),
                    "to_s": float(start + width),
                    "mib": float(np.mean(inside)),
                }
            )
    return windows


def reconcile(log_url: str, ledger: Ledger) -> dict[str, Any]:
    """The prediction log against what the clients were acknowledged, by text tag and by id."""
    import sqlalchemy as sa

    from emotitrack.core.prediction_log import FEEDBACK, PREDICTIONS, create_store_engine

    engine = create_store_engine(log_url)
    head = sa.func.substr(PREDICTIONS.c.text, 1, 32)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(PREDICTIONS.c.request_id, head)).all()
        feedback = {r[0] for r in conn.execute(sa.select(FEEDBACK.c.request_id))}
    engine.dispose()
    tag_of_id: dict[str, int] = {}
    logged: Counter[int] = Counter()
    for request_id, text_head in rows:
        found = TAG.match(text_head)
        if found:
            tag_of_id[request_id] = int(found.group(1))
            logged[int(found.group(1))] += 1
    return {
        "acknowledged": len(ledger.acked_tags),
        "logged": len(rows),
        "missing": len(ledger.acked_tags - logged.keys()),
        "duplicates": sum(count - 1 for count in logged.values() if count > 1),
        "logged_not_acknowledged": len(logged.keys() - ledger.acked_tags),
        "ids_acknowledged": len(ledger.acked_ids),
        "ids_missing": sum(1 for i in ledger.acked_ids if i not in tag_of_id),
        "ids_with_wrong_text": sum(
            1 for i, tag in ledger.acked_ids.items() if i in tag_of_id and tag_of_id[i] != tag
        ),
        "feedback_acknowledged": len(ledger.feedback_acked),
        "feedback_missing": len(ledger.feedback_acked - feedback),
        "feedback_not_acknowledged": len(feedback - ledger.feedback_acked),
    }


def acked_before_kill(ledger: Ledger, window_s: float) -> int:
    """Predictions acknowledged in the last ``window_s`` before the SIGKILL."""
    assert ledger.killed_at is not None
    return sum(n for at, n in ledger.ack_times if ledger.killed_at - window_s <= at)


def route_table(ledger: Ledger, seconds: float) -> dict[str, dict[str, Any]]:
    return {
        route: {
            "ok": len(ledger.latencies_ms[route]),
            "failed": ledger.failures[route],
            "per_s": len(ledger.latencies_ms[route]) / seconds,
            "p50_ms": percentile(ledger.latencies_ms[route], 50),
            "p99_ms": percentile(ledger.latencies_ms[route], 99),
            "max_ms": max(ledger.latencies_ms[route], default=None),
        }
        for route in ROUTES
    }


def metric_sum(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith(prefix)}


def build_report(
    config: SoakConfig,
    ledger: Ledger,
    metrics: dict[str, float],
    reconciliation: dict[str, Any],
    shutdown: dict[str, Any],
) -> dict[str, Any]:
    windows = rss_windows(ledger, config.seconds)
    growth = windows[-1]["mib"] / windows[0]["mib"] - 1 if len(windows) >= 2 else None
    routes = route_table(ledger, config.seconds)
    lags = [p.served_after_s for p in ledger.promotions if p.served_after_s is not None]
    report: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "requests": ledger.total(),
        "failed": sum(ledger.failures.values()),
        "failure_samples": ledger.failure_samples,
        "routes": routes,
        "versions_served": dict(ledger.versions),
        "promotions": len(ledger.promotions),
        # a promotion in the last seconds may end the run before the poller picks it up
        "unserved_promotions": sum(
            1
            for p in ledger.promotions
            if p.served_after_s is None and p.at_s < config.seconds - config.poll_interval_s - 5
        ),
        "reload_lag_s": {"median": percentile(lags, 50), "max": max(lags, default=None)},
        "reloads": metric_sum(metrics, "emotitrack_model_reloads_total"),
        "prediction_log": metric_sum(metrics, "emotitrack_prediction_log_"),
        "rss_mib": windows,
        "rss_growth": growth,
        "rss_samples": [(round(at, 1), round(mib, 1)) for at, mib in ledger.rss],  # every 5 s
        "log_queue_depth_max": max((d for _, d in ledger.queue_depth), default=None),
        "log_queue_depth_samples": [(round(at, 1), d) for at, d in ledger.queue_depth],
        "feedback_deferred": ledger.feedback_deferred,
        "cpu_cores": ledger.cpu_cores,
        "outage_s": ledger.outage,
        "shutdown": shutdown,
        "reconciliation": reconciliation,
    }
    report["checks"] = checks(config, report)
    report["passed"] = all(report["checks"].values())
    return report


def checks(config: SoakConfig, report: dict[str, Any]) -> dict[str, bool]:
    rec = report["reconciliation"]
    p99s = [r["p99_ms"] for route, r in report["routes"].items() if route != "/feedback"]
    found = {
        "no failed request": report["failed"] == 0,
        "every promotion served": report["promotions"] > 0 and report["unserved_promotions"] == 0,
        "no failed reload": not any(
            value
            for key, value in report["reloads"].items()
            if "loaded" not in key and "unchanged" not in key and "no_model" not in key
        ),
        f"p99 within {P99_BUDGET_MS:.0f} ms": all(
            p is not None and p <= P99_BUDGET_MS for p in p99s
        ),
        "no duplicate in the log": rec["duplicates"] == 0 and rec["ids_with_wrong_text"] == 0,
        "feedback all stored": rec["feedback_missing"] == 0,
    }
    if report["rss_growth"] is not None:
        found[f"RSS growth < {RSS_GROWTH_LIMIT:.0%}"] = report["rss_growth"] < RSS_GROWTH_LIMIT
    if config.sigkill:
        bound = report["shutdown"]["bound_records"]
        found["SIGKILL loss within one flush interval"] = rec["missing"] <= bound
        found["restart replayed every spill file"] = report["shutdown"]["spill_files_left"] == 0
    else:
        found["every acknowledged prediction logged"] = rec["missing"] == 0
        found["nothing logged unacknowledged"] = rec["logged_not_acknowledged"] == 0
        found["clean exit (SIGTERM -> 0)"] = report["shutdown"]["exit_code"] == 0
    if config.pg_outage_s > 0:
        log = report["prediction_log"]
        found["records spilled during the outage"] = (
            log.get("emotitrack_prediction_log_spilled_total", 0) > 0
        )
    return found


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render(report: dict[str, Any]) -> str:
    rec, lines = report["reconciliation"], []
    lines.append(f"requests {report['requests']:,}   failed {report['failed']}")
    lines.append(
        f"{'route':<16}{'ok':>9}{'failed':>8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    )
    for route, row in report["routes"].items():
        lines.append(
            f"{route:<16}{row['ok']:>9,}{row['failed']:>8}{fmt(row['per_s'], 1):>8}"
            f"{fmt(row['p50_ms'], 1):>9}{fmt(row['p99_ms'], 1):>9}{fmt(row['max_ms'], 0):>9}"
        )
    lines.append(
        "RSS (MiB, mean per window): "
        + "  ".join(f"{w['from_s']:.0f}-{w['to_s']:.0f}s {w['mib']:.0f}" for w in report["rss_mib"])
    )
    growth = report["rss_growth"]
    lines.append(f"RSS growth first -> last window: {'-' if growth is None else f'{growth:+.1%}'}")
    lag = report["reload_lag_s"]
    lines.append(
        f"promotions {report['promotions']}, served after median {fmt(lag['median'], 2)} s "
        f"(max {fmt(lag['max'], 2)} s); versions served {report['versions_served']}"
    )
    lines.append(f"reloads: {_short_series(report['reloads'])}")
    cores = report["cpu_cores"]
    lines.append(
        f"CPU (cores): server {fmt(cores.get('server'), 2)}, "
        f"load generator {fmt(cores.get('load_generator'), 2)}"
    )
    lines.append(f"prediction log: {_short_series(report['prediction_log'])}")
    lines.append(f"prediction log queue depth, largest sample: {report['log_queue_depth_max']}")
    if report["outage_s"]:
        began, ended = report["outage_s"]
        lines.append(
            f"PostgreSQL down {began:.1f}-{ended:.1f} s; feedback deferred (503, retried) "
            f"{report['feedback_deferred']}"
        )
    lines.append(f"shutdown: {report['shutdown']}")
    lines.append(
        f"reconciliation: acknowledged {rec['acknowledged']:,}, logged {rec['logged']:,}, "
        f"missing {rec['missing']}, duplicates {rec['duplicates']}, logged but not acknowledged "
        f"{rec['logged_not_acknowledged']}; by request id: {rec['ids_acknowledged']:,} acknowledged,"
        f" {rec['ids_missing']} missing; feedback {rec['feedback_acknowledged']:,} acknowledged, "
        f"{rec['feedback_missing']} missing"
    )
    for name, ok in report["checks"].items():
        lines.append(f"  [{'pass' if ok else 'FAIL'}] {name}")
    for sample in report["failure_samples"]:
        lines.append(f"  failure: {sample}")
    return "\n".join(lines)


def _short_series(series: dict[str, float]) -> str:
    return ", ".join(
        f"{k.removeprefix('emotitrack_').removeprefix('prediction_log_')}={v:g}"
        for k, v in sorted(series.items())
    )


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def prediction_log_store(config: SoakConfig) -> Iterator[tuple[str, Any]]:
    """(URL, cluster or None): SQLite in the work folder, or a private PostgreSQL cluster."""
    if not config.postgres:
        yield f"sqlite:///{config.workdir / 'predictions.db'}", None
        return
    from tests.servers import PostgresCluster

    cluster = PostgresCluster()
    try:
        cluster.init()
        say(f"private PostgreSQL cluster on 127.0.0.1:{cluster.port}")
        yield cluster.url, cluster
    finally:
        signal_postgres(cluster, signal.SIGCONT)  # a frozen cluster would not stop
        cluster.destroy()


def wait_for_replay(server: ApiProcess, spill_dir: Path, timeout: float = 120.0) -> None:
    """Until the restarted server has replayed every spill file into the store."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not list(spill_dir.glob("spill-*.jsonl")):
            return
        time.sleep(0.2)
    raise RuntimeError(f"spill files still in {spill_dir} after {timeout:.0f} s")


def restart_and_replay(
    config: SoakConfig, env: dict[str, str], killed: ApiProcess, ledger: Ledger
) -> dict[str, Any]:
    """After the SIGKILL: what it cut, a restart on the same log and spill folder, the replay."""
    killed.process.wait(30)
    spill_dir = config.workdir / "spill"
    left = sorted(spill_dir.glob("spill-*.jsonl"))
    spilled = sum(len(p.read_text().splitlines()) for p in left)
    say(f"  restarting: {len(left)} spill files ({spilled} records) left by the killed server")
    server = start_server(config, env, "server-restarted")
    try:
        wait_for_replay(server, spill_dir)
        replayed = scrape(server.url).get("emotitrack_prediction_log_replayed_total", 0.0)
    finally:
        code = terminate(server)
    return {
        "signal": "SIGKILL",
        "killed_exit_code": killed.process.returncode,
        "requests_cut_by_kill": ledger.cut_by_kill,
        "acked_last_flush_interval": acked_before_kill(ledger, config.log_flush_interval_s),
        "acked_last_second": acked_before_kill(ledger, 1.0),
        # the bound: what arrives during one flush interval plus the batch being written
        "bound_records": acked_before_kill(ledger, 2 * config.log_flush_interval_s),
        "spill_files_at_restart": len(left),
        "spilled_records_at_restart": spilled,
        "replayed_by_restart": replayed,
        "spill_files_left": len(list(spill_dir.glob("spill-*.jsonl"))),
        "restart_exit_code": code,
    }


def run_soak(config: SoakConfig, registry: Registry | None = None) -> dict[str, Any]:
    """Set up, drive, shut down, reconcile; the report (also written to workdir/soak.json).

    ``registry``: two versions trained before (tests share one); its first is promoted again."""
    config.workdir.mkdir(parents=True, exist_ok=True)
    if registry is None:
        registry = train_two_versions(config)
    else:
        reset_production(registry)
    texts = traffic_texts(config.data, 2000, config.seed)
    with prediction_log_store(config) as (log_url, cluster):
        env = server_env(config, registry, log_url)
        server = start_server(config, env, "server")
        try:
            say(
                f"server ready on {server.url}; {config.seconds:.0f} s of traffic at "
                f"concurrency {config.concurrency}, promotion every {config.promote_every_s:.0f} s"
            )
            ledger = Ledger()
            metrics = asyncio.run(drive(config, registry, server, texts, ledger, cluster))
            if config.sigkill:
                shutdown = restart_and_replay(config, env, server, ledger)
            else:
                shutdown = {"signal": "SIGTERM", "exit_code": terminate(server)}
        finally:
            stop(server.process)
        reconciliation = reconcile(log_url, ledger)
    report = build_report(config, ledger, metrics, reconciliation, shutdown)
    (config.workdir / "soak.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def parse_args(argv: list[str] | None = None) -> SoakConfig:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="traffic duration")
    parser.add_argument("--concurrency", type=int, default=32, help="clients sending at once")
    parser.add_argument(
        "--promote-every", type=float, default=30.0, help="seconds between promotions"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="IMDB folder")
    parser.add_argument(
        "--full-data", action="store_true", help="train on all of --data instead of a sample"
    )
    parser.add_argument("--train-rows", type=int, default=4000, help="sampled training reviews")
    parser.add_argument("--postgres", action="store_true", help="prediction log on PostgreSQL")
    parser.add_argument(
        "--pg-outage",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="stop PostgreSQL this long mid-traffic (needs --postgres)",
    )
    parser.add_argument(
        "--pg-outage-at", type=float, default=None, help="seconds in (default: a third)"
    )
    parser.add_argument(
        "--pg-outage-kind",
        choices=["stop", "freeze"],
        default="stop",
        help="stop: pg_ctl stop, connections refused; freeze: SIGSTOP, connections hang",
    )
    parser.add_argument(
        "--sigkill",
        action="store_true",
        help="end with SIGKILL under load, restart, replay, and measure the records lost",
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="default: a new temporary folder (kept)"
    )
    args = parser.parse_args(argv)
    if args.pg_outage and not args.postgres:
        parser.error("--pg-outage needs --postgres")
    if args.minutes <= 0 or args.concurrency < 1:
        parser.error("--minutes must be > 0 and --concurrency >= 1")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="emotitrack-soak-"))
    return SoakConfig(
        workdir=workdir.resolve(),
        minutes=args.minutes,
        concurrency=args.concurrency,
        promote_every_s=args.promote_every,
        data=args.data.resolve(),
        full_data=args.full_data,
        train_rows=args.train_rows,
        postgres=args.postgres,
        pg_outage_s=args.pg_outage,
        pg_outage_at_s=args.pg_outage_at,
        pg_outage_kind=args.pg_outage_kind,
        sigkill=args.sigkill,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    say(f"soak run in {config.workdir}")
    report = run_soak(config)
    print(render(report), flush=True)
    say(f"{'passed' if report['passed'] else 'FAILED'}; result in {config.workdir / 'soak.json'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
