"""Serving benchmark: EmotiTrack's server against ``mlflow models serve`` on the same model.

One run trains and promotes a model (or reuses a registry), then serves the Production model
``models:/emotitrack-sentiment@production`` first with the peer (``mlflow models serve
--env-manager local``) and then with our server (``python -m serving``, prediction log on), one at
a time so they never compete for the cores. Both are driven by ``wrk`` on 127.0.0.1 with the same
real IMDB test reviews (a seeded sample, not truncated), and a table of medians and ratios is
printed. Results also go to ``<workdir>/benchmark.json``.

Run ``python benchmarks/serving_benchmark.py --help`` for the flags.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MODEL_NAME = "emotitrack-sentiment"
MODEL_URI = f"models:/{MODEL_NAME}@production"
BATCH_SIZE = 100
HOST = "127.0.0.1"  # the only address this benchmark ever targets

# Lua for wrk: every thread loads the pre-built bodies (one JSON document per line) and rotates
# through them from its own offset; done() prints one machine-readable line.
WRK_SCRIPT = r"""
local prepared = {}
local counter = 0
local threads_made = 0

function setup(thread)
  threads_made = threads_made + 1
  thread:set("thread_index", threads_made)
end

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    prepared[#prepared + 1] = wrk.format("POST", args[2], headers, line)
  end
  counter = (thread_index or 0) * 7919
end

function request()
  counter = counter + 1
  return prepared[(counter % #prepared) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


# --------------------------------------------------------------------------- data and model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=REPO.parent / "shared" / "data" / "imdb",
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
    args = parser.parse_args(argv)
    if args.trials < 1 or args.start_trials < 1 or args.duration <= 0:
        parser.error("--trials and --start-trials must be >= 1 and --duration > 0")
    if args.texts < BATCH_SIZE:
        parser.error(f"--texts must be at least {BATCH_SIZE} (one batch)")
    return args


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def ensure_registry(args: argparse.Namespace, workdir: Path) -> str:
    """Tracking URI of a registry whose ``production`` alias points at a trained model."""
    db = (args.reuse_registry or workdir / "mlflow.db").resolve()
    uri = f"sqlite:///{db}"
    if args.reuse_registry and db.exists():
        say(f"reusing registry {db} (training skipped)")
        return uri
    say(f"training on {args.data} and promoting (registry {db}) ...")
    code = (
        "from pathlib import Path\n"
        "from training.settings import TrainingSettings\n"
        "from training.model import Hyperparameters\n"
        "from training.train import train\n"
        "from training.registry import promote\n"
        "import sys\n"
        "s = TrainingSettings(data=Path(sys.argv[1]), tracking_uri=sys.argv[2])\n"
        "r = train(s, Hyperparameters())\n"
        "promote(s, r.version)\n"
        "print('registered and promoted version', r.version)\n"
    )
    started = time.perf_counter()
    db.parent.mkdir(parents=True, exist_ok=True)
    # cwd: MLflow puts local artifacts under ./mlruns of the training process.
    subprocess.run(  # noqa: S603 - our own interpreter and code
        [PYTHON, "-c", code, str(args.data.resolve()), uri],
        cwd=db.parent,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    say(f"trained in {time.perf_counter() - started:.0f} s")
    return uri


def sample_texts(data: Path, count: int, seed: int) -> list[str]:
    import pandas as pd

    test = pd.read_parquet(data / "test.parquet", columns=["text"])
    texts = [str(t) for t in test["text"].tolist() if str(t).strip()]
    return random.Random(seed).sample(  # noqa: S311 - a reproducible sample, not a secret
        texts, min(count, len(texts))
    )


def batches_of(texts: list[str], size: int = BATCH_SIZE) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts) - size + 1, size)]


def mlflow_version() -> str:
    from importlib.metadata import version

    return version("mlflow")


def in_process_throughput(
    tracking_uri: str, batches: list[list[str]], duration: float, trials: int
) -> dict[str, list[float]]:
    """Texts/s in this process on the same batches, one call per batch: the bare scikit-learn
    ``predict_proba`` (the issue's yardstick) and the compiled scorer our server calls."""
    import mlflow

    from training.scoring import compile_scorer

    mlflow.set_tracking_uri(tracking_uri)
    pipeline = mlflow.pyfunc.load_model(MODEL_URI).unwrap_python_model().pipeline
    scorers = {"predict_proba": pipeline.predict_proba, "compiled": compile_scorer(pipeline)}
    results: dict[str, list[float]] = {}
    for name, score in scorers.items():
        if score is None:
            continue
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
class ServerSpec:
    name: str
    ready_path: str
    single_path: str
    batch_path: str
    command: Callable[[int], list[str]]
    env: dict[str, str]
    single_body: Callable[[str], Any]
    batch_body: Callable[[list[str]], Any]
    labels: Callable[[Any], list[str]]  # predicted labels out of a batch response


def peer_spec(tracking_uri: str) -> ServerSpec:
    def frame(texts: list[str]) -> dict[str, Any]:
        return {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}

    return ServerSpec(
        name="peer",
        ready_path="/ping",
        single_path="/invocations",
        batch_path="/invocations",
        command=lambda port: [
            PYTHON,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            MODEL_URI,
            "--env-manager",
            "local",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env={"MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        single_body=lambda text: frame([text]),
        batch_body=frame,
        labels=lambda response: [row["label"] for row in response["predictions"]],
    )


def ours_spec(tracking_uri: str, workdir: Path) -> ServerSpec:
    return ServerSpec(
        name="ours",
        ready_path="/ready",
        single_path="/predict",
        batch_path="/predict/batch",
        command=lambda port: [PYTHON, "-m", "serving", "--port", str(port), "--workers", "1"],
        env={
            "MLFLOW_TRACKING_URI": tracking_uri,
            "EMOTITRACK_PREDICTION_LOG_URL": f"sqlite:///{workdir / 'predictions.db'}",
            "EMOTITRACK_SPILL_DIR": str(workdir / "spill"),
        },
        single_body=lambda text: {"text": text},
        batch_body=lambda texts: {"texts": texts},
        labels=lambda response: [p["sentiment"] for p in response["predictions"]],
    )


@dataclass
class Server:
    spec: ServerSpec
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http(url: str, body: Any = None, timeout: float = 60.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - always http://127.0.0.1
        url, data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def tail(path: Path, lines: int = 20) -> str:
    with suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def wait_ready(server: Server, started: float, timeout: float = 180.0) -> float:
    while time.perf_counter() - started < timeout:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.spec.name} exited with {server.process.returncode} before it was ready; "
                f"log {server.log_path}:\n{tail(server.log_path)}"
            )
        with suppress(OSError):
            status, _ = http(server.url + server.spec.ready_path, timeout=1.0)
            if status == 200:
                return time.perf_counter() - started
        time.sleep(0.02)
    raise RuntimeError(f"{server.spec.name} not ready after {timeout:.0f} s; log {server.log_path}")


def stop(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the whole process group (servers fork workers), SIGKILL it after ``grace``."""
    if process.poll() is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    # A worker may outlive the group leader for a moment: make sure none is left.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def running(spec: ServerSpec, workdir: Path, attempt: int) -> Iterator[Server]:
    port = free_port()
    log_path = workdir / f"{spec.name}-server-{attempt}.log"
    # The peer runs `uvicorn` from PATH: put this interpreter's bin/ first, as an activated venv.
    path = os.pathsep.join([str(Path(PYTHON).parent), os.environ.get("PATH", "")])
    env = {**os.environ, "PATH": path, "PYTHONPATH": str(REPO), **spec.env}
    with log_path.open("wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            spec.command(port),
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # own process group: stop() reaches every worker
        )
        server = Server(spec, port, process, log_path)
        try:
            server.ready_s = wait_ready(server, started)
            yield server
        finally:
            stop(process)


def process_tree(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            # the command name may hold spaces and parentheses: split after the last ')'
            parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree.extend(children)
        frontier = children
    return tree


def rss_mib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (VmRSS, MiB)."""
    total_kib = 0
    for pid in process_tree(root):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


# --------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    batch: bool
    connections: int


@dataclass
class Trial:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_errors: int
    socket_errors: int


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


def write_bodies(path: Path, bodies: list[Any]) -> Path:
    # json.dumps escapes newlines inside reviews: one document per line for the Lua reader.
    path.write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bodies))
    return path


def run_wrk(
    args: argparse.Namespace,
    script: Path,
    url: str,
    bodies: Path,
    path: str,
    connections: int,
    seconds: int,
) -> Trial:
    command = [
        "wrk",
        "-t",
        str(min(args.wrk_threads, connections)),
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        f"{args.wrk_timeout:g}s",
        "-s",
        str(script),
        url,
        "--",
        str(bodies),
        path,
    ]
    done = subprocess.run(  # noqa: S603 - wrk, only ever against 127.0.0.1
        command, capture_output=True, text=True, check=False, timeout=seconds + 120
    )
    line = next((s for s in done.stdout.splitlines() if s.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("BENCH_JSON "))
    elapsed = r["duration_us"] / 1e6
    return Trial(
        requests=r["requests"],
        seconds=elapsed,
        rps=r["requests"] / elapsed if elapsed else 0.0,
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        status_errors=r["status"],
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
    )


def check_server(server: Server, texts: list[str], batch: list[str]) -> list[str]:
    """One single and one batch request must answer 200 with one prediction per text."""
    spec = server.spec
    status, body = http(server.url + spec.single_path, spec.single_body(texts[0]))
    if status != 200:
        raise RuntimeError(f"{spec.name} {spec.single_path} answered {status}: {body[:300]!r}")
    status, body = http(server.url + spec.batch_path, spec.batch_body(batch))
    if status != 200:
        raise RuntimeError(f"{spec.name} {spec.batch_path} answered {status}: {body[:300]!r}")
    labels = spec.labels(json.loads(body))
    if len(labels) != len(batch):
        raise RuntimeError(f"{spec.name}: {len(labels)} predictions for {len(batch)} texts")
    return labels


def benchmark_server(
    args: argparse.Namespace,
    spec: ServerSpec,
    workdir: Path,
    script: Path,
    texts: list[str],
    batches: list[list[str]],
) -> dict[str, Any]:
    single_bodies = write_bodies(
        workdir / f"{spec.name}-single.jsonl", [spec.single_body(t) for t in texts]
    )
    batch_bodies = write_bodies(
        workdir / f"{spec.name}-batch.jsonl", [spec.batch_body(b) for b in batches]
    )
    ready: list[float] = []
    revision = repo_revision()
    say(f"{spec.name}: repo at {revision}")
    for attempt in range(1, args.start_trials):
        say(f"{spec.name}: timing start-to-ready ({attempt}/{args.start_trials})")
        with running(spec, workdir, attempt) as server:
            ready.append(server.ready_s)
            say(f"{spec.name}: ready in {server.ready_s:.2f} s; stopping")
    say(f"{spec.name}: timing start-to-ready ({args.start_trials}/{args.start_trials})")
    with running(spec, workdir, args.start_trials) as server:
        ready.append(server.ready_s)
        say(f"{spec.name}: ready in {server.ready_s:.2f} s (pid {server.process.pid})")
        labels = check_server(server, texts, batches[0])
        results: dict[str, ScenarioResult] = {}
        for scenario in scenarios(args):
            bodies = batch_bodies if scenario.batch else single_bodies
            path = spec.batch_path if scenario.batch else spec.single_path
            say(f"{spec.name}: {scenario.label}: warm-up {args.warmup:g} s")
            if args.warmup > 0:
                run_wrk(args, script, server.url, bodies, path, scenario.connections, args.warmup)
            result = results[scenario.key] = ScenarioResult(scenario.label)
            for trial in range(1, args.trials + 1):
                t = run_wrk(
                    args, script, server.url, bodies, path, scenario.connections, args.duration
                )
                result.trials.append(t)
                errors = t.status_errors + t.socket_errors
                say(
                    f"{spec.name}: {scenario.label}: trial {trial}/{args.trials}: "
                    f"{t.rps:,.1f} req/s, p50 {t.p50_ms:.1f} ms, p99 {t.p99_ms:.1f} ms"
                    + (f", {errors} ERRORS" if errors else "")
                )
        time.sleep(2)  # let requests still in flight when wrk stopped finish
        rss = rss_mib(server.process.pid)
        say(f"{spec.name}: RSS of the process tree after the load: {rss:.0f} MiB")
        metrics = scrape_log_metrics(server) if spec.name == "ours" else {}
    return {
        "start_to_ready_s": ready,
        "rss_mib": rss,
        "labels_batch0": labels,
        "scenarios": results,
        "prediction_log": metrics,
        "repo_revision": revision,
    }


def scrape_log_metrics(server: Server) -> dict[str, float]:
    """Our prediction-log counters, to show the log was on and kept up."""
    status, body = http(server.url + "/metrics")
    found: dict[str, float] = {}
    if status != 200:
        return found
    for line in body.decode().splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("emotitrack_prediction_log_") and not name.endswith("_created"):
            with suppress(ValueError):
                found[name.removeprefix("emotitrack_prediction_log_")] = float(value)
    return found


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
    compiled = report.get("in_process_compiled_texts_per_s")
    lines.append(
        f"in-process on {BATCH_SIZE}-text batches (median): predict_proba "
        f"{report['in_process_texts_per_s']:,.0f} texts/s"
        + (f", compiled scorer (what ours calls) {compiled:,.0f} texts/s" if compiled else "")
    )
    batch_key = scenarios(args)[-1].key
    for name, server in (("peer", peer), ("ours", ours)):
        if server and batch_key in server["scenarios"]:
            texts_per_s = server["scenarios"][batch_key].median("rps") * BATCH_SIZE
            share = 100 * texts_per_s / report["in_process_texts_per_s"]
            lines.append(
                f"{name} batch throughput: {texts_per_s:,.0f} texts/s = {share:.0f}% of "
                "in-process predict_proba"
                + (
                    f", {100 * texts_per_s / compiled:.0f}% of the compiled scorer"
                    if compiled
                    else ""
                )
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


def to_json(report: dict[str, Any]) -> dict[str, Any]:
    servers = {
        name: {
            **{k: v for k, v in server.items() if k != "scenarios"},
            "scenarios": {
                key: {
                    "label": result.scenario,
                    "median_rps": result.median("rps"),
                    "median_p50_ms": result.median("p50_ms"),
                    "median_p99_ms": result.median("p99_ms"),
                    "trials": [asdict(t) for t in result.trials],
                }
                for key, result in server["scenarios"].items()
            },
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
    # SIGTERM/SIGHUP unwind like Ctrl-C (SIGINT too, even where a shell started us ignoring it), so every `finally` stops the servers it started.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="emotitrack-bench-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    say(f"workdir {workdir}")
    try:
        tracking_uri = ensure_registry(args, workdir)
        texts = sample_texts(args.data, args.texts, args.seed)
        batches = batches_of(texts)
        say(f"{len(texts)} reviews sampled ({len(batches)} batches of {BATCH_SIZE})")
        say("in-process baselines (no server running)")
        in_process = in_process_throughput(tracking_uri, batches, args.duration, args.trials)
        script = workdir / "bench.lua"
        script.write_text(WRK_SCRIPT)
        specs = {"peer": peer_spec(tracking_uri), "ours": ours_spec(tracking_uri, workdir)}
        report: dict[str, Any] = {
            "model_uri": MODEL_URI,
            "tracking_uri": tracking_uri,
            "texts_sample": texts,
            "mean_text_chars": statistics.mean(len(t) for t in texts),
            "in_process_trials_texts_per_s": in_process,
            "in_process_texts_per_s": statistics.median(in_process["predict_proba"]),
            "in_process_compiled_texts_per_s": statistics.median(in_process["compiled"])
            if "compiled" in in_process
            else None,
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
