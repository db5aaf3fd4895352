"""Shadow benchmark: what scoring a shadow model costs the answers, at 0, 10 % and 100 % share.

One run trains and promotes the IMDB preset (or reuses a registry), points the ``challenger``
alias at the newest version that is not Production (Production itself when there is only one:
the shadow then costs exactly what a challenger of the same preset costs), and starts three API
processes (``python -m serving``) on it: shadow off, at 10 % and at 100 %
(``EMOTITRACK_SHADOW_SHARE``). ``wrk`` sends real IMDB test reviews to ``/predict`` at one
concurrency; trials of the three alternate, so a neighbour's load on a shared machine falls on
all of them, and each trial waits for the shadow backlog of the one before to drain. Medians
and ratios to "off" are printed and written to ``<workdir>/shadow.json``, with the shadow's own
counts (scored, dropped, agreeing) from each API's ``/metrics``.

Run ``python -m benchmarks.shadow --help`` from the repository's root for the flags.
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
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from mlflow import MlflowClient

from benchmarks.serving_benchmark import ensure_registry
from harness.data import review_sample, shared_data_root
from harness.progress import say
from harness.servers import ApiServer, api_environment
from harness.wrk import Trial, run_wrk, write_bodies, write_script

NAME = "emotitrack-sentiment"
SHARES = {"off": None, "shadow_10": "0.1", "shadow_100": "1"}
LABELS = {"off": "shadow off", "shadow_10": "shadow at 10 %", "shadow_100": "shadow at 100 %"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.shadow",
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
        help="folder for the registry, logs, wrk bodies and shadow.json "
        "(default: a new temporary folder, kept after the run)",
    )
    parser.add_argument(
        "--reuse-registry",
        type=Path,
        default=None,
        metavar="PATH",
        help="MLflow SQLite registry (mlflow.db) to use; training is skipped if it exists, "
        "otherwise the model is trained into it (artifacts beside it) for the next run; its "
        "'challenger' alias is set",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="wrk connections")
    parser.add_argument("--duration", type=int, default=10, help="seconds per trial")
    parser.add_argument("--trials", type=int, default=3, help="trials per setting (medians)")
    parser.add_argument("--warmup", type=int, default=2, help="unrecorded seconds per setting")
    parser.add_argument("--texts", type=int, default=2000, help="IMDB test reviews sampled")
    parser.add_argument("--seed", type=int, default=42, help="seed of the review sample")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="every API with EMOTITRACK_SCORING_PROCESS=false: both models score in threads of "
        "the API process (the shadow's fallback path)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: --duration 3 --trials 1 --warmup 1"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.trials, args.warmup = 3, 1, 1
    if args.trials < 1 or args.duration <= 0 or args.concurrency < 1:
        parser.error("--trials, --duration and --concurrency must be positive")
    return args


def point_challenger(tracking_uri: str) -> str:
    """The ``challenger`` alias on the newest version that is not Production (or Production's)."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    production = str(client.get_model_version_by_alias(NAME, "production").version)
    versions = sorted(
        (int(v.version) for v in client.search_model_versions(f"name = '{NAME}'")), reverse=True
    )
    challenger = next((str(v) for v in versions if str(v) != production), production)
    client.set_registered_model_alias(NAME, "challenger", challenger)
    return challenger


def shadow_counts(api: ApiServer) -> dict[str, float]:
    """The shadow's counters of ``api``, summed over versions."""
    totals = {"predictions": 0.0, "agreements": 0.0, "dropped": 0.0}
    for series, value in api.scrape().items():
        for key in totals:
            if series.startswith(f"emotitrack_shadow_{key}_total"):
                totals[key] += value
    return totals


def wait_ready(api: ApiServer, shadow: bool, in_process: bool, timeout: float = 300) -> None:
    """Until the model (and the shadow's) is loaded, and scoring in its child process unless
    ``in_process``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        metrics = api.scrape()
        up = metrics.get("emotitrack_model_loaded") == 1 and (
            in_process or metrics.get("emotitrack_scoring_process_up") == 1
        )
        shadow_loaded = not shadow or any(
            s.startswith("emotitrack_shadow_model_info") and v == 1 for s, v in metrics.items()
        )
        if up and shadow_loaded:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{api.url} not ready with its models within {timeout:g} s")


def wait_drained(api: ApiServer, settle_s: float = 1.0, timeout: float = 120) -> None:
    """Until the shadow's counters stop moving: its backlog must not load the next trial."""
    deadline = time.monotonic() + timeout
    last = shadow_counts(api)
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        now = shadow_counts(api)
        if now == last:
            return
        last = now


def start_apis(tracking_uri: str, workdir: Path, in_process: bool) -> dict[str, ApiServer]:
    apis: dict[str, ApiServer] = {}
    try:
        for setting, share in SHARES.items():
            folder = workdir / setting
            folder.mkdir(exist_ok=True)
            extra = {} if share is None else {
                "shadow_model_uri": f"models:/{NAME}@challenger", "shadow_share": share
            }  # fmt: skip
            if in_process:
                extra["scoring_process"] = "false"
            env = {
                **os.environ,
                **api_environment(tracking_uri, folder, poll_interval_s="300", **extra),
            }
            apis[setting] = ApiServer(env, folder, name=setting, timeout=300)
            wait_ready(apis[setting], share is not None, in_process)
            say(f"{LABELS[setting]}: {apis[setting].url}")
    except BaseException:
        stop_apis(apis)
        raise
    return apis


def stop_apis(apis: dict[str, ApiServer]) -> None:
    for api in apis.values():
        try:
            api.terminate()
        finally:
            api.stop()


def measure(args: argparse.Namespace, apis: dict[str, ApiServer], workdir: Path) -> dict[str, Any]:
    texts = review_sample(args.data, args.texts, args.seed)
    bodies = write_bodies(workdir / "bodies.jsonl", [{"text": t} for t in texts])
    script = write_script(workdir)
    for api in apis.values():
        answer = httpx.post(f"{api.url}/predict", json={"text": texts[0]}, timeout=60)
        answer.raise_for_status()
    trials: dict[str, list[Trial]] = {setting: [] for setting in apis}
    for setting, api in apis.items():
        say(f"warm-up {LABELS[setting]}")
        run_wrk(script, api.url, bodies, "/predict", args.concurrency, args.warmup)
        wait_drained(api)
    before = {setting: shadow_counts(api) for setting, api in apis.items()}
    for trial in range(1, args.trials + 1):
        for setting, api in apis.items():  # alternating: a neighbour's burst hits every setting
            result = run_wrk(script, api.url, bodies, "/predict", args.concurrency, args.duration)
            trials[setting].append(result)
            say(
                f"trial {trial}/{args.trials} {LABELS[setting]:16s} {result.rps:7.0f} req/s  "
                f"p50 {result.p50_ms:6.1f} ms  p99 {result.p99_ms:7.1f} ms  "
                f"errors {result.status_errors + result.socket_errors}"
            )
            wait_drained(api)
    after = {setting: shadow_counts(api) for setting, api in apis.items()}
    shadow = {
        setting: {key: after[setting][key] - before[setting][key] for key in after[setting]}
        | {"requests": sum(t.requests for t in trials[setting])}
        for setting in apis
    }
    return {
        "texts": len(texts),
        "trials": {s: [asdict(t) for t in ts] for s, ts in trials.items()},
        "shadow": shadow,
    }


def medians(trials: list[dict[str, Any]]) -> dict[str, float]:
    return {
        key: statistics.median(t[key] for t in trials)
        for key in ("rps", "p50_ms", "p99_ms", "status_errors", "socket_errors")
    }


def render(report: dict[str, Any]) -> str:
    rows, off = report["medians"], report["medians"]["off"]
    lines = [
        f"/predict, one real IMDB review per request, wrk c={report['concurrency']}, "
        f"medians of {report['trials_per_setting']} x {report['duration_s']} s "
        f"({report['cpus']} cores, load average {report['load_average_before'][0]:.1f} before, "
        f"{report['load_average_after'][0]:.1f} after); shadow: version "
        f"{report['challenger_version']}, Production: version {report['production_version']}; "
        f"scoring in {report['scoring']}",
        "",
        "| shadow | req/s | p50 ms | p99 ms | p99 vs off | errors | texts shadowed | dropped |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for setting in SHARES:
        m, s = rows[setting], report["shadow"][setting]
        errors = int(m["status_errors"] + m["socket_errors"])
        lines.append(
            f"| {LABELS[setting]} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
            f"x{m['p99_ms'] / off['p99_ms']:.2f} | {errors} | {s['predictions']:.0f} | "
            f"{s['dropped']:.0f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    tracking_uri = ensure_registry(args, workdir)
    challenger = point_challenger(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    production = str(client.get_model_version_by_alias(NAME, "production").version)
    say(f"Production: version {production}; shadow (challenger): version {challenger}")
    apis = start_apis(tracking_uri, workdir, args.in_process)
    try:
        load_before = os.getloadavg()
        measured = measure(args, apis, workdir)
        load_after = os.getloadavg()
    finally:
        stop_apis(apis)
    rows = {setting: medians(ts) for setting, ts in measured["trials"].items()}
    off = rows["off"]
    return {
        "concurrency": args.concurrency,
        "duration_s": args.duration,
        "trials_per_setting": args.trials,
        "scoring": "in-process threads" if args.in_process else "scoring processes",
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "tracking_uri": tracking_uri,
        "production_version": production,
        "challenger_version": challenger,
        **measured,
        "medians": rows,
        "ratios": {
            setting: {
                "rps_vs_off": rows[setting]["rps"] / off["rps"],
                "p50_vs_off": rows[setting]["p50_ms"] / off["p50_ms"],
                "p99_vs_off": rows[setting]["p99_ms"] / off["p99_ms"],
            }
            for setting in SHARES
        },
    }


def interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)  # unwind like Ctrl-C: every server started is stopped
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="emotitrack-shadow-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"workdir {workdir}")
    try:
        report = run(args, workdir)
    except KeyboardInterrupt:
        say("interrupted: servers stopped")
        return 130
    out = workdir / "shadow.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print("\n" + render(report) + f"\n\nresults: {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
