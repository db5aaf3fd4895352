"""Drift-detection benchmark: how often EmotiTrack's drift report fires, with and without drift.

The script trains the IMDB model in-process, builds the reference sample exactly as a training
run logs it (``training.reference.build_reference``: a seeded 5,000-row sample of the IMDB test
split with predicted label and confidence) and then compares many current windows of 500 texts
against it with the project's own monitoring code (``monitoring.descriptors.with_descriptors``,
``monitoring.drift.run_report`` / ``column_drifts`` / ``drifted_share``). Scenarios:

* ``no_drift``: IMDB test reviews that are not in the reference (target: <= 5 % flagged);
* ``products`` / ``sst2``: a different domain, product-review sentences (Amazon, Yelp, Customer
  Reviews pooled) or SST-2 sentences (target: >= 95 % flagged);
* ``label_prior``: IMDB with 90 % negative reviews; the target (>= 90 %) is on *prediction drift*,
  the ``predicted_label`` column, not on the dataset verdict;
* ``mix_10`` ... ``mix_50``: IMDB with 10-50 % product reviews mixed in, the sensitivity curve.

Every window is a fresh seeded draw (without replacement within the window) from its pools. The
texts of each pool are predicted and described once up front, with the same functions the
monitoring job uses; the result per row does not depend on which window the row lands in.

Threshold variants (``--variants``) are scored from the per-column scores of the same reports:
a variant changes only thresholds and ``drift_share``, never a method, so every column score
stays what Evidently computed and only the comparison changes (the rule of
``monitoring.drift.column_drifts``). ``--verify-windows`` re-runs real
``Report([DataDriftPreset(...)])`` reports per variant on a few windows of every scenario and
counts disagreements. ``--rescore`` scores variants again on the windows of earlier runs (pooling
several, e.g. other seeds) without computing a report.

The speed check runs the monitoring steps (descriptors + report) on 100,000 current rows against
a 25,000-row reference in a child process, for wall time and peak memory (VmHWM), once
with the project's report and once with the text domain classifier on a seeded row sample per
side (a registered variant of Evidently's absolute text-content drift test). Both frames are
drawn with replacement from the whole IMDB test split (training texts would be memorised by the
model and shift the confidence column); the second scenario mixes in 20 % product reviews.

Run ``python -m benchmarks.drift_detection --help`` from the repository's root for the flags.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
from evidently.legacy.core import ColumnType
from evidently.legacy.utils.data_drift_utils import calculate_text_drift_score
from evidently.presets import DataDriftPreset
from sklearn.pipeline import Pipeline

from harness import REPO
from harness.data import shared_data_root
from harness.processes import peak_rss_mb
from monitoring import verdicts
from monitoring.descriptors import with_descriptors
from monitoring.drift import (
    CATEGORICAL_COLUMNS,
    MONITORED_COLUMNS,
    NUMERICAL_COLUMNS,
    TEXT_COLUMNS,
    ColumnDrift,
    column_drifts,
    drifted_share,
    run_report,
)
from monitoring.estimation import measure_accuracy
from monitoring.settings import MonitoringSettings
from monitoring.verdicts import DATA_COLUMNS
from training.model import Hyperparameters, build_pipeline, prediction_table
from training.reference import build_reference

TRAINING_SEED = 42  # TrainingSettings.seed: seeds the classifier and the reference sample
SHORT_NAMES = {
    "text": "text",
    "text_length": "length",
    "word_count": "words",
    "oov_share": "oov",
    "non_letter_share": "nonlet",
    "confidence": "conf",
    "predicted_label": "label",
}


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Scenario:
    """A window is a mixture of pools: ``(pool, share of the window)``."""

    name: str
    description: str
    mixture: tuple[tuple[str, float], ...]
    signal: str = "dataset"  # "dataset" or a monitored column whose drift rate the target is on
    target: tuple[str, float] | None = None  # ("<=" | ">=", rate)


def mix(share: float) -> Scenario:
    percent = round(share * 100)
    return Scenario(
        f"mix_{percent}",
        f"IMDB with {percent}% product reviews",
        (("imdb", 1 - share), ("products", share)),
    )


SCENARIOS = (
    Scenario("no_drift", "IMDB test, not in the reference", (("imdb", 1.0),), target=("<=", 0.05)),
    Scenario(
        "products",
        "Amazon + Yelp + CR product reviews",
        (("products", 1.0),),
        target=(">=", 0.95),
    ),
    Scenario("sst2", "SST-2 sentences (val + test)", (("sst2", 1.0),), target=(">=", 0.95)),
    Scenario("tweets", "TweetEval tweets, negative and positive", (("tweets", 1.0),)),
    Scenario(
        "label_prior",
        "IMDB, 90% negative",
        (("imdb_negative", 0.9), ("imdb_positive", 0.1)),
        signal="predicted_label",
        target=(">=", 0.90),
    ),
    mix(0.1),
    mix(0.2),
    mix(0.3),
    mix(0.5),
)
SENSITIVITY = ("mix_10", "mix_20", "mix_30", "mix_50")
SPEED_SCENARIOS = (
    Scenario("no_drift", "IMDB test", (("imdb_all", 1.0),)),
    Scenario(
        "mix_20", "IMDB test with 20% product reviews", (("imdb_all", 0.8), ("products", 0.2))
    ),
)


def scenario_rng(seed: int, name: str) -> np.random.Generator:
    """One generator per scenario, independent of which other scenarios run."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw(
    pools: dict[str, pd.DataFrame],
    scenario: Scenario,
    size: int,
    rng: np.random.Generator,
    replace: bool = False,
) -> pd.DataFrame:
    """One window of ``size`` rows in the scenario's mixture, shuffled."""
    counts = [round(share * size) for _, share in scenario.mixture]
    counts[-1] = size - sum(counts[:-1])
    parts = [
        pools[pool].iloc[rng.choice(len(pools[pool]), size=n, replace=replace)]
        for (pool, _), n in zip(scenario.mixture, counts, strict=True)
        if n > 0
    ]
    window = pd.concat(parts, ignore_index=True)
    return window.iloc[rng.permutation(len(window))].reset_index(drop=True)


# --------------------------------------------------------------------------- data and model


def read_split(data: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(data / f"{name}.parquet", columns=["text", "label"]).reset_index(
        drop=True
    )


VALIDATION_ROWS = 10_000  # --split validation: IMDB train rows held out from the model


def imdb_splits(data: Path, split: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows the model trains on, held-out IMDB rows the reference and windows come from).
    ``test``: all of IMDB train, and IMDB test. ``validation``: IMDB train minus a seeded
    10,000 rows, and those rows, so thresholds can be chosen without looking at a test split."""
    train = read_split(data, "imdb/train")
    if split == "test":
        return train, read_split(data, "imdb/test")
    held_out = train.sample(n=VALIDATION_ROWS, random_state=TRAINING_SEED).index
    return train.drop(index=held_out).reset_index(drop=True), train.loc[held_out].reset_index(
        drop=True
    )


def train_model(train: pd.DataFrame) -> Pipeline:
    pipeline = build_pipeline(Hyperparameters(), seed=TRAINING_SEED)
    return pipeline.fit(train["text"].tolist(), train["label"].tolist())


def tweets(data: Path) -> pd.DataFrame:
    """TweetEval test tweets labelled negative or positive: the IMDB model has no neutral class,
    so neutral tweets have no right answer to measure accuracy with."""
    frame = read_split(data, "tweeteval_sentiment/test")
    return frame[frame["label"] != "neutral"].reset_index(drop=True)


def as_logged(frame: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """Rows as the job sees the prediction log after its rename: text, predicted_label,
    confidence, and the true label (not monitored)."""
    return pd.DataFrame(
        {
            "text": frame["text"].to_numpy(),
            "true_label": frame["label"].to_numpy(),
            "predicted_label": predictions["label"].to_numpy(),
            "confidence": predictions["confidence"].to_numpy(),
        }
    )


@dataclass
class Corpus:
    """Reference (with descriptors), the pools windows are drawn from (with descriptors) and the
    raw logged rows of the whole IMDB test split and the product reviews (for the speed check)."""

    reference: pd.DataFrame
    pools: dict[str, pd.DataFrame]
    imdb_all: pd.DataFrame
    products: pd.DataFrame


def build_corpus(pipeline: Pipeline, data: Path, reference_size: int, test: pd.DataFrame) -> Corpus:
    test_predictions = prediction_table(pipeline, test["text"].tolist())
    # Exactly what a training run logs as its reference sample, renamed as the job renames it.
    reference = build_reference(test, test_predictions, reference_size, TRAINING_SEED)
    held_out = test.sample(n=min(reference_size, len(test)), random_state=TRAINING_SEED).index
    if not (reference["text"].to_numpy() == test.loc[held_out, "text"].to_numpy()).all():
        raise RuntimeError("could not locate the reference rows in the test split")
    reference = with_descriptors(reference.rename(columns={"label": "true_label"}), pipeline)

    imdb_all = as_logged(test, test_predictions)
    imdb = imdb_all.drop(index=held_out).reset_index(drop=True)
    products_raw = pd.concat(
        [
            read_split(data, "uci_sentiment_sentences/amazon"),
            read_split(data, "uci_sentiment_sentences/yelp"),
            read_split(data, "cr_customer_reviews/all"),
        ],
        ignore_index=True,
    )
    sst2_raw = pd.concat(
        [read_split(data, "sst2/validation"), read_split(data, "sst2/test")], ignore_index=True
    )
    products = as_logged(products_raw, prediction_table(pipeline, products_raw["text"].tolist()))
    sst2 = as_logged(sst2_raw, prediction_table(pipeline, sst2_raw["text"].tolist()))
    tweets_raw = tweets(data)
    tweet_rows = as_logged(tweets_raw, prediction_table(pipeline, tweets_raw["text"].tolist()))
    imdb = with_descriptors(imdb, pipeline)
    pools = {
        "imdb": imdb,
        "imdb_negative": imdb[imdb["true_label"] == "negative"].reset_index(drop=True),
        "imdb_positive": imdb[imdb["true_label"] == "positive"].reset_index(drop=True),
        "products": with_descriptors(products, pipeline),
        "sst2": with_descriptors(sst2, pipeline),
        "tweets": with_descriptors(tweet_rows, pipeline),
    }
    return Corpus(reference, pools, imdb_all, products)


# --------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """A DataDriftPreset configuration that differs from the project's only in thresholds."""

    name: str
    drift_share: float = 0.5
    num_threshold: float | None = None
    cat_threshold: float | None = None
    text_threshold: float | None = None
    per_column_threshold: dict[str, float] = field(default_factory=dict)

    def threshold(self, column: str, default: float) -> float:
        """Evidently's order: per column, then per column type, then the method's default."""
        if column in self.per_column_threshold:
            return self.per_column_threshold[column]
        by_type = (
            self.text_threshold
            if column in TEXT_COLUMNS
            else self.num_threshold
            if column in NUMERICAL_COLUMNS
            else self.cat_threshold
            if column in CATEGORICAL_COLUMNS
            else None
        )
        return default if by_type is None else by_type

    def preset(self, text_method: str | None = None) -> DataDriftPreset:
        return DataDriftPreset(
            columns=MONITORED_COLUMNS,
            drift_share=self.drift_share,
            num_threshold=self.num_threshold,
            cat_threshold=self.cat_threshold,
            text_threshold=self.text_threshold,
            per_column_threshold=self.per_column_threshold or None,
            text_method=text_method,
        )

    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "name" and v not in (None, {})}

    def describe(self) -> str:
        parts = [f"drift_share={self.drift_share}"]
        parts += [
            f"{kind}={value}"
            for kind, value in (
                ("num", self.num_threshold),
                ("cat", self.cat_threshold),
                ("text", self.text_threshold),
            )
            if value is not None
        ]
        parts += [f"{SHORT_NAMES[c]}={v}" for c, v in self.per_column_threshold.items()]
        return ", ".join(parts)


NOISY = ("text_length", "word_count", "non_letter_share")  # the widest no-drift score spread
VARIANTS = (
    Variant("default"),  # the project's: >= 4 of 7 columns, Evidently's default thresholds
    Variant("num0.15", num_threshold=0.15),
    Variant("share0.4", drift_share=0.4),  # >= 3 of 7 columns
    Variant(
        "share0.4+nonlet0.15",
        drift_share=0.4,
        per_column_threshold={"non_letter_share": 0.15},
    ),
    Variant("share0.4+num0.15", drift_share=0.4, num_threshold=0.15),
    Variant(
        "share0.4+noisy0.15",
        drift_share=0.4,
        per_column_threshold=dict.fromkeys(NOISY, 0.15),
    ),
    Variant("share0.25+num0.15", drift_share=0.25, num_threshold=0.15),  # >= 2 of 7 columns
    Variant(
        "share0.25+noisy0.2",
        drift_share=0.25,
        per_column_threshold=dict.fromkeys(NOISY, 0.2),
    ),
)


def variant_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    variant: Variant,
    text_method: str | None = None,
) -> Snapshot:
    """``monitoring.drift.run_report`` with a variant's preset (same DataDefinition, columns)."""
    definition = DataDefinition(
        text_columns=TEXT_COLUMNS,
        numerical_columns=NUMERICAL_COLUMNS,
        categorical_columns=CATEGORICAL_COLUMNS,
    )
    return Report([variant.preset(text_method)]).run(
        reference_data=Dataset.from_pandas(
            reference[MONITORED_COLUMNS], data_definition=definition
        ),
        current_data=Dataset.from_pandas(current[MONITORED_COLUMNS], data_definition=definition),
    )


def is_drifted(method: str, score: float, threshold: float) -> bool:
    """The rule of ``monitoring.drift.column_drifts``."""
    return score < threshold if "p_value" in method else score >= threshold


# --------------------------------------------------------------------------- evaluation


@dataclass
class WindowResult:
    drifted_columns: int
    share: float
    dataset_drift: bool
    columns: dict[str, ColumnDrift]
    seconds: float

    @classmethod
    def of(cls, snapshot: Snapshot, drift_share: float, seconds: float) -> WindowResult:
        count, share = drifted_share(snapshot)
        return cls(count, share, share >= drift_share, column_drifts(snapshot), seconds)

    def under(self, variant: Variant) -> tuple[bool, dict[str, bool]]:
        """Dataset verdict and column verdicts had the report used ``variant``'s thresholds."""
        drifted = {
            column: is_drifted(d.method, d.score, variant.threshold(column, d.threshold))
            for column, d in self.columns.items()
        }
        return sum(drifted.values()) / len(drifted) >= variant.drift_share, drifted


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a rate."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rates(windows: Sequence[WindowResult], variant: Variant) -> dict[str, Any]:
    verdicts = [w.under(variant) for w in windows]
    flagged = sum(dataset for dataset, _ in verdicts)
    return {
        "windows": len(windows),
        "dataset_drift": flagged / len(windows),
        "dataset_drift_ci95": wilson(flagged, len(windows)),
        "columns": {
            column: sum(cols[column] for _, cols in verdicts) / len(windows)
            for column in MONITORED_COLUMNS
        },
    }


def signal_rate(scenario: Scenario, result: dict[str, Any]) -> float:
    if scenario.signal == "dataset":
        return float(result["dataset_drift"])
    return float(result["columns"][scenario.signal])


def meets(scenario: Scenario, result: dict[str, Any]) -> bool | None:
    if scenario.target is None:
        return None
    op, bound = scenario.target
    rate = signal_rate(scenario, result)
    return rate <= bound if op == "<=" else rate >= bound


def run_scenario(
    corpus: Corpus,
    scenario: Scenario,
    args: argparse.Namespace,
    variants: Sequence[Variant],
) -> tuple[list[WindowResult], list[dict[str, Any]]]:
    """All windows of one scenario through ``run_report``; the first ``--verify-windows`` also
    through a real report per variant, compared with the re-thresholded verdicts."""
    rng = scenario_rng(args.seed, scenario.name)
    results, checks = [], []
    for i in range(args.windows):
        window = draw(corpus.pools, scenario, args.window_size, rng)
        started = time.perf_counter()
        snapshot = run_report(corpus.reference, window, args.drift_share)
        result = WindowResult.of(snapshot, args.drift_share, time.perf_counter() - started)
        results.append(result)
        drifted = [SHORT_NAMES[c] for c, d in result.columns.items() if d.drifted]
        print(
            f"  [{scenario.name}] window {i + 1}/{args.windows}: "
            f"{'DRIFT' if result.dataset_drift else 'no drift'}, "
            f"{result.drifted_columns}/{len(result.columns)} columns ({', '.join(drifted) or '-'}) "
            f"{result.seconds:.1f}s",
            flush=True,
        )
        if i < args.verify_windows:
            checks += [verify(corpus.reference, window, result, v) for v in variants]
    return results, checks


def verify(
    reference: pd.DataFrame, window: pd.DataFrame, result: WindowResult, variant: Variant
) -> dict[str, Any]:
    snapshot = variant_report(reference, window, variant)
    real = WindowResult.of(snapshot, variant.drift_share, 0.0)
    dataset, columns = result.under(variant)
    return {
        "variant": variant.name,
        "dataset_agrees": dataset == real.dataset_drift,
        "columns_agree": columns == {c: d.drifted for c, d in real.columns.items()},
        "scores_agree": all(
            math.isclose(real.columns[c].score, d.score, rel_tol=1e-9, abs_tol=1e-12)
            for c, d in result.columns.items()
        ),
    }


def summarise(
    scenarios: Sequence[Scenario],
    windows: dict[str, list[WindowResult]],
    variants: Sequence[Variant],
) -> dict[str, Any]:
    """Per variant: per-scenario rates, whether every target holds, and the sensitivity curve."""
    out = {}
    for variant in variants:
        per = {s.name: rates(windows[s.name], variant) for s in scenarios if s.name in windows}
        checked = [meets(s, per[s.name]) for s in scenarios if s.name in per]
        curve = [per[name]["dataset_drift"] for name in SENSITIVITY if name in per]
        out[variant.name] = {
            "settings": variant.settings(),
            "describe": variant.describe(),
            "scenarios": per,
            "meets_targets": all(c for c in checked if c is not None),
            "sensitivity_mean": float(np.mean(curve)) if curve else None,
        }
    return out


def recommend(summary: dict[str, Any]) -> str | None:
    """Among variants meeting every target: those whose no-drift false-alarm rate is within its
    target even at the top of the 95 % interval (only possible with enough windows), then the
    most sensitive mixture curve, then the fewest false alarms."""
    no_drift = next(s for s in SCENARIOS if s.name == "no_drift")
    ok = [(name, s) for name, s in summary.items() if s["meets_targets"]]
    if not ok:
        return None

    def rank(item: tuple[str, dict[str, Any]]) -> tuple[bool, float, float]:
        quiet = item[1]["scenarios"].get("no_drift")
        bound = no_drift.target[1] if no_drift.target else 1.0
        return (
            quiet is not None and quiet["dataset_drift_ci95"][1] <= bound,
            item[1]["sensitivity_mean"] or 0.0,
            -(quiet["dataset_drift"] if quiet else 0.0),
        )

    return max(ok, key=rank)[0]


# --------------------------------------------------------------------------- verdicts


VERDICT_TARGETS = {  # scenario -> {verdict: (op, rate)}; no_drift: every verdict quiet
    "no_drift": {
        "data": ("<=", 0.02),
        "prediction": ("<=", 0.02),
        "quality": ("<=", 0.02),
        "quality_labelled": ("<=", 0.02),
    },
    "label_prior": {"prediction": (">=", 0.95)},
}


@dataclass(frozen=True)
class DataRule:
    """The data-drift verdict over the data columns (text and descriptors): drift when at least
    ``share`` of them drifted, optionally with other column thresholds, and optionally counting
    ``text_length`` and ``word_count`` (one signal, their scores correlate) as one column."""

    name: str
    share: float
    per_column_threshold: dict[str, float] = field(default_factory=dict)
    merge_length: bool = False

    def detected(self, columns: dict[str, ColumnDrift]) -> bool:
        drifted = {
            name: is_drifted(d.method, d.score, self.per_column_threshold.get(name, d.threshold))
            for name, d in columns.items()
            if name in DATA_COLUMNS
        }
        if self.merge_length:
            drifted["text_length"] = drifted["text_length"] or drifted.pop("word_count")
        return sum(drifted.values()) / len(drifted) >= self.share


@dataclass(frozen=True)
class PredictionRule:
    """The prediction-drift verdict: label shares (chi-square) or mean confidence (Welch) below
    ``p_value``, each with a minimum change (``inf``: that test is off)."""

    name: str
    p_value: float
    min_label_change: float
    min_confidence_change: float

    def detected(self, w: dict[str, float]) -> bool:
        labels = w["label_p"] < self.p_value and w["label_change"] >= self.min_label_change
        confidence = (
            w["confidence_p"] < self.p_value
            and abs(w["confidence_change"]) >= self.min_confidence_change
        )
        return labels or confidence


@dataclass(frozen=True)
class QualityRule:
    """The quality verdict at ``margin`` below the reference accuracy; ``labelled``: every row
    of the window has a feedback label (the measured accuracy counts too)."""

    name: str
    margin: float
    labelled: bool = False

    def detected(self, w: dict[str, float]) -> bool:
        floor = w["reference_accuracy"] - self.margin
        estimated = w["estimated"] < floor
        measured = w["measured"] < floor and w["measured_upper"] < w["reference_accuracy"]
        return estimated or (self.labelled and measured)


INF = float("inf")
DATA_RULES = (
    DataRule("data 2/5", 0.4),
    DataRule("data 3/5", 0.6),
    DataRule("data 3/5, nonlet 0.15", 0.6, {"non_letter_share": 0.15}),
    DataRule("data 4/5", 0.8),
    DataRule("data 2/4, length=words", 0.5, merge_length=True),
    DataRule("data 3/4, length=words", 0.75, merge_length=True),
)
PREDICTION_RULES = (
    PredictionRule("labels p<0.01", 0.01, 0.0, INF),
    PredictionRule("labels p<0.001", 0.001, 0.0, INF),
    PredictionRule("labels+conf p<0.01", 0.01, 0.0, 0.0),
    PredictionRule("labels+conf p<0.001", 0.001, 0.0, 0.0),
    PredictionRule("labels+conf p<0.01, min 0.05/0.03", 0.01, 0.05, 0.03),
    PredictionRule("labels+conf p<0.001, min 0.05/0.03", 0.001, 0.05, 0.03),
    PredictionRule("labels+conf p<0.001, min 0.05/0.02", 0.001, 0.05, 0.02),
)
QUALITY_RULES = (
    QualityRule("margin 0.02", 0.02),
    QualityRule("margin 0.03", 0.03),
    QualityRule("margin 0.05", 0.05),
    QualityRule("margin 0.02, labelled", 0.02, labelled=True),
    QualityRule("margin 0.03, labelled", 0.03, labelled=True),
    QualityRule("margin 0.05, labelled", 0.05, labelled=True),
)


def verdict_window(
    reference: pd.DataFrame, window: pd.DataFrame, settings: MonitoringSettings
) -> dict[str, Any]:
    """One window through the project's prediction and quality verdicts (``monitoring.verdicts``,
    as the job calls them), with the statistics variants are re-scored from."""
    reference_accuracy = float((reference["true_label"] == reference["predicted_label"]).mean())
    estimated = verdicts.window_estimate(reference, window)
    right = int((window["true_label"] == window["predicted_label"]).sum())
    measured = measure_accuracy(right, len(window))
    prediction = verdicts.prediction_drift(
        reference,
        window,
        p_value=settings.prediction_drift_p_value,
        min_label_change=settings.min_label_share_change,
        min_confidence_change=settings.min_confidence_change,
    )
    return {
        "rows": len(window),
        "label_p": prediction["label_shares_p_value"],
        "label_change": prediction["label_share_change"],
        "confidence_p": prediction["confidence_p_value"],
        "confidence_change": prediction["confidence_change"],
        "reference_accuracy": reference_accuracy,
        "estimated": estimated.accuracy,
        "estimated_lower": estimated.lower,
        "estimated_upper": estimated.upper,
        "measured": measured.accuracy,
        "measured_upper": measured.upper,
        "prediction": prediction["detected"],
        "quality": verdicts.quality(reference_accuracy, estimated, None, settings.accuracy_margin)[
            "detected"
        ],
        "quality_labelled": verdicts.quality(
            reference_accuracy, estimated, measured, settings.accuracy_margin
        )["detected"],
    }


def run_verdict_windows(
    corpus: Corpus, scenario: Scenario, args: argparse.Namespace, settings: MonitoringSettings
) -> list[dict[str, Any]]:
    """``--verdict-windows`` windows of one scenario through the prediction and quality
    verdicts (no Evidently report: they read the predictions only), on their own seeded draws."""
    rng = scenario_rng(args.seed, f"verdicts-{scenario.name}")
    return [
        verdict_window(
            corpus.reference, draw(corpus.pools, scenario, args.window_size, rng), settings
        )
        for _ in range(args.verdict_windows)
    ]


def project_rules(settings: MonitoringSettings) -> tuple[DataRule, PredictionRule, QualityRule]:
    return (
        DataRule("project", settings.data_drift_share),
        PredictionRule(
            "project",
            settings.prediction_drift_p_value,
            settings.min_label_share_change,
            settings.min_confidence_change,
        ),
        QualityRule("project", settings.accuracy_margin),
    )


def verdict_rates(
    run: Run, scenarios: Sequence[Scenario], settings: MonitoringSettings
) -> dict[str, dict[str, Any]]:
    """Per scenario: the share of windows each project verdict flags (data: on the report
    windows; prediction and quality: on the verdict windows), and every variant's rate."""
    data_rule, prediction_rule, quality_rule = project_rules(settings)
    out: dict[str, dict[str, Any]] = {}
    for s in scenarios:
        reports = run.windows.get(s.name, [])
        cheap = run.verdict_windows.get(s.name, [])
        for w in reports:  # the rule re-derived from column scores is the job's function
            if (
                data_rule.detected(w.columns)
                != verdicts.data_drift(w.columns, data_rule.share)["detected"]
            ):
                raise RuntimeError(f"data rule disagrees with monitoring.verdicts in {s.name}")
        checkable = run.config.get("verdict_settings") == settings.model_dump(mode="json")
        for stats in cheap if checkable else []:  # flags stored under the same settings
            if (
                prediction_rule.detected(stats) != stats["prediction"]
                or quality_rule.detected(stats) != stats["quality"]
            ):
                raise RuntimeError(f"re-scored verdicts disagree with the job's in {s.name}")
        rates_: dict[str, Any] = {"report_windows": len(reports), "verdict_windows": len(cheap)}
        if reports:
            flagged = sum(data_rule.detected(w.columns) for w in reports)
            rates_["data"] = flagged / len(reports)
            rates_["data_ci95"] = wilson(flagged, len(reports))
            rates_["data_variants"] = {
                r.name: sum(r.detected(w.columns) for w in reports) / len(reports)
                for r in DATA_RULES
            }
        if cheap:
            for key in ("prediction", "quality", "quality_labelled"):
                flagged = sum(bool(w[key]) for w in cheap)
                rates_[key] = flagged / len(cheap)
                rates_[f"{key}_ci95"] = wilson(flagged, len(cheap))
            rates_["prediction_variants"] = {
                r.name: sum(r.detected(w) for w in cheap) / len(cheap) for r in PREDICTION_RULES
            }
            rates_["quality_variants"] = {
                r.name: sum(r.detected(w) for w in cheap) / len(cheap) for r in QUALITY_RULES
            }
            rates_["reference_accuracy"] = cheap[0]["reference_accuracy"]
            rates_["median_estimated"] = float(np.median([w["estimated"] for w in cheap]))
            rates_["median_measured"] = float(np.median([w["measured"] for w in cheap]))
            rates_["median_label_change"] = float(np.median([w["label_change"] for w in cheap]))
            rates_["median_confidence_change"] = float(
                np.median([w["confidence_change"] for w in cheap])
            )
        out[s.name] = rates_
    return out


def verdict_tables(rates_: dict[str, dict[str, Any]]) -> str:
    """The project's verdicts per scenario, then every variant's rate per scenario."""

    def cell(r: dict[str, Any], key: str) -> str:
        if key not in r:
            return "-"
        low, high = r[f"{key}_ci95"]
        return f"{pct(r[key])} [{pct(low)}-{pct(high)}]"

    header = [
        "scenario", "report windows", "data", "verdict windows", "prediction", "quality",
        "quality (labelled)", "ref acc", "est acc", "measured acc", "label Δ", "conf Δ",
    ]  # fmt: skip
    rows = [
        [
            name,
            str(r["report_windows"]),
            cell(r, "data"),
            str(r["verdict_windows"]),
            cell(r, "prediction"),
            cell(r, "quality"),
            cell(r, "quality_labelled"),
            *(
                [
                    f"{r['reference_accuracy']:.3f}",
                    f"{r['median_estimated']:.3f}",
                    f"{r['median_measured']:.3f}",
                    f"{r['median_label_change']:+.3f}",
                    f"{r['median_confidence_change']:+.3f}",
                ]
                if r["verdict_windows"]
                else ["-"] * 5
            ),
        ]
        for name, r in rates_.items()
    ]
    parts = [table(rows, header)]
    for kind, rules in (
        ("data", DATA_RULES),
        ("prediction", PREDICTION_RULES),
        ("quality", QUALITY_RULES),
    ):
        names = [n for n, r in rates_.items() if f"{kind}_variants" in r]
        if not names:
            continue
        variant_rows = [
            [rule.name, *(pct(rates_[n][f"{kind}_variants"][rule.name]) for n in names)]
            for rule in rules
        ]
        parts.append(f"{kind} verdict variants (share of windows flagged)")
        parts.append(table(variant_rows, [f"{kind} rule", *names]))
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- speed check


def sampled_text_method(sample: int, seed: int) -> str:
    """Register Evidently's absolute text-content drift (domain classifier, threshold 0.55) on a
    seeded sample of at most ``sample`` rows per side; returns the method name."""
    name = f"sampled_text_content_drift_{sample}"

    def test(
        reference: pd.Series, current: pd.Series, _type: ColumnType, threshold: float
    ) -> tuple[float, bool]:
        reference = reference.sample(n=min(sample, len(reference)), random_state=seed)
        current = current.sample(n=min(sample, len(current)), random_state=seed)
        score, drifted = calculate_text_drift_score(
            reference, current, bootstrap=False, threshold=threshold
        )
        return float(score), bool(drifted)

    register_stattest(
        StatTest(
            name=name,
            display_name=f"Absolute text content drift (sample {sample})",
            allowed_feature_types=[ColumnType.Text],
            default_threshold=0.55,
        ),
        test,
    )
    return name


@dataclass(frozen=True)
class Strategy:
    """How the speed check computes one report: ``text_sample`` rows per side for the text
    domain classifier only, or ``row_sample`` rows per side for everything (0: all rows)."""

    name: str
    text_sample: int = 0
    row_sample: int = 0

    def describe(self) -> str:
        if self.row_sample:
            return f"row sample {self.row_sample:,}/side"
        if self.text_sample:
            return f"text classifier on {self.text_sample:,} rows/side"
        return "full (run_report)"


def strategies(args: argparse.Namespace) -> list[Strategy]:
    found = [Strategy("full")]
    if args.text_sample:
        found.append(Strategy("text_sample", text_sample=args.text_sample))
    if args.row_sample:
        found.append(Strategy("row_sample", row_sample=args.row_sample))
    return found


def speed_worker(workdir: Path, current_file: str, strategy: Strategy, seed: int) -> None:
    """Child process: what the job does after loading, timed; prints one JSON line."""
    pipeline = joblib.load(workdir / "pipeline.joblib")
    reference = pd.read_parquet(workdir / "reference.parquet")
    current = pd.read_parquet(workdir / current_file)
    rows = {"reference_rows": len(reference), "current_rows": len(current)}
    started, cpu_started = time.perf_counter(), time.process_time()
    if strategy.row_sample:
        reference = reference.sample(n=min(strategy.row_sample, len(reference)), random_state=seed)
        current = current.sample(n=min(strategy.row_sample, len(current)), random_state=seed)
    reference = with_descriptors(reference, pipeline)
    current = with_descriptors(current, pipeline)
    described = time.perf_counter()
    if strategy.text_sample:
        method = sampled_text_method(strategy.text_sample, seed)
        snapshot = variant_report(reference, current, Variant("default"), method)
    else:
        snapshot = run_report(reference, current, Variant("default").drift_share)
    done, cpu = time.perf_counter(), time.process_time() - cpu_started
    result = WindowResult.of(snapshot, Variant("default").drift_share, done - started)
    print(
        json.dumps(
            {
                **asdict(strategy),
                **rows,
                "seconds_descriptors": described - started,
                "seconds_report": done - described,
                "seconds_total": done - started,
                "cpu_seconds": cpu,
                "peak_rss_mb": peak_rss_mb(),
                "dataset_drift": result.dataset_drift,
                "drifted_columns": result.drifted_columns,
                "columns": {c: asdict(d) for c, d in result.columns.items()},
            }
        )
    )


def speed_check(corpus: Corpus, pipeline: Pipeline, args: argparse.Namespace) -> list[dict]:
    """Parent side: write the frames, run one child per scenario and strategy."""
    results = []
    with tempfile.TemporaryDirectory(prefix="drift-speed-") as tmp:
        workdir = Path(tmp)
        joblib.dump(pipeline, workdir / "pipeline.joblib")
        pools = {"imdb_all": corpus.imdb_all, "products": corpus.products}
        rng = scenario_rng(args.seed, "speed-reference")
        reference = corpus.imdb_all.iloc[
            rng.choice(len(corpus.imdb_all), size=args.speed_reference, replace=True)
        ]
        reference.reset_index(drop=True).to_parquet(workdir / "reference.parquet")
        for scenario in SPEED_SCENARIOS:
            rng = scenario_rng(args.seed, f"speed-{scenario.name}")
            current = draw(pools, scenario, args.speed_current, rng, replace=True)
            current.to_parquet(workdir / f"{scenario.name}.parquet")
            for strategy in strategies(args):
                print(
                    f"  [speed] {scenario.name}: {args.speed_current:,} vs "
                    f"{args.speed_reference:,} rows, {strategy.describe()} ...",
                    flush=True,
                )
                result = run_child(workdir, f"{scenario.name}.parquet", strategy, args.seed)
                result.update(scenario=scenario.name, name=strategy.name)
                results.append(result)
                print(f"  [speed] {speed_line(result)}", flush=True)
    return results


def run_child(workdir: Path, current_file: str, strategy: Strategy, seed: int) -> dict:
    command = [
        sys.executable,
        "-m",
        "benchmarks.drift_detection",
        "--speed-worker",
        str(workdir),
        "--speed-current-file",
        current_file,
        "--seed",
        str(seed),
        "--text-sample",
        str(strategy.text_sample),
        "--row-sample",
        str(strategy.row_sample),
    ]
    done = subprocess.run(  # noqa: S603 - our own interpreter and module
        command, check=True, capture_output=True, text=True, cwd=REPO
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def speed_line(r: dict[str, Any]) -> str:
    strategy = Strategy(r["name"], r["text_sample"], r["row_sample"])
    return (
        f"{r['scenario']}: {r['current_rows']:,} vs {r['reference_rows']:,} rows, "
        f"{strategy.describe()}: {r['seconds_total']:.1f}s (descriptors "
        f"{r['seconds_descriptors']:.1f}s, report {r['seconds_report']:.1f}s; CPU "
        f"{r['cpu_seconds']:.1f}s), peak RSS {r['peak_rss_mb']:,.0f} MB; "
        f"{'DRIFT' if r['dataset_drift'] else 'no drift'} ({r['drifted_columns']}/7: "
        f"{', '.join(SHORT_NAMES[c] for c, d in r['columns'].items() if d['drifted']) or '-'}), "
        f"text AUC {r['columns']['text']['score']:.3f}"
    )


def speed_agreement(speed: Sequence[dict[str, Any]]) -> list[str]:
    """Per scenario and sampled strategy: do the verdicts match the full computation?"""
    lines = []
    full = {r["scenario"]: r for r in speed if r["name"] == "full"}
    for r in speed:
        base = full.get(r["scenario"])
        if r["name"] == "full" or base is None:
            continue
        columns = [
            c for c in r["columns"] if r["columns"][c]["drifted"] != base["columns"][c]["drifted"]
        ]
        same = r["dataset_drift"] == base["dataset_drift"] and not columns
        lines.append(
            f"{r['scenario']}, {r['name']} vs full: "
            + (
                "same dataset and column verdicts"
                if same
                else f"DIFFERENT ({', '.join(columns) or 'dataset'})"
            )
            + f"; {base['seconds_total']:.1f}s -> {r['seconds_total']:.1f}s"
        )
    return lines


# --------------------------------------------------------------------------- output


def pct(rate: float) -> str:
    percent = 100 * rate
    return f"{percent:.0f}%" if abs(percent - round(percent)) < 0.05 else f"{percent:.1f}%"


def target_text(scenario: Scenario) -> str:
    if scenario.target is None:
        return "-"
    op, bound = scenario.target
    what = "dataset" if scenario.signal == "dataset" else SHORT_NAMES[scenario.signal]
    return f"{what} {'≤' if op == '<=' else '≥'} {pct(bound)}"


def table(rows: Iterable[Sequence[str]], header: Sequence[str]) -> str:
    rows = [list(header), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_table(scenarios: Sequence[Scenario], per: dict[str, Any]) -> str:
    header = [
        "scenario",
        "windows",
        "target",
        "met",
        "dataset drift [95% CI]",
        *(SHORT_NAMES[c] for c in MONITORED_COLUMNS),
    ]
    rows = []
    for s in scenarios:
        if s.name not in per:
            continue
        r = per[s.name]
        low, high = r["dataset_drift_ci95"]
        met = meets(s, r)
        rows.append(
            [
                s.name,
                str(r["windows"]),
                target_text(s),
                "-" if met is None else "yes" if met else "NO",
                f"{pct(r['dataset_drift'])} [{pct(low)}-{pct(high)}]",
                *(pct(r["columns"][c]) for c in MONITORED_COLUMNS),
            ]
        )
    return table(rows, header)


def variants_table(scenarios: Sequence[Scenario], summary: dict[str, Any]) -> str:
    names = [s.name for s in scenarios]
    header = ["variant", "settings", *names, "no_drift CI95 high", "all targets", "curve mean"]
    rows = []
    for name, s in summary.items():
        cells = []
        for scenario in scenarios:
            r = s["scenarios"].get(scenario.name)
            cells.append("-" if r is None else pct(signal_rate(scenario, r)))
        curve = s["sensitivity_mean"]
        no_drift = s["scenarios"].get("no_drift")
        rows.append(
            [
                name,
                s["describe"],
                *cells,
                "-" if no_drift is None else pct(no_drift["dataset_drift_ci95"][1]),
                "yes" if s["meets_targets"] else "no",
                "-" if curve is None else pct(curve),
            ]
        )
    return table(rows, header)


def score_quantiles(scenarios: Sequence[Scenario], windows: dict[str, list[WindowResult]]) -> str:
    """Median and 95th percentile of every column score: where the thresholds sit."""
    header = ["scenario", *(SHORT_NAMES[c] for c in MONITORED_COLUMNS)]
    rows = []
    for s in scenarios:
        if s.name not in windows:
            continue
        cells = []
        for c in MONITORED_COLUMNS:
            scores = [w.columns[c].score for w in windows[s.name]]
            cells.append(f"{np.median(scores):.3f}/{np.quantile(scores, 0.95):.3f}")
        rows.append([s.name, *cells])
    return table(rows, header)


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.drift_detection",
        description="Benchmark EmotiTrack's drift detection (Evidently report of monitoring/) "
        "on windows with and without drift; optionally threshold variants and a speed check.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=shared_data_root(), help="shared data folder")
    parser.add_argument("--windows", type=int, default=40, help="windows per scenario")
    parser.add_argument("--window-size", type=int, default=500, help="texts per window")
    parser.add_argument("--seed", type=int, default=42, help="seed of the window draws")
    parser.add_argument(
        "--drift-share",
        type=float,
        default=0.5,
        help="dataset drift when at least this share of the 7 columns drifted (the project's "
        "drift_share)",
    )
    parser.add_argument(
        "--reference-size",
        type=int,
        default=5000,
        help="reference sample of the IMDB test split (a training run logs 5,000)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma-separated scenarios to run",
    )
    parser.add_argument(
        "--variants",
        default="all",
        help="threshold variants to score: 'all', 'none' or a comma-separated list of "
        + ", ".join(v.name for v in VARIANTS),
    )
    parser.add_argument(
        "--verify-windows",
        type=int,
        default=1,
        help="windows per scenario re-run as real reports for every variant (0: none)",
    )
    parser.add_argument(
        "--split",
        choices=("validation", "test"),
        default="test",
        help="where the reference and the IMDB windows come from: 'validation' holds 10,000 "
        "IMDB train rows out of the model (choose thresholds here), 'test' is the IMDB test split "
        "(report here)",
    )
    parser.add_argument(
        "--verdict-windows",
        type=int,
        default=500,
        help="windows per scenario through the prediction and quality verdicts (no report)",
    )
    parser.add_argument(
        "--skip-reports",
        action="store_true",
        help="no Evidently reports (no data verdict): prediction and quality verdicts only",
    )
    parser.add_argument("--skip-speed", action="store_true", help="skip the speed check")
    parser.add_argument("--speed-current", type=int, default=100_000, help="speed: current rows")
    parser.add_argument("--speed-reference", type=int, default=25_000, help="speed: reference rows")
    parser.add_argument(
        "--text-sample",
        type=int,
        default=5000,
        help="speed: also run with the text domain classifier on this many seeded rows per "
        "side (0: skip)",
    )
    parser.add_argument(
        "--row-sample",
        type=int,
        default=10_000,
        help="speed: also run the whole report (descriptors included) on this many seeded rows "
        "per side (0: skip)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(tempfile.gettempdir()) / "drift-benchmark.json",
        help="JSON results",
    )
    parser.add_argument(
        "--rescore",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="no new reports: score --variants on the windows stored in earlier runs' JSON "
        "(several runs, e.g. other seeds, are pooled per scenario; runs the speed check too "
        "unless --skip-speed)",
    )
    parser.add_argument("--speed-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--speed-current-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.windows < 1 or args.window_size < 10:
        parser.error("need at least 1 window of at least 10 texts")
    return args


def chosen(names: str, table_: Sequence[Any], what: str) -> list[Any]:
    if names == "none":
        return []
    if names == "all":
        return list(table_)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = {item.name: item for item in table_}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return [known[n] for n in wanted]


@dataclass
class Run:
    """What a benchmark run measured; ``--rescore`` reloads it from the JSON."""

    config: dict[str, Any]
    windows: dict[str, list[WindowResult]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    speed: list[dict[str, Any]] = field(default_factory=list)
    verdict_windows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def load_run(path: Path) -> Run:
    stored = json.loads(path.read_text())
    windows = {
        name: [
            WindowResult(
                w["drifted_columns"],
                w["share"],
                w["dataset_drift"],
                {c: ColumnDrift(**d) for c, d in w["columns"].items()},
                w["seconds"],
            )
            for w in results
        ]
        for name, results in stored["windows"].items()
    }
    return Run(
        stored["config"],
        windows,
        stored["verification"],
        stored["speed"],
        stored.get("verdict_windows", {}),
    )


def pooled(paths: Sequence[Path]) -> Run:
    """Earlier runs (e.g. other seeds) as one: the windows of each scenario are concatenated."""
    runs = [load_run(path) for path in paths]
    keys = ("drift_share", "reference_size", "window_size", "data", "split")
    for run in runs[1:]:
        if any(run.config.get(k, "test") != runs[0].config.get(k, "test") for k in keys):
            raise SystemExit(f"--rescore: runs differ in one of {', '.join(keys)}")
    seeds: list[int] = []
    sources: list[str] = []
    for path, run in zip(paths, runs, strict=True):
        seed = run.config["seed"]
        seeds += [s for s in (seed if isinstance(seed, list) else [seed]) if s not in seeds]
        sources += run.config.get("pooled_from", [str(path)])
    merged = Run({**runs[0].config, "seed": seeds[0] if len(seeds) == 1 else seeds})
    merged.config["pooled_from"] = sources
    for run in runs:
        for name, results in run.windows.items():
            merged.windows.setdefault(name, []).extend(results)
        merged.checks += run.checks
        merged.speed += run.speed
        for name, cheap in run.verdict_windows.items():
            merged.verdict_windows.setdefault(name, []).extend(cheap)
    return merged


def prepare(args: argparse.Namespace) -> tuple[Pipeline, Corpus]:
    train, held_out = imdb_splits(args.data, args.split)
    print(
        f"training the IMDB model (TF-IDF + LogisticRegression) on {len(train):,} rows; "
        f"reference and IMDB windows from {len(held_out):,} held-out rows ({args.split}) ...",
        flush=True,
    )
    pipeline = train_model(train)
    print("predicting and describing the reference and the pools ...", flush=True)
    corpus = build_corpus(pipeline, args.data, args.reference_size, held_out)
    print(
        f"reference {len(corpus.reference):,} rows; pools "
        + ", ".join(f"{k} {len(v):,}" for k, v in corpus.pools.items()),
        flush=True,
    )
    return pipeline, corpus


def finish(
    run: Run, scenarios: Sequence[Scenario], variants: Sequence[Variant], out: Path, began: float
) -> None:
    """Check, summarise, write the JSON and print the tables."""
    judged = verdict_rates(
        run,
        [s for s in scenarios if s.name in run.windows or s.name in run.verdict_windows],
        MonitoringSettings(),
    )
    scenarios = [s for s in scenarios if s.name in run.windows]
    project = Variant("project", drift_share=run.config["drift_share"])
    # The re-thresholded project configuration must reproduce the project's own verdicts.
    for name, results in run.windows.items():
        if any(w.under(project)[0] != w.dataset_drift for w in results):
            raise RuntimeError(f"re-thresholding disagrees with run_report in {name}")
    baseline = summarise(scenarios, run.windows, [project])["project"]["scenarios"]
    summary = summarise(scenarios, run.windows, variants)
    report = {
        "config": run.config,
        "results": baseline,
        "variants": summary,
        "recommended_variant": recommend(summary) if variants else None,
        "verification": run.checks,
        "speed": run.speed,
        "verdicts": judged,
        "windows": {name: [asdict(w) for w in ws] for name, ws in run.windows.items()},
        "verdict_windows": run.verdict_windows,
        "seconds": time.perf_counter() - began,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))

    if scenarios:
        print(
            f"\nResults (project configuration, drift_share={project.drift_share}, reference "
            f"{run.config['reference_rows']:,} rows, windows of {run.config['window_size']} texts, "
            f"seed {run.config['seed']}; per-column cells: share of windows in which that column "
            "drifted)\n"
        )
        print(results_table(scenarios, baseline))
        print("\nColumn scores per window, median/95th percentile\n")
        print(score_quantiles(scenarios, run.windows))
    if scenarios and variants:
        print("\nVariants (rate of each scenario's target signal; curve mean = mean of mix_*)\n")
        print(variants_table(scenarios, summary))
        print(f"\nrecommended: {report['recommended_variant'] or 'no variant meets every target'}")
    if run.checks:
        agree = sum(c["dataset_agrees"] and c["columns_agree"] for c in run.checks)
        scores = sum(c["scores_agree"] for c in run.checks)
        print(
            f"verification: {agree}/{len(run.checks)} real variant reports give the re-thresholded "
            f"dataset and column verdicts ({scores} with identical column scores)"
        )
    if judged:
        settings = MonitoringSettings()
        print(
            f"\nVerdicts (project defaults: data {settings.data_drift_share} of the data columns; "
            f"prediction p < {settings.prediction_drift_p_value}, label share change >= "
            f"{settings.min_label_share_change}, confidence change >= "
            f"{settings.min_confidence_change}; quality margin {settings.accuracy_margin}; "
            f"split {run.config.get('split', 'test')}, windows of {run.config['window_size']}, "
            f"seed {run.config['seed']})\n"
        )
        print(verdict_tables(judged))
        for name, targets in VERDICT_TARGETS.items():
            for verdict, (op, bound) in targets.items():
                if verdict in judged.get(name, {}):
                    rate = judged[name][verdict]
                    ok = rate <= bound if op == "<=" else rate >= bound
                    print(
                        f"target {name} {verdict} {op} {pct(bound)}: {pct(rate)} "
                        f"{'met' if ok else 'NOT MET'}"
                    )
    for r in run.speed:
        print(f"speed: {speed_line(r)}")
    for line in speed_agreement(run.speed):
        print(f"speed agreement: {line}")
    print(f"\nJSON: {out} ({report['seconds'] / 60:.1f} min)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.speed_worker:
        strategy = Strategy("worker", args.text_sample, args.row_sample)
        speed_worker(args.speed_worker, args.speed_current_file, strategy, args.seed)
        return 0
    began = time.perf_counter()
    scenarios = chosen(args.scenarios, SCENARIOS, "scenarios")
    variants = chosen(args.variants, VARIANTS, "variants")
    if args.rescore:
        run = pooled(args.rescore)
    else:
        config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        run = Run(
            {
                **config,
                "reference_rows": args.reference_size,
                "verdict_settings": MonitoringSettings().model_dump(mode="json"),
            }
        )
    if not args.rescore or not args.skip_speed:
        pipeline, corpus = prepare(args)
        settings = MonitoringSettings()
        for scenario in [] if args.rescore else scenarios:
            print(f"scenario {scenario.name}: {scenario.description}", flush=True)
            if args.verdict_windows:
                run.verdict_windows[scenario.name] = run_verdict_windows(
                    corpus, scenario, args, settings
                )
            if args.skip_reports:
                continue
            run.windows[scenario.name], checks = run_scenario(corpus, scenario, args, variants)
            run.checks += checks
        if not args.skip_speed:
            run.speed = speed_check(corpus, pipeline, args)
    finish(run, scenarios, variants, args.out, began)
    return 0


if __name__ == "__main__":
    sys.exit(main())
