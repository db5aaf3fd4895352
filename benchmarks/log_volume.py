"""The prediction log at production volume (issue 18): a PostgreSQL log of N predictions of real
texts, a 24 h window's aggregates and drift sample, and pruning one day's partition.

    python -m benchmarks.log_volume --rows 1000000 [--log-url postgresql://...] [--out FILE]

Without ``--log-url`` a private cluster is started (``harness.servers.PostgresCluster``) and
destroyed at the end. Rows: texts drawn from the shared data's mix (``harness.batch_jobs.MIX``:
IMDB reviews, SST-2 sentences, tweets, product reviews), repeated with fresh ids, timestamps
spread over the last 24 h; another tenth of N two days back, the day pruned. Bulk-loaded with
COPY, then VACUUM ANALYZE (what autovacuum does to an insert-only table). The window is read by
``monitoring.window.load_window`` in a child process, whose peak RSS is reported. Prints JSON
and the EXPLAIN (ANALYZE, BUFFERS) plans of the window queries.

With ``--report`` the whole ``emotitrack monitor`` job also runs on the 24 h window, in its own
process (time and peak RSS), against a model trained on all of IMDB with a 25,000-row
reference sample (``--registry PATH/mlflow.db`` reuses one: its Production version is used).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa

from emotitrack.core.log_migrations import partitions
from emotitrack.core.log_queries import WindowQuery, prune, window_aggregates, window_sample
from emotitrack.core.prediction_log import create_store_engine, prepare_log
from harness.batch_jobs import MIX
from harness.data import shared_data_root
from harness.processes import peak_rss_mb
from harness.servers import PostgresCluster

TARGETS = {"window_s": 60.0, "peak_rss_mib": 1024.0, "prune_s": 5.0}
COPY_COLUMNS = (
    "request_id, created_at, text, label, confidence, probabilities, model_name, model_version, "
    "latency_ms, endpoint, source"
)


def texts(count: int, seed: int = 5) -> np.ndarray:
    """A pool of real texts in the mix's proportions (rows repeat them with fresh ids)."""
    rng = np.random.default_rng(seed)
    root = shared_data_root()
    parts = []
    for (name, split), share in MIX.items():
        column = pd.read_parquet(root / name / f"{split}.parquet", columns=["text"])["text"]
        pool = column[column.str.strip().astype(bool)].to_numpy()
        parts.append(rng.choice(pool, size=max(1, round(count * share))))
    return np.concatenate(parts)


def bulk_load(url: str, rows: int, start: datetime, span: timedelta, seed: int) -> float:
    """COPY ``rows`` predictions with created_at uniform in [start, start + span)."""
    rng = np.random.default_rng(seed)
    pool = texts(50_000, seed)
    began = time.perf_counter()
    with (
        psycopg.connect(url) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY predictions ({COPY_COLUMNS}) FROM STDIN") as copy,
    ):
        for offset in range(0, rows, 100_000):
            n = min(100_000, rows - offset)
            seconds = rng.uniform(0, span.total_seconds(), n)
            picks = rng.integers(0, len(pool), n)
            # a model that says negative a bit more often, with confidences of a calibrated one
            negative = rng.random(n) < 0.55
            confidence = np.clip(rng.beta(8, 1.5, n), 0.5, 1.0)
            for i in range(n):
                label = "negative" if negative[i] else "positive"
                p = float(confidence[i])
                other = "positive" if negative[i] else "negative"
                copy.write_row(
                    (
                        uuid.uuid4().hex,
                        start + timedelta(seconds=float(seconds[i])),
                        pool[picks[i]],
                        label,
                        p,
                        json.dumps({label: p, other: 1 - p}),
                        "emotitrack-sentiment",
                        "3",
                        2.5,
                        "predict",
                        "api",
                    )
                )
            print(f"  copied {offset + n:,} / {rows:,}", file=sys.stderr, flush=True)
    return time.perf_counter() - began


def report_registry(workdir: Path) -> str:
    """All of IMDB's training split, the default model, a 25,000-row reference."""
    from harness.registries import make_registry
    from training.hyperparameters import Hyperparameters

    workdir.mkdir(parents=True, exist_ok=True)
    print("training the reference model on all of IMDB (a few minutes)", file=sys.stderr)
    registry = make_registry(
        shared_data_root() / "imdb", workdir, (Hyperparameters(),), reference_size=25_000
    )
    return registry.tracking_uri


def run_report(url: str, tracking_uri: str, workdir: Path) -> dict[str, Any]:
    """In a child process: the monitoring job over the last 24 h, as `emotitrack monitor`."""
    from monitoring.job import run_monitoring
    from monitoring.settings import MonitoringSettings

    settings = MonitoringSettings(
        tracking_uri=tracking_uri,
        prediction_log_url=url,
        reports_dir=workdir / "reports",
        window_hours=24,
    )
    began = time.perf_counter()
    summary = run_monitoring(settings, all_versions=True)  # the loaded rows name version 3
    return {
        "seconds": time.perf_counter() - began,
        "rows": summary.counts["current"],
        "reference_rows": summary.counts["reference"],
        "report_sample": summary.counts["report_sample"],
        "verdicts": {k: v["detected"] for k, v in summary.verdicts.items()},
        "estimated_accuracy": summary.quality["estimated_accuracy"],
        "peak_rss_mib": peak_rss_mb(),  # not ru_maxrss: it counts the parent at fork
    }


def read_window(url: str, hours: float, sample_rows: int) -> dict[str, Any]:
    """In a child process: the window as ``emotitrack monitor`` would read it."""
    from monitoring.window import load_window

    until = datetime.now(UTC)
    began = time.perf_counter()
    data = load_window(
        url, since=until - timedelta(hours=hours), until=until, sample_rows=sample_rows
    )
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "rows": data.aggregates.rows,
        "sample_rows": len(data.sample),
        "label_shares": data.aggregates.label_shares,
        "mean_confidence": data.aggregates.mean_confidence,
        "peak_rss_mib": peak_rss_mb(),  # not ru_maxrss: it counts the parent at fork
    }


def explain(url: str, hours: float, sample_rows: int) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement the window's reading sends: the
    aggregates, the feedback agreement, the sample's top-N and its fetch by primary key."""
    engine = create_store_engine(url)
    until = datetime.now(UTC)
    query = WindowQuery(since=until - timedelta(hours=hours), until=until)
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if "pg_catalog" not in statement and "SELECT" in statement:
            sent.append((statement, params))

    sa.event.listen(engine, "before_cursor_execute", capture)
    with engine.connect() as conn:
        window_aggregates(conn, query)
        window_sample(conn, query, sample_rows, chunk=sample_rows)
    sa.event.remove(engine, "before_cursor_execute", capture)
    plans = {}
    names = ("aggregates", "feedback agreement", "sample: top-N ids", "sample: rows by id")
    with psycopg.connect(url) as raw:
        for name, (statement, params) in zip(names, sent, strict=True):
            lines = raw.execute(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params).fetchall()
            # the id lists make lines of many kilobytes
            plans[name] = "\n".join(_short(row[0]) for row in lines)
    engine.dispose()
    return plans


def _short(line: str, width: int = 160) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


def run(
    url: str, rows: int, sample_rows: int, tracking_uri: str | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:  # fmt: skip
    engine = create_store_engine(url)
    prepare_log(engine)
    now = datetime.now(UTC)
    old_day = (now - timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)
    print(
        f"loading {rows:,} rows over the last 24 h and {rows // 10:,} on {old_day:%F}",
        file=sys.stderr,
    )
    load_s = bulk_load(url, rows, now - timedelta(hours=24), timedelta(hours=24), seed=1)
    with engine.begin() as conn:  # a log written since then has that day's partition
        partitions.ensure_days(conn, [old_day.date()])
    load_s += bulk_load(url, rows // 10, old_day, timedelta(hours=23), seed=2)
    began = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE predictions")
    vacuum_s = time.perf_counter() - began
    with engine.connect() as conn:
        size = conn.exec_driver_sql(
            "SELECT pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits "
            "WHERE inhparent = 'predictions'::regclass"
        ).scalar()
    # The reader runs in its own process, so its peak RSS is the reading's alone.
    reads = []
    for _ in range(3):
        child = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "benchmarks.log_volume",
                "--read",
                url,
                "--sample-rows",
                str(sample_rows),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        reads.append(json.loads(child.stdout))
    report = None
    if tracking_uri is not None and workdir is not None:
        child = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "benchmarks.log_volume", "--run-report", url,
             "--registry-uri", tracking_uri, "--workdir", str(workdir)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        report = json.loads(child.stdout.strip().splitlines()[-1])
    plans = explain(url, 24, sample_rows)
    began = time.perf_counter()
    pruned = prune(engine, keep_days=1)
    prune_s = time.perf_counter() - began
    engine.dispose()
    window_s = sorted(r["seconds"] for r in reads)[1]
    peak = max(r["peak_rss_mib"] for r in reads)
    return {
        "rows_in_window": reads[0]["rows"],
        "rows_loaded": rows + rows // 10,
        "table_size": size,
        "load_s": round(load_s, 1),
        "load_rows_per_s": round((rows + rows // 10) / load_s),
        "vacuum_analyze_s": round(vacuum_s, 1),
        "window_s_median_of_3": round(window_s, 2),
        "window_s_runs": [round(r["seconds"], 2) for r in reads],
        "reader_peak_rss_mib": round(peak),
        "sample_rows": reads[0]["sample_rows"],
        "label_shares": reads[0]["label_shares"],
        "report": report,
        "prune_s": round(prune_s, 3),
        "pruned_partitions": pruned.dropped_partitions,
        "targets": TARGETS,
        "met": {
            "window_s": window_s <= TARGETS["window_s"],
            "peak_rss_mib": peak <= TARGETS["peak_rss_mib"],
            "prune_s": prune_s <= TARGETS["prune_s"],
            **(
                {
                    "report_s": report["seconds"] <= TARGETS["window_s"],
                    "report_peak_rss_mib": report["peak_rss_mib"] <= TARGETS["peak_rss_mib"],
                }
                if report
                else {}
            ),
        },
        "plans": plans,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the 24 h window")
    parser.add_argument("--log-url", help="an empty PostgreSQL database (else a private cluster)")
    parser.add_argument("--sample-rows", type=int, default=10_000)
    parser.add_argument("--out", type=Path, help="write the results (JSON) here too")
    parser.add_argument(
        "--report", action="store_true", help="also run the whole monitoring job on the window"
    )
    parser.add_argument("--registry", type=Path, help="with --report: reuse this mlflow.db")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "emotitrack-log-volume",
        help="models, reports",
    )
    parser.add_argument("--read", help=argparse.SUPPRESS)  # the child process: read one window
    parser.add_argument("--run-report", help=argparse.SUPPRESS)  # the child: the monitoring job
    parser.add_argument("--registry-uri", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.read:
        print(json.dumps(read_window(args.read, 24, args.sample_rows)))
        return 0
    if args.run_report:
        result = run_report(args.run_report, args.registry_uri, args.workdir)
        print(json.dumps(result))
        return 0
    tracking_uri = None
    if args.report:
        tracking_uri = (
            f"sqlite:///{args.registry.resolve()}"
            if args.registry
            else report_registry(args.workdir / "registry")
        )
    cluster = None
    url = args.log_url
    if url is None:
        cluster = PostgresCluster()
        cluster.init()
        url = cluster.url
    try:
        results = run(url, args.rows, args.sample_rows, tracking_uri, args.workdir)
    finally:
        if cluster is not None:
            cluster.destroy()
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    print(
        f"log volume: {results['rows_in_window']:,} rows, window {results['window_s_median_of_3']} s, "
        f"reader peak {results['reader_peak_rss_mib']} MiB, prune {results['prune_s']} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
