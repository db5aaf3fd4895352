"""Batch scoring jobs measured side by side: a table of real texts mixed from the shared data,
and one command per way of scoring it, each timed with the peak resident memory of its whole
process tree."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from harness.processes import rss_mib

# (data set, split) -> share of the mixed table: long reviews, sentences, tweets, product reviews
MIX: Mapping[tuple[str, str], float] = {
    ("imdb", "test"): 0.25,
    ("sst2", "train"): 0.25,
    ("semeval2017_task4a", "train"): 0.25,
    ("cr_customer_reviews", "all"): 0.125,
    ("uci_sentiment_sentences", "amazon"): 0.0625,
    ("uci_sentiment_sentences", "yelp"): 0.0625,
}
ROW_GROUP = 50_000


def write_mixed_texts(
    data_root: Path, rows: int, out_dir: Path, seed: int = 11
) -> tuple[Path, Path]:
    """``rows`` texts drawn (with replacement where a set is smaller) from ``MIX``, shuffled,
    written as ``texts.parquet`` and ``texts.csv`` with ``id``, ``source`` and ``text``."""
    rng = np.random.default_rng(seed)
    parts = []
    for (name, split), share in MIX.items():
        column = pd.read_parquet(data_root / name / f"{split}.parquet", columns=["text"])["text"]
        texts = column[column.str.strip().astype(bool)].to_numpy()
        count = round(rows * share)
        parts.append(pd.DataFrame({"source": name, "text": rng.choice(texts, size=count)}))
    table = pd.concat(parts).sample(frac=1, random_state=seed).head(rows).reset_index(drop=True)
    table.insert(0, "id", np.arange(len(table)))
    out_dir.mkdir(parents=True, exist_ok=True)
    parquet, csv = out_dir / "texts.parquet", out_dir / "texts.csv"
    pq.write_table(
        pa.Table.from_pandas(table, preserve_index=False), parquet, row_group_size=ROW_GROUP
    )
    table.to_csv(csv, index=False)
    return parquet, csv


@dataclass(frozen=True)
class JobResult:
    name: str
    rows: int
    seconds: float
    peak_rss_mib: float
    returncode: int

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def measure(
    name: str, command: Sequence[str], rows: int, env: Mapping[str, str], log: Path
) -> JobResult:
    """Run ``command`` to its end (output to ``log``); wall time and the peak RSS of its process
    tree (polled)."""
    started = time.perf_counter()
    out = log.open("w")
    process = subprocess.Popen(command, cwd=log.parent, env=dict(env), stdout=out, stderr=out)  # noqa: S603
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, rss_mib(process.pid))
        time.sleep(0.1)
    seconds = time.perf_counter() - started
    out.close()
    return JobResult(name, rows, seconds, peak, process.returncode)


def mlflow_predict_command(model_uri: str, csv: Path, out: Path) -> list[str]:
    """The peer: MLflow's own batch command."""
    return [
        sys.executable, "-m", "mlflow", "models", "predict", "-m", model_uri, "-i", str(csv),
        "-t", "csv", "-o", str(out), "--env-manager", "local",
    ]  # fmt: skip


def score_command(model_uri: str, source: Path, out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "emotitrack", "score", str(source), str(out),
            "--model-uri", model_uri, *options]  # fmt: skip


def pyfunc_command(model_uri: str, source: Path, out: Path) -> list[str]:
    """Plain in-process MLflow: load the model, read the whole table, predict, write."""
    return [sys.executable, "-m", "harness.batch_jobs", model_uri, str(source), str(out)]


def _pyfunc_job(model_uri: str, source: str, out: str) -> None:
    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(model_uri)
    frame = pd.read_parquet(source)
    predictions = model.predict(frame[["text"]])
    pd.concat([frame, predictions], axis=1).to_parquet(out, index=False)


if __name__ == "__main__":
    _pyfunc_job(*sys.argv[1:4])
