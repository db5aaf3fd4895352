"""Accuracy-estimation benchmark: how close the accuracy the monitoring job estimates from the
calibrated confidences (``monitoring.estimation.estimate_accuracy``, as NannyML's CBPE) comes
to the accuracy measured with the true labels, per window.

The IMDB model is trained in-process on all of ``imdb/train`` (as ``benchmarks.drift_detection``
with ``--split test``); its reference sample is built as a training run logs it, from
``imdb/test``. Windows are seeded draws (without replacement inside a window) from:

* ``imdb``: IMDB test reviews not in the reference (target: |estimated - measured| <= 1.5
  points in >= 95 % of windows);
* ``products`` (Amazon + Yelp + Customer Reviews sentences), ``sst2`` (validation + test
  sentences), ``tweets`` (TweetEval test, negative and positive only): domain shift, where the
  confidences are no longer calibrated; the error is reported as it is.

Two estimates are compared on the same windows: ``calibrated`` (the job's: the confidences
mapped through an isotonic calibration fitted on the reference sample's true labels, as NannyML's
CBPE does) and ``raw`` (the mean confidence as logged). The interval is the normal
approximation of the Poisson-binomial variance (docs/monitoring.md).

Run ``python -m benchmarks.accuracy_estimation --help`` from the repository's root.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.drift_detection import (
    TRAINING_SEED,
    as_logged,
    imdb_splits,
    pct,
    read_split,
    scenario_rng,
    table,
    train_model,
    tweets,
)
from harness.data import shared_data_root
from monitoring.estimation import Calibration, estimate_accuracy, fit_calibration
from training.model import prediction_table
from training.reference import build_reference

TARGET_POINTS = 0.015  # |estimated - measured| on IMDB windows
TARGET_SHARE = 0.95


def pools(data: Path, reference_size: int) -> tuple[float, Calibration, dict[str, pd.DataFrame]]:
    """(the reference sample's accuracy, the calibration fitted on it as the job fits it,
    logged rows with their true labels per pool)."""
    train, test = imdb_splits(data, "test")
    print(f"training the IMDB model on {len(train):,} reviews ...", flush=True)
    pipeline = train_model(train)
    print("predicting the pools ...", flush=True)
    test_predictions = prediction_table(pipeline, test["text"].tolist())
    reference = build_reference(test, test_predictions, reference_size, TRAINING_SEED)
    correct = (reference["label"] == reference["predicted_label"]).to_numpy()
    reference_accuracy = float(correct.mean())
    calibration = fit_calibration(reference["confidence"].to_numpy(dtype=float), correct)
    held_out = test.sample(n=min(reference_size, len(test)), random_state=TRAINING_SEED).index
    raw = {
        "imdb": test.drop(index=held_out).reset_index(drop=True),
        "products": pd.concat(
            [
                read_split(data, "uci_sentiment_sentences/amazon"),
                read_split(data, "uci_sentiment_sentences/yelp"),
                read_split(data, "cr_customer_reviews/all"),
            ],
            ignore_index=True,
        ),
        "sst2": pd.concat(
            [read_split(data, "sst2/validation"), read_split(data, "sst2/test")],
            ignore_index=True,
        ),
        "tweets": tweets(data),
    }
    logged = {
        name: as_logged(frame, prediction_table(pipeline, frame["text"].tolist()))
        for name, frame in raw.items()
    }
    return reference_accuracy, calibration, logged


def window_errors(
    pool: pd.DataFrame,
    size: int,
    windows: int,
    rng: np.random.Generator,
    calibration: Calibration | None,
) -> list[dict[str, float]]:
    """Per window: estimated accuracy and its interval, measured accuracy."""
    right = (pool["true_label"] == pool["predicted_label"]).to_numpy()
    confidence = pool["confidence"].to_numpy(dtype=float)
    out = []
    for _ in range(windows):
        rows = rng.choice(len(pool), size=min(size, len(pool)), replace=False)
        estimate = estimate_accuracy(confidence[rows], calibration)
        out.append(
            {
                "estimated": estimate.accuracy,
                "lower": estimate.lower,
                "upper": estimate.upper,
                "measured": float(right[rows].mean()),
            }
        )
    return out


def summarise(results: list[dict[str, float]]) -> dict[str, float]:
    error = np.array([r["estimated"] - r["measured"] for r in results])
    covered = [r["lower"] <= r["measured"] <= r["upper"] for r in results]
    return {
        "windows": len(results),
        "mean_estimated": float(np.mean([r["estimated"] for r in results])),
        "mean_measured": float(np.mean([r["measured"] for r in results])),
        "bias": float(error.mean()),
        "abs_error_median": float(np.median(np.abs(error))),
        "abs_error_p95": float(np.quantile(np.abs(error), 0.95)),
        "within_target": float(np.mean(np.abs(error) <= TARGET_POINTS)),
        "interval_coverage": float(np.mean(covered)),
        "interval_half_width": float(np.mean([(r["upper"] - r["lower"]) / 2 for r in results])),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.accuracy_estimation",
        description="Estimated (from confidences) vs measured (with labels) accuracy per window.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=shared_data_root(), help="shared data folder")
    parser.add_argument("--windows", type=int, default=500, help="windows per pool and size")
    parser.add_argument(
        "--sizes", default="500,1000,2000,5000", help="window sizes (rows), comma-separated"
    )
    parser.add_argument("--seed", type=int, default=42, help="seed of the window draws")
    parser.add_argument("--reference-size", type=int, default=5000, help="reference sample rows")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "accuracy-estimation.json",
        help="JSON results",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.perf_counter()
    sizes = [int(size) for size in args.sizes.split(",")]
    reference_accuracy, calibration, logged = pools(args.data, args.reference_size)
    results: dict[str, dict[str, Any]] = {}
    for method, calibrated in (("calibrated", calibration), ("raw", None)):
        for name, pool in logged.items():
            for size in sizes:
                if size > len(pool):
                    continue
                # the same windows for both methods: one generator per pool and size
                rng = scenario_rng(args.seed, f"estimation-{name}-{size}")
                results[f"{name}/{size} {method}"] = summarise(
                    window_errors(pool, size, args.windows, rng, calibrated)
                )
    header = [
        "pool/window method", "windows", "estimated", "measured", "bias", "|err| median", "|err| p95",
        f"|err| <= {TARGET_POINTS * 100:g} pt", "interval ±", "coverage",
    ]  # fmt: skip
    rows = [
        [
            key,
            str(r["windows"]),
            f"{r['mean_estimated']:.3f}",
            f"{r['mean_measured']:.3f}",
            f"{100 * r['bias']:+.2f} pt",
            f"{100 * r['abs_error_median']:.2f} pt",
            f"{100 * r['abs_error_p95']:.2f} pt",
            pct(r["within_target"]),
            f"{100 * r['interval_half_width']:.2f} pt",
            pct(r["interval_coverage"]),
        ]
        for key, r in results.items()
    ]
    print(
        f"\nreference accuracy {reference_accuracy:.3f}; pools "
        + ", ".join(f"{k} {len(v):,}" for k, v in logged.items())
        + f"; seed {args.seed}\n"
    )
    print(table(rows, header))
    for key, r in results.items():
        if key.startswith("imdb/") and key.endswith("calibrated"):
            met = r["within_target"] >= TARGET_SHARE
            print(
                f"target {key}: |err| <= {TARGET_POINTS * 100:g} pt in {pct(r['within_target'])} "
                f"of windows ({'met' if met else 'NOT MET'}, need {pct(TARGET_SHARE)})"
            )
    seconds = time.perf_counter() - began
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "reference_accuracy": reference_accuracy,
        "pool_rows": {k: len(v) for k, v in logged.items()},
        "results": results,
        "seconds": seconds,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.out} ({seconds / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
