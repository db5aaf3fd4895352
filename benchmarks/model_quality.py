"""Model quality on public benchmarks: each preset trained by the product's own training code on
its data set, its test split evaluated once, beside the previous default pipeline (scikit-learn's
uni+bigram TF-IDF + LogisticRegression) on the same splits.

    python -m benchmarks.model_quality [--data-root ../shared/data] [--only imdb]

Prints one table (data set, metric, published anchor, result, train time, model size, single-text
latency and its ratio to the baseline's, ECE, and which of the issue's targets it misses) and
writes it as JSON. Latency twice, ours and the baseline's timed alternately on the same 500 test
texts, each once (medians), after both answered 1,000 other test texts: through the scorer the
API serves with, and through scikit-learn's ``predict_proba``. Everything runs against a
throw-away SQLite MLflow store in a temporary folder.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from benchmarks.scorers import Scorers, fitted_scorers
from emotitrack.core.progress import configure_logging
from harness.data import shared_data_root
from training.data import LABEL, TEXT, Splits
from training.evaluate import score
from training.model import prediction_table
from training.presets import PRESETS
from training.settings import TrainingSettings
from training.train import load_splits, train


def default_pipeline(class_weight: str) -> Pipeline:
    """The pipeline this product shipped before the presets: scikit-learn's own uni+bigram
    TF-IDF (100k) + LogisticRegression(C=10), no normalisation, no calibration. Its steps are
    named as ours, so the API's scorer serves it too and latencies compare like for like."""
    return Pipeline(
        [
            ("features", TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_df=0.95,
                                      max_features=100_000, sublinear_tf=True,
                                      dtype=np.float32)),
            ("nb", "passthrough"),
            ("clf", LogisticRegression(C=10.0, max_iter=1000,
                                       class_weight=None if class_weight == "none" else class_weight)),
        ]
    )  # fmt: skip


def fit_default_pipeline(splits: Splits, class_weight: str) -> tuple[Pipeline, dict[str, float]]:
    """The old default fitted on the same training split, and its test metrics."""
    pipeline = default_pipeline(class_weight).fit(splits.train[TEXT], splits.train[LABEL])
    classes = [str(c) for c in pipeline.classes_]
    predictions = prediction_table(pipeline, splits.test[TEXT].tolist())
    metrics = {f"test_{k}": v for k, v in score(splits.test[LABEL], predictions, classes).items()}
    return pipeline, metrics


def paired_latencies_ms(
    ours: Scorers, baseline: Scorers, texts: list[str], warm_up: list[str], served: bool
) -> tuple[float, float]:
    """Median single-text latency of both models over ``texts``, each text timed once per
    model, alternately, each going first on every other text, so that both see the same machine
    while other jobs come and go (README.md). Both first answer ``warm_up`` one by one, as a
    running server would have: the served scorer remembers the character n-grams of words it
    has seen, so repeating the timed texts would flatter it."""
    predict = {
        name: scorers.served if served else scorers.predict_proba
        for name, scorers in (("ours", ours), ("baseline", baseline))
    }
    for one in predict.values():
        for text in warm_up:
            one([text])
    timings: dict[str, list[float]] = {"ours": [], "baseline": []}
    for i, text in enumerate(texts):
        # who goes first alternates too: the first of two calls on a text is the slower one
        for name in ("ours", "baseline") if i % 2 == 0 else ("baseline", "ours"):
            started = time.perf_counter()
            predict[name]([text])
            timings[name].append(time.perf_counter() - started)
    return float(np.median(timings["ours"]) * 1000), float(np.median(timings["baseline"]) * 1000)


TIMED_TEXTS = 500  # distinct test texts, each timed once per pipeline
WARM_UP_TEXTS = 1_000  # other test texts answered first, as a running server would have


@dataclass(frozen=True)
class Benchmark:
    preset: str
    folder: str
    metric: str  # a key of the run's metrics, without the test_ prefix
    metric_name: str
    anchor: str
    target: float
    # The issue sets these for IMDB only.
    ece_target: float | None = None
    train_limit_s: float | None = None


BENCHMARKS = [
    Benchmark("imdb", "imdb", "accuracy", "accuracy", "NBSVM-bigram 91.22 (Wang & Manning 2012)",
              0.913, ece_target=0.02, train_limit_s=180.0),
    Benchmark("sst2", "sst2", "accuracy", "accuracy", "BiNB 83.1 (Socher et al. 2013)", 0.835),
    Benchmark("semeval", "semeval2017_task4a", "recall_macro", "average recall",
              "best system 0.681 (deep model)", 0.65),
]  # fmt: skip
# The cost limits for every data set: the model artifact, the single-text latency ratio.
MAX_MODEL_MB, MAX_LATENCY_RATIO = 150.0, 2.0


def missed_targets(benchmark: Benchmark, row: dict[str, Any]) -> list[str]:
    """The targets a result row misses, by name (none: it meets every one)."""
    checks = {
        benchmark.metric_name: row["result"] >= benchmark.target,
        "served latency ratio": row["served ratio"] <= MAX_LATENCY_RATIO,
        "model size": row["model MB"] <= MAX_MODEL_MB,
    }
    if benchmark.train_limit_s is not None:
        checks["train time"] = row["train s"] <= benchmark.train_limit_s
    if benchmark.ece_target is not None:
        checks["ECE"] = row["test ECE"] <= benchmark.ece_target
    return [name for name, met in checks.items() if not met]


def run(benchmark: Benchmark, data_root: Path, work: Path) -> dict[str, Any]:
    settings = TrainingSettings(
        data=data_root / benchmark.folder,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        experiment=f"quality-{benchmark.preset}",
        model_name=f"quality-{benchmark.preset}",
    )
    result = train(settings, PRESETS[benchmark.preset], benchmark.preset)
    ours = result.metrics
    splits = load_splits(settings)  # the very splits the run used
    baseline_pipeline, baseline = fit_default_pipeline(
        splits, PRESETS[benchmark.preset].class_weight
    )
    ours_scorers, baseline_scorers = (
        fitted_scorers(result.pipeline),  # the pipeline the registered format came from
        fitted_scorers(baseline_pipeline),
    )
    held_out = splits.test[TEXT].tolist()
    timed, warm_up = held_out[:TIMED_TEXTS], held_out[TIMED_TEXTS : TIMED_TEXTS + WARM_UP_TEXTS]
    served, served_baseline = paired_latencies_ms(
        ours_scorers, baseline_scorers, timed, warm_up, True
    )
    proba, proba_baseline = paired_latencies_ms(
        ours_scorers, baseline_scorers, timed, warm_up[:200], False
    )
    row: dict[str, Any] = {
        "data set": benchmark.folder,
        "metric": benchmark.metric_name,
        "anchor": benchmark.anchor,
        "target": benchmark.target,
        "result": round(ours[f"test_{benchmark.metric}"], 4),
        "baseline": round(baseline[f"test_{benchmark.metric}"], 4),
        "test ECE": round(ours["test_ece"], 4),
        "train s": round(ours["train_time_s"], 1),
        "model MB": round(ours["model_size_bytes"] / 1e6, 1),
        "served ms": round(served, 3),
        "baseline served ms": round(served_baseline, 3),
        "served ratio": round(served / served_baseline, 2),
        "predict_proba ms": round(proba, 3),
        "baseline predict_proba ms": round(proba_baseline, 3),
        "predict_proba ratio": round(proba / proba_baseline, 2),
    }
    row["missed"] = ", ".join(missed_targets(benchmark, row)) or "none"
    return row


def print_table(rows: list[dict[str, object]]) -> None:
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.model_quality",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        default=shared_data_root(),
        help="shared data folder with imdb/, sst2/, semeval2017_task4a/ "
        "(default: EMOTITRACK_SHARED_DATA or ../shared/data)",
    )
    parser.add_argument(
        "--only", choices=[b.preset for b in BENCHMARKS], action="append", help="run only these"
    )
    parser.add_argument("--out", type=Path, default=Path("model_quality.json"), help="JSON result")
    args = parser.parse_args()
    configure_logging(False)
    out = args.out.resolve()
    rows = []
    # MLflow writes local artifacts under the working folder
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        for benchmark in BENCHMARKS:
            if args.only and benchmark.preset not in args.only:
                continue
            print(f"== {benchmark.preset}: preset and baseline", flush=True)
            rows.append(run(benchmark, args.data_root.resolve(), Path(tmp)))
    print_table(rows)
    out.write_text(json.dumps(rows, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
