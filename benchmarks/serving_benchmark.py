"""Serving benchmark: EmotiTrack's server against ``mlflow models serve`` on the same model.

One run trains and promotes a model (or reuses a registry), then serves the production model
``models:/emotitrack-sentiment@production`` first with the peer (``mlflow models serve
--env-manager local``) and then with our server (``python -m serving``, prediction log on), one at
a time so they never compete for the cores. Both are driven by ``wrk`` on 127.0.0.1 with the same
real IMDB test reviews (a seeded sample, not truncated), and a table of medians and ratios is
printed. Our server is loaded through each protocol it speaks (``/predict``, MLflow's
``/invocations`` with ``dataframe_split`` bodies, the Open Inference Protocol's
``/v2/models/{name}/infer``), each compared with the peer's ``/invocations``. Results also go to
``<workdir>/benchmark.json``.

Run ``python -m benchmarks.serving_benchmark --help`` from the repository's root for the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx
import mlflow

from benchmarks.scorers import registered_scorer
from harness import REPO
from harness.data import review_sample, shared_data_root
from harness.processes import HOST, Server, free_port, rss_mib
from harness.progress import say
from harness.registries import make_registry
from harness.servers import (
    api_command,
    api_environment,
    mlflow_models_serve_command,
    scrape_metrics,
)
from harness.wrk import Trial, run_wrk, write_bodies, write_script
from training.model import Hyperparameters

MODEL_NAME = "emotitrack-sentiment"
MODEL_URI = f"models:/{MODEL_NAME}@production"
BATCH_SIZE = 100


# --------------------------------------------------------------------------- data and model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.serving_benchmark",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=shared_data_root() / "imdb",
        help="IMDB folder with train.parquet and test.parquet (columns text, label)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="folder for the registry, server logs, wrk bodies and benchmark.json "
        "(default: a new temporary folder, kept after the run)",
    )
    parser.add_argument(
        "--reuse-registry",
        type=Path,
        default=None,
        metavar="PATH",
        help="MLflow SQLite registry (mlflow.db) to use; training is skipped if it exists, "
        "otherwise the model is trained into it (artifacts beside it) for the next run",
    )
    parser.add_argument(
        "--duration", type=int, default=10, help="seconds per trial (whole seconds, as wrk)"
    )
    parser.add_argument("--trials", type=int, default=3, help="trials per scenario (medians)")
    parser.add_argument(
        "--warmup", type=int, default=2, help="unrecorded seconds of load before a scenario"
    )
    parser.add_argument(
        "--start-trials",
        type=int,
        default=3,
        help="server starts timed for start-to-ready (median); the last one is benchmarked",
    )
    parser.add_argument(
        "--texts", type=int, default=2000, help="IMDB test reviews sampled for the bodies"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the review sample")
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 8, 64],
        help="connections for the single-text scenarios",
    )
    parser.add_argument(
        "--batch-concurrency", type=int, default=8, help="connections for the batch scenario"
    )
    parser.add_argument(
        "--wrk-threads",
        type=int,
        default=1,
        help="wrk threads (capped at the connection count); one thread leaves the most CPU "
        "to the server on a small machine",
    )
    parser.add_argument(
        "--wrk-timeout", type=float, default=30.0, help="seconds before wrk counts a timeout"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=["peer", "ours"],
        default=["peer", "ours"],
        help="servers to benchmark, in this order",
    )
    parser.add_argument(
        "--routes",
        nargs="+",
        choices=list(ROUTES),
        default=list(ROUTES),
        help="our routes to load (the first is the one the targets are checked on)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: --duration 3 --trials 1 --start-trials 1 --warmup 1",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.trials, args.start_trials, args.warmup = 3, 1, 1, 1
    if args.trials < 1 or args.start_trials < 1 or args.duration <= 0:
        parser.error("--trials and --start-trials must be >= 1 and --duration > 0")
    if args.texts < BATCH_SIZE:
        parser.error(f"--texts must be at least {BATCH_SIZE} (one batch)")
    return args


def ensure_registry(args: argparse.Namespace, workdir: Path) -> str:
    """Tracking URI of a registry whose ``production`` alias points at a trained model."""
    db = (args.reuse_registry or workdir / "mlflow.db").resolve()
    if args.reuse_registry and db.exists():
        say(f"reusing registry {db} (training skipped)")
        return f"sqlite:///{db}"
    say(f"training on {args.data} and promoting (registry {db}) ...")
    started = time.perf_counter()
    db.parent.mkdir(parents=True, exist_ok=True)
    # in a child: this process measures in-process throughput next, without training's memory
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as child:
        registry = child.submit(
            make_registry,
            args.data.resolve(),
            db.parent,
            [Hyperparameters()],  # the IMDB preset's defaults, on all of the data
            reference_size=None,
            min_rows=None,
            db=db,
        ).result()
    say(f"trained in {time.perf_counter() - started:.0f} s")
    return registry.tracking_uri


def batches_of(texts: list[str], size: int = BATCH_SIZE) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]


def mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def in_process_throughput(
    tracking_uri: str, batches: list[list[str]], duration: float, trials: int
) -> dict[str, list[float]]:
    """Texts/s in this process on the same batches, one call per batch: MLflow's in-process
    ``pyfunc.predict`` on a DataFrame (the yardstick) and the scorer our server calls."""
    import pandas as pd

    mlflow.set_tracking_uri(tracking_uri)
    pyfunc = mlflow.pyfunc.load_model(MODEL_URI)

    def predict(texts: list[str]) -> object:
        return pyfunc.predict(pd.DataFrame({"text": texts}))

    scorers: dict[str, Callable[[list[str]], object]] = {
        "pyfunc": predict,
        "served": registered_scorer(MODEL_URI),
    }
    results: dict[str, list[float]] = {}
    for name, score in scorers.items():
        score(batches[0])  # warm-up
        results[name] = []
        for trial in range(trials):
            texts = 0
            started = time.perf_counter()
            deadline = started + duration
            i = 0
            while time.perf_counter() < deadline:
                score(batches[i % len(batches)])
                texts += len(batches[i % len(batches)])
                i += 1
            rate = texts / (time.perf_counter() - started)
            say(f"  in-process {name} trial {trial + 1}/{trials}: {rate:,.0f} texts/s")
            results[name].append(rate)
    return results


# --------------------------------------------------------------------------- servers


@dataclass(frozen=True)
class Route:
    """One way to ask a server for predictions: its paths, bodies and how to read labels."""

    name: str
    single_path: str
    batch_path: str
    single_body: Callable[[str], Any]
    batch_body: Callable[[list[str]], Any]
    labels: Callable[[Any], list[str]]  # predicted labels out of a batch response


@dataclass(frozen=True)
class ServerSpec:
    name: str
    ready_path: str
    command: Callable[[int], list[str]]
    env: dict[str, str]
    routes: tuple[Route, ...]


def dataframe_split(texts: list[str]) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}


def inference_request(texts: list[str]) -> dict[str, Any]:
    tensor = {"name": "text", "shape": [len(texts)], "datatype": "BYTES", "data": texts}
    return {"inputs": [tensor]}


def mlflow_labels(response: Any) -> list[str]:
    return [row["label"] for row in response["predictions"]]


def tensor_labels(response: Any) -> list[str]:
    label = next(output for output in response["outputs"] if output["name"] == "label")
    return list(label["data"])


INFER_PATH = f"/v2/models/{MODEL_NAME}/infer"
ROUTES = {
    "predict": Route(
        "predict",
        "/predict",
        "/predict/batch",
        lambda text: {"text": text},
        lambda texts: {"texts": texts},
        lambda response: [p["sentiment"] for p in response["predictions"]],
    ),
    "invocations": Route(
        "invocations",
        "/invocations",
        "/invocations",
        lambda text: dataframe_split([text]),
        dataframe_split,
        mlflow_labels,
    ),
    "v2-infer": Route(
        "v2-infer",
        INFER_PATH,
        INFER_PATH,
        lambda text: inference_request([text]),
        inference_request,
        tensor_labels,
    ),
}


def peer_spec(tracking_uri: str) -> ServerSpec:
    return ServerSpec(
        name="peer",
        ready_path="/ping",
        command=lambda port: mlflow_models_serve_command(MODEL_URI, port),
        env={"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        routes=(ROUTES["invocations"],),
    )


def ours_spec(tracking_uri: str, workdir: Path, routes: list[str]) -> ServerSpec:
    return ServerSpec(
        name="ours",
        ready_path="/ready",
        command=api_command,
        env=api_environment(tracking_uri, workdir),
        routes=tuple(ROUTES[name] for name in routes),
    )


def start(spec: ServerSpec, workdir: Path, attempt: int) -> Server:
    """The server of ``spec``, timed from its start until ``ready_path`` answers 200."""
    port = free_port()
    log = workdir / f"{spec.name}-server-{attempt}.log"
    return Server(
        spec.command(port),
        port,
        log,
        ready_path=spec.ready_path,
        cwd=workdir,
        env=spec.env,
        timeout=180,
        interval=0.02,  # start-to-ready is one of the figures
    )


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    batch: bool
    connections: int


@dataclass
class ScenarioResult:
    scenario: str
    trials: list[Trial] = field(default_factory=list)

    def median(self, name: str) -> float:
        return statistics.median(getattr(t, name) for t in self.trials)

    @property
    def errors(self) -> tuple[int, int]:
        return (
            sum(t.status_errors for t in self.trials),
            sum(t.socket_errors for t in self.trials),
        )


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    single = [Scenario(f"single_c{c}", f"single c={c}", False, c) for c in args.concurrency]
    c = args.batch_concurrency
    return [*single, Scenario(f"batch{BATCH_SIZE}_c{c}", f"batch{BATCH_SIZE} c={c}", True, c)]


def check_route(route: Route, server: Server, texts: list[str], batch: list[str]) -> list[str]:
    """One single and one batch request must answer 200 with one prediction per text."""
    single, batched = route.single_body(texts[0]), route.batch_body(batch)
    for path, body in ((route.single_path, single), (route.batch_path, batched)):
        answer = httpx.post(server.url + path, json=body, timeout=60)
        if answer.status_code != 200:
            raise RuntimeError(
                f"{route.name} {path} answered {answer.status_code}: {answer.text[:300]!r}"
            )
    labels = route.labels(answer.json())  # the batch's
    if len(labels) != len(batch):
        raise RuntimeError(f"{route.name}: {len(labels)} predictions for {len(batch)} texts")
    return labels


def benchmark_server(
    args: argparse.Namespace,
    spec: ServerSpec,
    workdir: Path,
    script: Path,
    texts: list[str],
    batches: list[list[str]],
) -> dict[str, Any]:
    ready: list[float] = []
    revision = repo_revision()
    say(f"{spec.name}: repo at {revision}")
    for attempt in range(1, args.start_trials):
        say(f"{spec.name}: timing start-to-ready ({attempt}/{args.start_trials})")
        with start(spec, workdir, attempt) as server:
            ready.append(server.ready_s)
            say(f"{spec.name}: ready in {server.ready_s:.2f} s; stopping")
    say(f"{spec.name}: timing start-to-ready ({args.start_trials}/{args.start_trials})")
    routes: dict[str, dict[str, ScenarioResult]] = {}
    labels: dict[str, list[str]] = {}
    with start(spec, workdir, args.start_trials) as server:
        ready.append(server.ready_s)
        say(f"{spec.name}: ready in {server.ready_s:.2f} s (pid {server.process.pid})")
        wrk = partial(
            run_wrk, script, server.url, threads=args.wrk_threads, timeout_s=args.wrk_timeout
        )
        for route in spec.routes:
            labels[route.name] = check_route(route, server, texts, batches[0])
            stem = f"{spec.name}-{route.name}"
            single_bodies = write_bodies(
                workdir / f"{stem}-single.jsonl", [route.single_body(t) for t in texts]
            )
            batch_bodies = write_bodies(
                workdir / f"{stem}-batch.jsonl", [route.batch_body(b) for b in batches]
            )
            results = routes[route.name] = {}
            for scenario in scenarios(args):
                bodies = batch_bodies if scenario.batch else single_bodies
                path = route.batch_path if scenario.batch else route.single_path
                connections = scenario.connections
                name = f"{spec.name} {path}: {scenario.label}"
                say(f"{name}: warm-up {args.warmup:g} s")
                if args.warmup > 0:
                    wrk(bodies, path, connections, args.warmup)
                result = results[scenario.key] = ScenarioResult(scenario.label)
                for trial in range(1, args.trials + 1):
                    t = wrk(bodies, path, connections, args.duration)
                    result.trials.append(t)
                    errors = t.status_errors + t.socket_errors
                    say(
                        f"{name}: trial {trial}/{args.trials}: "
                        f"{t.rps:,.1f} req/s, p50 {t.p50_ms:.1f} ms, p99 {t.p99_ms:.1f} ms"
                        + (f", {errors} ERRORS" if errors else "")
                    )
        time.sleep(2)  # let requests still in flight when wrk stopped finish
        rss = rss_mib(server.process.pid)
        say(f"{spec.name}: RSS of the process tree after the load: {rss:.0f} MiB")
        metrics = prediction_log_counters(server) if spec.name == "ours" else {}
    first = spec.routes[0].name
    return {
        "start_to_ready_s": ready,
        "rss_mib": rss,
        "labels_batch0": labels[first],
        "route_labels_batch0": labels,
        "scenarios": routes[first],  # the first route's: the targets are checked on it
        "routes": routes,
        "prediction_log": metrics,
        "repo_revision": revision,
    }


def prediction_log_counters(server: Server) -> dict[str, float]:
    """Our prediction-log counters, to show the log was on and kept up."""
    prefix = "emotitrack_prediction_log_"
    with suppress(httpx.HTTPError):
        found = scrape_metrics(server.url)
        return {k.removeprefix(prefix): v for k, v in found.items() if k.startswith(prefix)}
    return {}


def git(*args: str) -> str:
    command = ["git", "-C", str(REPO), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=True)  # noqa: S603
    return done.stdout.strip()


def repo_revision() -> str:
    """The commit our server runs from (``+dirty`` if serving/ or training/ has changes)."""
    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "serving", "training")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def logged_rows(workdir: Path) -> int | None:
    db = workdir / "predictions.db"
    if not db.exists():
        return None
    with suppress(sqlite3.Error), sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT COUNT(*) FROM predictions").fetchone()[0])
    return None


# --------------------------------------------------------------------------- report


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def render(report: dict[str, Any], args: argparse.Namespace) -> str:
    peer, ours = report["servers"].get("peer"), report["servers"].get("ours")
    header = (
        f"{'scenario':<16}{'peer req/s':>12}{'p50 ms':>9}{'p99 ms':>9} |"
        f"{'ours req/s':>12}{'p50 ms':>9}{'p99 ms':>9} |{'req/s ratio':>13}{'p99 ratio':>11}"
    )
    lines = [
        f"medians of {args.trials} trials x {args.duration:g} s; wrk on {HOST}; "
        f"{len(report['texts_sample'])} IMDB test reviews "
        f"(mean {report['mean_text_chars']:.0f} chars, seed {args.seed}); "
        "ratios are ours/peer; "
        f"ours at {ours['repo_revision'] if ours else '-'}, mlflow {report['mlflow_version']}",
        header,
        "-" * len(header),
    ]
    flagged = []
    for scenario in scenarios(args):
        cells = [f"{scenario.label:<16}"]
        medians: dict[str, tuple[float, float, float]] = {}
        for name, server in (("peer", peer), ("ours", ours)):
            result = server["scenarios"].get(scenario.key) if server else None
            if result is None:
                cells.append(f"{'-':>12}{'-':>9}{'-':>9} |")
                continue
            rps, p50, p99 = result.median("rps"), result.median("p50_ms"), result.median("p99_ms")
            medians[name] = (rps, p50, p99)
            status_errors, socket_errors = result.errors
            mark = "!" if status_errors or socket_errors else ""
            if mark:
                flagged.append(
                    f"! {name} {scenario.label}: {status_errors} non-2xx responses, "
                    f"{socket_errors} socket errors/timeouts over {args.trials} trials"
                )
            cells.append(f"{f'{rps:,.1f}{mark}':>12}{p50:>9.1f}{p99:>9.1f} |")
        if "peer" in medians and "ours" in medians:
            rps_ratio = ratio(medians["ours"][0], medians["peer"][0])
            p99_ratio = ratio(medians["ours"][2], medians["peer"][2])
            cells.append(f"{fmt_ratio(rps_ratio):>13}{fmt_ratio(p99_ratio):>11}")
        lines.append("".join(cells))
    lines.extend(flagged or ["no errors: every response was 2xx, no socket errors or timeouts"])
    if ours and peer and len(ours["routes"]) > 1:
        lines.extend(["", *protocol_table(peer, ours, args)])
    lines.append("")
    for name, server in (("peer", peer), ("ours", ours)):
        if server is None:
            continue
        ready = server["start_to_ready_s"]
        lines.append(
            f"{name}: start-to-ready {statistics.median(ready):.2f} s (median of {len(ready)}: "
            + ", ".join(f"{r:.2f}" for r in ready)
            + f"); RSS after load {server['rss_mib']:.0f} MiB (process tree)"
        )
    served = report["in_process_served_texts_per_s"]
    lines.append(
        f"in-process on {BATCH_SIZE}-text batches (median): pyfunc.predict "
        f"{report['in_process_texts_per_s']:,.0f} texts/s, the model format's scorer (what ours "
        f"calls) {served:,.0f} texts/s"
    )
    batch_key = scenarios(args)[-1].key
    for name, server in (("peer", peer), ("ours", ours)):
        if server and batch_key in server["scenarios"]:
            texts_per_s = server["scenarios"][batch_key].median("rps") * BATCH_SIZE
            share = 100 * texts_per_s / report["in_process_texts_per_s"]
            lines.append(
                f"{name} batch throughput: {texts_per_s:,.0f} texts/s = {share:.0f}% of "
                f"in-process pyfunc.predict, {100 * texts_per_s / served:.0f}% of the scorer"
            )
    if ours and ours.get("prediction_log"):
        log = ours["prediction_log"]
        lines.append(
            "ours prediction log: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in sorted(log.items()))
            + f"; rows in predictions.db after stop: {report.get('ours_logged_rows')}"
        )
    if report.get("label_agreement") is not None:
        lines.append(
            f"peer vs ours labels on batch 0: {100 * report['label_agreement']:.0f}% identical"
        )
    before, after = report["load_average_before"], report["load_average_after"]
    lines.append(
        f"machine: {report['cpus']} CPUs; 1-min load average {before[0]:.2f} before, "
        f"{after[0]:.2f} after (other processes share the machine: compare with care)"
    )
    lines.extend(["", *targets(report, args)])
    return "\n".join(lines)


def protocol_table(
    peer: dict[str, Any], ours: dict[str, Any], args: argparse.Namespace
) -> list[str]:
    """Each of our routes against the peer's /invocations, scenario by scenario."""
    header = (
        f"{'ours route':<14}{'scenario':<16}{'ours req/s':>12}{'p99 ms':>9} |"
        f"{'req/s ratio':>13}{'p99 ratio':>11}  labels as /predict"
    )
    lines = ["each of our routes against the peer's /invocations (ratios ours/peer):", header]
    lines.append("-" * len(header))
    reference = ours["route_labels_batch0"][next(iter(ours["routes"]))]
    for route, results in ours["routes"].items():
        same = ours["route_labels_batch0"][route] == reference
        for scenario in scenarios(args):
            mine, theirs = results.get(scenario.key), peer["scenarios"].get(scenario.key)
            if mine is None or theirs is None:
                continue
            rps, p99 = mine.median("rps"), mine.median("p99_ms")
            errors = sum(mine.errors)
            lines.append(
                f"{route:<14}{scenario.label:<16}{f'{rps:,.1f}' + ('!' if errors else ''):>12}"
                f"{p99:>9.1f} |{fmt_ratio(ratio(rps, theirs.median('rps'))):>13}"
                f"{fmt_ratio(ratio(p99, theirs.median('p99_ms'))):>11}  {'yes' if same else 'NO'}"
            )
    return lines


def targets(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    peer, ours = report["servers"].get("peer"), report["servers"].get("ours")
    if not (peer and ours):
        return ["targets: need both servers"]
    out = ["targets (issue):"]

    def verdict(ok: bool) -> str:
        return "MET   " if ok else "MISSED"

    def get(server: dict[str, Any], key: str, name: str) -> float | None:
        result = server["scenarios"].get(key)
        return result.median(name) if result else None

    top, low = max(args.concurrency), min(args.concurrency)
    o_rps, p_rps = get(ours, f"single_c{top}", "rps"), get(peer, f"single_c{top}", "rps")
    o_p99, p_p99 = get(ours, f"single_c{top}", "p99_ms"), get(peer, f"single_c{top}", "p99_ms")
    if o_rps is not None and p_rps and o_p99 is not None and p_p99 is not None:
        ok = o_rps >= 10 * p_rps and o_p99 < p_p99
        out.append(
            f"  {verdict(ok)} c={top}: >= 10x peer req/s with a lower p99 "
            f"(got {o_rps / p_rps:.2f}x, p99 {o_p99:.1f} vs {p_p99:.1f} ms)"
        )
    o_rps, p_rps = get(ours, f"single_c{low}", "rps"), get(peer, f"single_c{low}", "rps")
    if o_rps is not None and p_rps:
        out.append(f"  {verdict(o_rps >= 3 * p_rps)} c={low}: >= 3x (got {o_rps / p_rps:.2f}x)")
    batch = get(ours, scenarios(args)[-1].key, "rps")
    if batch is not None:
        share = 100 * batch * BATCH_SIZE / report["in_process_texts_per_s"]
        out.append(
            f"  {verdict(share >= 70)} batch throughput >= 70% of in-process (got {share:.0f}%)"
        )
    ready = statistics.median(ours["start_to_ready_s"])
    out.append(f"  {verdict(ready <= 3.0)} start-to-ready <= 3 s (got {ready:.2f} s)")
    return out


def scenarios_json(results: dict[str, ScenarioResult]) -> dict[str, Any]:
    return {
        key: {
            "label": result.scenario,
            "median_rps": result.median("rps"),
            "median_p50_ms": result.median("p50_ms"),
            "median_p99_ms": result.median("p99_ms"),
            "trials": [asdict(t) for t in result.trials],
        }
        for key, result in results.items()
    }


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    servers = {
        name: {
            **{k: v for k, v in server.items() if k not in ("scenarios", "routes")},
            "scenarios": scenarios_json(server["scenarios"]),
            "routes": {route: scenarios_json(r) for route, r in server["routes"].items()},
        }
        for name, server in report["servers"].items()
    }
    return {**{k: v for k, v in report.items() if k != "texts_sample"}, "servers": servers}


# --------------------------------------------------------------------------- main


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get update && apt-get install -y wrk", file=sys.stderr)
        return 2
    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` stops the servers it started
    # (SIGINT too, even where a shell started us ignoring it).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="emotitrack-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"workdir {workdir}")
    try:
        tracking_uri = ensure_registry(args, workdir)
        texts = review_sample(args.data, args.texts, args.seed)
        batches = batches_of(texts)
        say(f"{len(texts)} reviews sampled ({len(batches)} batches of {BATCH_SIZE})")
        say("in-process baselines (no server running)")
        in_process = in_process_throughput(tracking_uri, batches, args.duration, args.trials)
        script = write_script(workdir)
        specs = {
            "peer": peer_spec(tracking_uri),
            "ours": ours_spec(tracking_uri, workdir, args.routes),
        }
        report: dict[str, Any] = {
            "model_uri": MODEL_URI,
            "tracking_uri": tracking_uri,
            "texts_sample": texts,
            "mean_text_chars": statistics.mean(len(t) for t in texts),
            "in_process_trials_texts_per_s": in_process,
            "in_process_texts_per_s": statistics.median(in_process["pyfunc"]),
            "in_process_served_texts_per_s": statistics.median(in_process["served"]),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "servers": {},
            "cpus": os.cpu_count(),
            "mlflow_version": mlflow_version(),
            "load_average_before": os.getloadavg(),
        }
        for name in args.servers:
            report["servers"][name] = benchmark_server(
                args, specs[name], workdir, script, texts, batches
            )
        report["load_average_after"] = os.getloadavg()
        if "ours" in report["servers"]:
            report["ours_logged_rows"] = logged_rows(workdir)
        if {"peer", "ours"} <= report["servers"].keys():
            a = report["servers"]["peer"]["labels_batch0"]
            b = report["servers"]["ours"]["labels_batch0"]
            report["label_agreement"] = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    except KeyboardInterrupt:
        say("interrupted: servers stopped")
        return 130
    table = render(report, args)
    out = workdir / "benchmark.json"
    out.write_text(json.dumps(to_json(report), indent=2, default=str))
    print("\n" + table + f"\n\nresults: {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
