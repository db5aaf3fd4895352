"""The soak: minutes of mixed traffic against a real server that reloads under load, with
optional faults (the prediction log's PostgreSQL stopped or frozen, the server SIGKILLed), then
a reconciliation of the log against every acknowledged prediction. ``benchmarks.soak`` runs it
from the command line; the fault tests run it short."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from harness.data import review_sample, shared_data_root, write_sample
from harness.ledger import ROUTES, Ledger, Promotion, reconcile
from harness.processes import cpu_seconds, rss_mib, wait_until
from harness.progress import say
from harness.registries import Registry, make_registry, reset_production
from harness.servers import ApiServer, PostgresCluster, api_environment
from harness.traffic import MixedTraffic
from training.model import Hyperparameters
from training.registry import promote

P99_BUDGET_MS = 500.0  # the serving issue's latency budget (and the p99 alert's threshold)
RSS_GROWTH_LIMIT = 0.10
SAMPLE_EVERY_S = 5.0  # RSS and the log's queue depth


@dataclass
class SoakConfig:
    workdir: Path
    minutes: float = 5.0
    concurrency: int = 32
    promote_every_s: float = 30.0
    data: Path = field(default_factory=lambda: shared_data_root() / "imdb")
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


def train_two_versions(config: SoakConfig) -> Registry:
    """Versions 1 and 2 (different vocabulary sizes), trained by the real code on a sample of
    ``config.data`` (all of it with ``full_data``); 1 is promoted."""
    data = config.data
    if not config.full_data:
        rows = {"train": config.train_rows, "test": config.test_rows}
        data = write_sample(config.data, config.workdir / "data", rows, config.seed)
    sizes = (100_000, 50_000) if config.full_data else (20_000, 10_000)
    started = time.perf_counter()
    registry = make_registry(data, config.workdir, [Hyperparameters(max_features=s) for s in sizes])
    say(f"trained versions {', '.join(registry.versions)} in "
        f"{time.perf_counter() - started:.0f} s on {data}")  # fmt: skip
    return registry


def start_server(config: SoakConfig, env: dict[str, str], name: str) -> ApiServer:
    return ApiServer(env, config.workdir, ready_path="/ready", name=name, timeout=120)


@contextlib.contextmanager
def prediction_log_store(config: SoakConfig) -> Iterator[tuple[str, PostgresCluster | None]]:
    """(URL, cluster or None): SQLite in the work folder, or a private PostgreSQL cluster."""
    if not config.postgres:
        yield f"sqlite:///{config.workdir / 'predictions.db'}", None
        return
    cluster = PostgresCluster()
    try:
        cluster.init()
        say(f"private PostgreSQL cluster on port {cluster.port}")
        yield cluster.url, cluster
    finally:
        cluster.destroy()


# --------------------------------------------------------------------------- the timed part


async def stopped_within(event: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), seconds)
    return event.is_set()


async def promote_periodically(
    config: SoakConfig, registry: Registry, ledger: Ledger, stopping: asyncio.Event
) -> None:
    """Move ``production`` to the other version every ``promote_every_s`` (the server polls)."""
    for version in itertools.cycle([registry.versions[1], registry.versions[0]]):
        if await stopped_within(stopping, config.promote_every_s):
            return
        await asyncio.to_thread(
            promote, registry.settings, version, reason="soak: reload under load"
        )
        ledger.promotions.append(Promotion(version, ledger.now_s()))


async def sample_rss(server: ApiServer, ledger: Ledger, stopping: asyncio.Event) -> None:
    while True:
        if ledger.killed_at is None and server.process.poll() is None:
            ledger.rss.append((ledger.now_s(), rss_mib(server.process.pid)))
            with contextlib.suppress(httpx.HTTPError):
                metrics = await asyncio.to_thread(server.scrape)
                depth = metrics.get("emotitrack_prediction_log_queue_depth", 0.0)
                ledger.queue_depth.append((ledger.now_s(), depth))
        if await stopped_within(stopping, SAMPLE_EVERY_S):
            return


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


async def postgres_outage(config: SoakConfig, cluster: PostgresCluster, ledger: Ledger) -> None:
    """Take the prediction log's PostgreSQL away mid-traffic for ``pg_outage_s``: stopped
    (connections refused) or frozen (connections hang)."""
    await asyncio.sleep(max(config.outage_at_s - ledger.now_s(), 0))
    began = ledger.now_s()
    frozen = config.pg_outage_kind == "freeze"
    say(f"  {'freezing' if frozen else 'stopping'} PostgreSQL for {config.pg_outage_s:.0f} s")
    if frozen:
        cluster.freeze()
    else:
        await asyncio.to_thread(cluster.stop)
    try:
        await asyncio.sleep(config.pg_outage_s)
    finally:
        if frozen:
            cluster.thaw()
        else:
            await asyncio.to_thread(cluster.start)
    ledger.outage = (began, ledger.now_s())
    say("  PostgreSQL is back")


async def drive(
    config: SoakConfig,
    registry: Registry,
    server: ApiServer,
    texts: list[str],
    ledger: Ledger,
    cluster: PostgresCluster | None,
) -> dict[str, float]:
    """The timed part; returns the server's metrics scraped at its end (before any kill)."""
    traffic = MixedTraffic(
        server.url,
        texts,
        ledger,
        concurrency=config.concurrency,
        batch_texts=config.batch_texts,
        invocation_texts=config.invocation_texts,
        seed=config.seed,
        feedback_may_wait=config.pg_outage_s > 0,
    )
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
    ledger.cpu_cores = {  # who used the cores: the server, or this load generator
        "server": (cpu_seconds(server.process.pid) - cpu_before[0]) / config.seconds,
        "load_generator": (time.process_time() - cpu_before[1]) / config.seconds,
    }
    metrics = await asyncio.to_thread(server.scrape)
    if config.sigkill:  # under load: the clients are still sending
        ledger.killed_at = time.monotonic()
        server.kill()
        say(f"  SIGKILL at {ledger.now_s():.1f} s under load")
    traffic.stopping.set()
    await load
    await asyncio.gather(*background)
    if outage is not None:
        await outage  # the store must be back before the log is reconciled
    return metrics


def restart_and_replay(
    config: SoakConfig, env: dict[str, str], killed: ApiServer, ledger: Ledger
) -> dict[str, Any]:
    """After the SIGKILL: what it cut, a restart on the same log and spill folder, the replay."""
    killed.process.wait(30)
    spill_dir = config.workdir / "spill"
    left = sorted(spill_dir.glob("spill-*.jsonl"))
    spilled = sum(len(p.read_text().splitlines()) for p in left)
    say(f"  restarting: {len(left)} spill files ({spilled} records) left by the killed server")
    server = start_server(config, env, "server-restarted")
    try:
        wait_until(
            lambda: not list(spill_dir.glob("spill-*.jsonl")), 120, "every spill file replayed"
        )
        replayed = server.scrape().get("emotitrack_prediction_log_replayed_total", 0.0)
    finally:
        code = server.terminate()
        server.stop()
    return {
        "signal": "SIGKILL",
        "killed_exit_code": killed.process.returncode,
        "requests_cut_by_kill": ledger.cut_by_kill,
        "acked_last_flush_interval": ledger.acked_before_kill(config.log_flush_interval_s),
        "acked_last_second": ledger.acked_before_kill(1.0),
        # the bound: what arrives during one flush interval plus the batch being written
        "bound_records": ledger.acked_before_kill(2 * config.log_flush_interval_s),
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
    texts = review_sample(config.data, 2000, config.seed)
    with prediction_log_store(config) as (log_url, cluster):
        env = api_environment(
            registry.tracking_uri,
            config.workdir,
            prediction_log_url=log_url,
            poll_interval_s=str(config.poll_interval_s),
            log_flush_interval_s=str(config.log_flush_interval_s),
            log_flush_rows=str(config.log_flush_rows),
        )
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
                shutdown = {"signal": "SIGTERM", "exit_code": server.terminate()}
        finally:
            server.stop()
        reconciliation = reconcile(log_url, ledger)
    report = build_report(config, ledger, metrics, reconciliation, shutdown)
    (config.workdir / "soak.json").write_text(json.dumps(report, indent=2, default=str))
    return report


# --------------------------------------------------------------------------- the report


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


def series_starting(metrics: dict[str, float], prefix: str) -> dict[str, float]:
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
    lags = [p.served_after_s for p in ledger.promotions if p.served_after_s is not None]
    report: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
        "requests": ledger.total(),
        "failed": sum(ledger.failures.values()),
        "failure_samples": ledger.failure_samples,
        "routes": route_table(ledger, config.seconds),
        "versions_served": dict(ledger.versions),
        "promotions": len(ledger.promotions),
        # a promotion in the last seconds may end the run before the poller picks it up
        "unserved_promotions": sum(
            1
            for p in ledger.promotions
            if p.served_after_s is None and p.at_s < config.seconds - config.poll_interval_s - 5
        ),
        "reload_lag_s": {"median": percentile(lags, 50), "max": max(lags, default=None)},
        "reloads": series_starting(metrics, "emotitrack_model_reloads_total"),
        "prediction_log": series_starting(metrics, "emotitrack_prediction_log_"),
        "rss_mib": windows,
        "rss_growth": growth,
        "rss_samples": [(round(at, 1), round(mib, 1)) for at, mib in ledger.rss],
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
