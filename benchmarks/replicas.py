"""Replicas benchmark: one vs two API replicas behind HAProxy, and HAProxy's own cost.

One run trains and promotes the IMDB preset (or reuses a registry), starts two API replicas
(``python -m serving``) sharing one PostgreSQL prediction log, and HAProxy twice from the compose
configuration (``deploy/haproxy/haproxy.cfg``): in front of replica 1 alone, and in front of
both. ``wrk`` sends real IMDB test reviews to ``/predict`` at one concurrency in three ways:
straight to replica 1, through HAProxy to one replica, through HAProxy to two. Trials of the
three alternate, so a neighbour's load on a shared machine falls on all of them; medians and
ratios are printed and written to ``<workdir>/replicas.json``.

Run ``python -m benchmarks.replicas --help`` from the repository's root for the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from benchmarks.serving_benchmark import ensure_registry
from harness.data import review_sample, shared_data_root
from harness.load_balancer import LoadBalancer, haproxy_binary
from harness.progress import say
from harness.replicas import Replica, make_replicas, start_all, stop_all
from harness.servers import postgres_cluster
from harness.wrk import Trial, run_wrk, write_bodies, write_script

ROUTES = ("direct", "lb_1_replica", "lb_2_replicas")
LABELS = {
    "direct": "replica 1 directly",
    "lb_1_replica": "HAProxy -> 1 replica",
    "lb_2_replicas": "HAProxy -> 2 replicas",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.replicas",
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
        help="folder for the registry, logs, wrk bodies and replicas.json "
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
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections")
    parser.add_argument("--duration", type=int, default=10, help="seconds per trial")
    parser.add_argument("--trials", type=int, default=3, help="trials per route (medians)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded seconds per route")
    parser.add_argument("--texts", type=int, default=2000, help="IMDB test reviews sampled")
    parser.add_argument("--seed", type=int, default=42, help="seed of the review sample")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: --duration 3 --trials 1 --warmup 1"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.trials, args.warmup = 3, 1, 1
    if args.trials < 1 or args.duration <= 0 or args.concurrency < 1:
        parser.error("--trials, --duration and --concurrency must be positive")
    return args


def check_route(url: str, text: str) -> None:
    answer = httpx.post(f"{url}/predict", json={"text": text}, timeout=60)
    if answer.status_code != 200:
        raise RuntimeError(f"{url}/predict answered {answer.status_code}: {answer.text[:300]!r}")


def served_counts(lb: LoadBalancer) -> dict[str, int]:
    """Requests each replica answered through ``lb`` (its access log)."""
    counts: dict[str, int] = {}
    for entry in lb.access_log():
        counts[entry["server"]] = counts.get(entry["server"], 0) + 1
    return counts


def measure(args: argparse.Namespace, urls: dict[str, str], workdir: Path) -> dict[str, Any]:
    texts = review_sample(args.data, args.texts, args.seed)
    bodies = write_bodies(workdir / "bodies.jsonl", [{"text": t} for t in texts])
    script = write_script(workdir)
    for url in urls.values():
        check_route(url, texts[0])
    trials: dict[str, list[Trial]] = {route: [] for route in urls}
    for route, url in urls.items():
        say(f"warm-up {LABELS[route]}")
        run_wrk(script, url, bodies, "/predict", args.concurrency, args.warmup)
    for trial in range(1, args.trials + 1):
        for route, url in urls.items():  # alternating: a neighbour's burst hits every route
            result = run_wrk(script, url, bodies, "/predict", args.concurrency, args.duration)
            trials[route].append(result)
            say(
                f"trial {trial}/{args.trials} {LABELS[route]:24s} {result.rps:7.0f} req/s  "
                f"p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:7.1f} ms  "
                f"errors {result.status_errors + result.socket_errors}"
            )
    return {"texts": len(texts), "trials": {r: [asdict(t) for t in ts] for r, ts in trials.items()}}


def medians(trials: list[dict[str, Any]]) -> dict[str, float]:
    return {
        key: statistics.median(t[key] for t in trials)
        for key in ("rps", "p50_ms", "p99_ms", "status_errors", "socket_errors")
    }


def render(report: dict[str, Any]) -> str:
    rows = report["medians"]
    lines = [
        f"/predict, one real IMDB review per request, wrk c={report['concurrency']}, "
        f"medians of {report['trials_per_route']} x {report['duration_s']} s "
        f"({report['cpus']} cores, load average {report['load_average_before'][0]:.1f} before)",
        "",
        "| route | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|",
    ]
    for route in ROUTES:
        m = rows[route]
        errors = int(m["status_errors"] + m["socket_errors"])
        lines.append(
            f"| {LABELS[route]} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
            f"{errors} |"
        )
    r = report["ratios"]
    lines += [
        "",
        f"HAProxy -> 1 replica vs direct: req/s x{r['lb_vs_direct_rps']:.2f}, "
        f"p50 {r['lb_p50_overhead_ms']:+.1f} ms, p99 x{r['lb_vs_direct_p99']:.2f}",
        f"2 replicas vs 1 (both through HAProxy): req/s x{r['two_vs_one_rps']:.2f}, "
        f"p99 x{r['two_vs_one_p99']:.2f}",
        f"requests per replica through HAProxy -> 2 replicas: {report['served_by']}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    tracking_uri = ensure_registry(args, workdir)
    with postgres_cluster() as cluster:
        replicas: list[Replica] = make_replicas(2, workdir, tracking_uri, cluster.url)
        balancers: list[LoadBalancer] = []
        try:
            say("starting two replicas (one PostgreSQL prediction log)")
            start_all(replicas)
            for count in (1, 2):
                folder = workdir / f"lb-{count}"
                folder.mkdir(exist_ok=True)
                servers = [(r.name, r.port) for r in replicas[:count]]
                balancers.append(LoadBalancer(servers, folder))
                balancers[-1].wait_for_states(dict.fromkeys((n for n, _ in servers), "UP"))
            urls = dict(zip(ROUTES, [replicas[0].url] + [b.url for b in balancers], strict=True))
            load_before = os.getloadavg()
            measured = measure(args, urls, workdir)
            load_after = os.getloadavg()
            served_by = served_counts(balancers[1])
        finally:
            for balancer in balancers:
                balancer.stop()
            stop_all(replicas)
    rows = {route: medians(ts) for route, ts in measured["trials"].items()}
    direct, one, two = rows["direct"], rows["lb_1_replica"], rows["lb_2_replicas"]
    return {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "trials_per_route": args.trials,
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "haproxy": haproxy_binary(),
        "tracking_uri": tracking_uri,
        **measured,
        "medians": rows,
        "ratios": {
            "lb_vs_direct_rps": one["rps"] / direct["rps"],
            "lb_p50_overhead_ms": one["p50_ms"] - direct["p50_ms"],
            "lb_vs_direct_p99": one["p99_ms"] / direct["p99_ms"],
            "two_vs_one_rps": two["rps"] / one["rps"],
            "two_vs_one_p99": two["p99_ms"] / one["p99_ms"],
        },
        "served_by": served_by,
    }


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("wrk", "haproxy"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"{tool} not found: apt-get install -y {tool}", file=sys.stderr)
            return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)  # unwind like Ctrl-C: every server started is stopped
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="emotitrack-replicas-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"workdir {workdir}")
    try:
        report = run(args, workdir)
    except KeyboardInterrupt:
        say("interrupted: servers stopped")
        return 130
    out = workdir / "replicas.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print("\n" + render(report) + f"\n\nresults: {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
