"""Batch scoring side by side on one table of real texts mixed from the shared data (IMDB
reviews, SST-2 phrases, SemEval tweets, product and restaurant reviews):

- the peer: ``mlflow models predict -m URI -i texts.csv -t csv --env-manager local``;
- plain in-process ``mlflow.pyfunc.load_model(URI).predict(frame)``;
- ``emotitrack score`` (the local engine) with one process per core, and with one process;
- ``emotitrack score --engine spark`` on ``local[2]`` (needs the ``spark`` extra and Java 17+).

    python -m benchmarks.batch_scoring [--rows 100000 1000000] [--model-uri URI]

Each job runs as its own process to its end; it prints rows/s, wall time and the peak resident
memory of the job's whole process tree, and writes them as JSON. Without ``--model-uri`` a small
model is trained by the product's training code on an IMDB sample into a throw-away registry
(``MLFLOW_TRACKING_URI`` names the registry otherwise).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from emotitrack.core.progress import configure_logging
from harness import REPO
from harness.batch_jobs import (
    JobResult,
    measure,
    mlflow_predict_command,
    pyfunc_command,
    score_command,
    write_mixed_texts,
)
from harness.data import shared_data_root, write_sample
from harness.registries import make_registry


def run(
    rows: int, model_uri: str, data_root: Path, workdir: Path, env: dict[str, str]
) -> list[JobResult]:
    parquet, csv = write_mixed_texts(data_root, rows, workdir / f"input-{rows}")
    cores = str(os.cpu_count() or 1)
    jobs = {
        "mlflow models predict (csv)": mlflow_predict_command(
            model_uri, csv, workdir / "peer.json"
        ),
        "pyfunc.predict in process": pyfunc_command(model_uri, parquet, workdir / "pyfunc.parquet"),
        f"emotitrack score --workers {cores}": score_command(
            model_uri, parquet, workdir / "score.parquet", "--workers", cores
        ),
        "emotitrack score --workers 1": score_command(
            model_uri, parquet, workdir / "score1.parquet", "--workers", "1"
        ),
        "emotitrack score --engine spark local[2]": score_command(
            model_uri, parquet, workdir / "spark", "--engine", "spark", "--spark-master", "local[2]"
        ),
    }
    results: list[JobResult] = []
    for i, (name, command) in enumerate(jobs.items()):
        results.append(measure(name, command, rows, env, workdir / f"job-{rows}-{i}.log"))
        print(_row(results[-1]), flush=True)
    return results


def _row(r: JobResult) -> str:
    failed = "" if r.returncode == 0 else f"  FAILED (exit {r.returncode})"
    return (
        f"{r.rows:>9,} rows  {r.name:<42} {r.rows_per_s:>9,.0f} rows/s  {r.seconds:>8.1f} s  "
        f"{r.peak_rss_mib:>7,.0f} MiB{failed}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.batch_scoring", description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000])
    parser.add_argument("--model-uri", help="a registered model (default: train a small one)")
    parser.add_argument("--data-root", type=Path, default=shared_data_root())
    parser.add_argument("--out", type=Path, default=Path("batch_scoring.json"))
    args = parser.parse_args(argv)
    configure_logging()
    with tempfile.TemporaryDirectory(prefix="emotitrack-batch-bench-") as tmp:
        workdir = Path(tmp)
        # the jobs run in the workdir: `python -m harness.batch_jobs` must find the repository
        path = os.environ.get("PYTHONPATH")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), path])))
        model_uri = args.model_uri
        if model_uri is None:
            sample = write_sample(
                args.data_root / "imdb", workdir / "data", {"train": 1600, "test": 600}
            )
            registry = make_registry(sample, workdir)
            env["MLFLOW_TRACKING_URI"] = registry.tracking_uri
            model_uri = f"models:/emotitrack-sentiment/{registry.versions[0]}"
        results = [
            r for rows in args.rows for r in run(rows, model_uri, args.data_root, workdir, env)
        ]
    args.out.write_text(
        json.dumps([asdict(r) | {"rows_per_s": r.rows_per_s} for r in results], indent=1)
    )
    print(f"wrote {args.out}")
    return 0 if all(r.returncode == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
