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
when every check passed, 1 otherwise. The soak itself is ``harness.soak``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from harness.data import shared_data_root
from harness.progress import say
from harness.soak import SoakConfig, run_soak


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


def parse_args(argv: list[str] | None = None) -> SoakConfig:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.soak",
        description="\n\n".join(__doc__.split("\n\n")[:2]) if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=5.0, help="traffic duration")
    parser.add_argument("--concurrency", type=int, default=32, help="clients sending at once")
    parser.add_argument(
        "--promote-every", type=float, default=30.0, help="seconds between promotions"
    )
    parser.add_argument(
        "--data", type=Path, default=shared_data_root() / "imdb", help="IMDB folder"
    )
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
        "--pg-outage-at", type=float, default=None, help="seconds into the run; none: a third"
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
        "--workdir",
        type=Path,
        default=None,
        help="where results and logs go; none: a new temporary folder (kept)",
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
