"""Hyper-parameter search: cross-validation on the training split only, one MLflow child run per
candidate under one parent run, the best refitted, evaluated once on test and registered.

Candidates that share their text features (n-grams, negation marking) share the vectorizers
fitted on each fold, so a grid over C, NB scaling and class weights costs little more than one
candidate per feature set.
"""

from __future__ import annotations

import itertools
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline

from emotitrack.core.progress import log
from training.data import LABEL, TEXT, DataError, Splits
from training.model import Hyperparameters, build_pipeline
from training.settings import TrainingSettings
from training.train import (
    TrainingResult,
    load_splits,
    log_new_params,
    spelled_params,
    train_in_run,
)

FEATURE_FIELDS = ("ngram_max", "char_ngram_max", "max_features", "min_df", "max_df", "negation")
METRICS = {
    "accuracy": lambda y, p: accuracy_score(y, p),
    "f1_macro": lambda y, p: f1_score(y, p, average="macro"),
    "recall_macro": lambda y, p: recall_score(y, p, average="macro"),
}
# C is searched at these multiples of the base C: the IMDB preset's 100 gives 10..300, the
# range its preset was chosen from; SST-2's 4 gives 0.4..12.
C_FACTORS = (0.1, 0.3, 1.0, 3.0)


@dataclass(frozen=True)
class SearchOptions:
    folds: int = 3
    max_candidates: int = 16
    time_budget_min: float = 18.0
    metric: str = "auto"  # accuracy for two classes, recall_macro (SemEval's measure) for more

    def __post_init__(self) -> None:
        # Checked before any run starts: StratifiedKFold would fail only inside the MLflow run.
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be at least 1, got {self.max_candidates}")
        if not self.time_budget_min > 0:
            raise ValueError(f"time_budget_min must be above 0, got {self.time_budget_min}")
        if self.metric not in ("auto", *METRICS):
            raise ValueError(
                f"unknown metric {self.metric!r}; choose one of auto, {', '.join(METRICS)}"
            )


@dataclass(frozen=True)
class CandidateScore:
    index: int
    hp: Hyperparameters
    fold_scores: list[float]
    fit_seconds: float

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores))


@dataclass(frozen=True)
class SearchResult:
    parent_run_id: str
    best: CandidateScore
    evaluated: int
    metric: str
    training: TrainingResult


def candidate_grid(
    binary: bool, base: Hyperparameters, pinned: frozenset[str] = frozenset()
) -> list[Hyperparameters]:
    """The default search space around ``base``: word n-gram length and negation marking, NB
    scaling (binary only) or class weights, and C around ``base.C``. The ``pinned``
    hyper-parameters (those the user gave) keep ``base``'s value instead of being searched."""
    c_axis = tuple(float(f"{base.C * factor:.3g}") for factor in C_FACTORS)
    axes: dict[str, tuple[object, ...]]
    if binary:
        axes = {
            "ngram_max": (2, 3),
            "negation": (False, True),
            "nb_scaling": (True, False),
            "C": c_axis,
        }
    else:
        axes = {
            "ngram_max": (2, 3),
            "char_ngram_max": (0, 5),
            "nb_scaling": (False,),  # NB scaling needs two classes
            "class_weight": ("balanced", "none"),
            "C": c_axis,
        }
    searched = {name: values for name, values in axes.items() if name not in pinned}
    return [
        base.updated(**dict(zip(searched, values, strict=True)))
        for values in itertools.product(*searched.values())
    ]


def choose_candidates(grid: list[Hyperparameters], limit: int, seed: int) -> list[Hyperparameters]:
    """A seeded sample of at most ``limit`` candidates, ordered so that shared features are
    fitted once per fold."""
    chosen = random.Random(seed).sample(grid, min(limit, len(grid)))  # noqa: S311 # nosec B311
    return sorted(chosen, key=lambda hp: (_feature_key(hp), hp.nb_scaling, hp.class_weight, hp.C))


def _feature_key(hp: Hyperparameters) -> tuple[object, ...]:
    return tuple(getattr(hp, name) for name in FEATURE_FIELDS)


def search(
    settings: TrainingSettings,
    options: SearchOptions,
    base: Hyperparameters,
    grid: list[Hyperparameters] | None = None,
    pinned: frozenset[str] = frozenset(),
) -> SearchResult:
    """Run the search on ``settings.data`` and register the refitted best as a new version.
    Without a ``grid``, the default one around ``base``, ``pinned`` hyper-parameters fixed."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    if "MLFLOW_RUN_ID" not in os.environ:
        mlflow.set_experiment(settings.experiment)
    splits = load_splits(settings)
    binary = len(splits.labels) == 2
    metric = (
        options.metric if options.metric != "auto" else ("accuracy" if binary else "recall_macro")
    )
    space = grid if grid is not None else candidate_grid(binary, base, pinned)
    if not binary and any(hp.nb_scaling for hp in space):
        raise DataError(
            f"{len(splits.labels)} classes: NB scaling needs two; drop it from the grid"
        )
    candidates = choose_candidates(space, options.max_candidates, settings.seed)
    with mlflow.start_run(run_name=f"search {Path(settings.data).name}") as parent:
        log_new_params(  # under `mlflow run` the MLproject parameters are logged already
            parent.info.run_id,
            {
                "data": str(settings.data),
                "folds": options.folds,
                "cv_metric": metric,
                "candidates": len(candidates),
                "grid_size": len(space),
                "fixed": ",".join(sorted(pinned)) or "none",  # given, so not searched
                "time_budget_min": options.time_budget_min,
                "seed": settings.seed,
            },
        )
        mlflow.set_tag("emotitrack.kind", "search")
        scores = _cross_validate(candidates, splits, options, metric, settings.seed)
        best = max(scores, key=lambda s: (s.mean, -s.index))
        _log_summary(scores, best, metric)
        log.info(
            "best candidate %d: cv %s %.4f; refitting on all of train",
            best.index,
            metric,
            best.mean,
        )
        with mlflow.start_run(run_name="best refit", nested=True) as refit:
            mlflow.set_tag("emotitrack.search_candidate", str(best.index))
            training = train_in_run(refit.info.run_id, settings, best.hp, splits, preset="search")
        mlflow.set_tags({"best_run_id": training.run_id, "registered_version": training.version})
        mlflow.log_metrics({k: v for k, v in training.metrics.items() if k.startswith("test_")})
    return SearchResult(parent.info.run_id, best, len(scores), metric, training)


def _cross_validate(
    candidates: list[Hyperparameters],
    splits: Splits,
    options: SearchOptions,
    metric: str,
    seed: int,
) -> list[CandidateScore]:
    """Score every candidate on the same folds of the training split, within the time budget;
    each candidate becomes a child run as soon as its folds are done."""
    texts = splits.train[TEXT].to_numpy(dtype=object)
    labels = splits.train[LABEL].to_numpy(dtype=object)
    folds = list(
        StratifiedKFold(options.folds, shuffle=True, random_state=seed).split(texts, labels)
    )
    deadline = time.monotonic() + options.time_budget_min * 60
    started = time.monotonic()
    scores: list[CandidateScore] = []
    for _, group_iter in itertools.groupby(
        enumerate(candidates, start=1), key=lambda c: _feature_key(c[1])
    ):
        group = list(group_iter)
        if scores and time.monotonic() > deadline:
            log.warning(
                "time budget of %.0f min spent: %d of %d candidates evaluated",
                options.time_budget_min,
                len(scores),
                len(candidates),
            )
            break
        fold_scores: dict[int, list[float]] = {i: [] for i, _ in group}
        seconds: dict[int, float] = {i: 0.0 for i, _ in group}
        for k, (train_idx, val_idx) in enumerate(folds, start=1):
            features = clone(build_pipeline(group[0][1], seed).named_steps["features"])
            x_train = features.fit_transform(list(texts[train_idx]))
            x_val = features.transform(list(texts[val_idx]))
            for i, hp in group:
                t0 = time.perf_counter()
                head = Pipeline(build_pipeline(hp, seed).steps[1:]).fit(x_train, labels[train_idx])
                fold_scores[i].append(float(METRICS[metric](labels[val_idx], head.predict(x_val))))
                seconds[i] += time.perf_counter() - t0
                log.info(
                    "[%d/%d] fold %d/%d %s: %s %.4f (%s elapsed)",
                    i,
                    len(candidates),
                    k,
                    len(folds),
                    _describe(hp),
                    metric,
                    fold_scores[i][-1],
                    _minutes(time.monotonic() - started),
                )
        for i, hp in group:
            score = CandidateScore(i, hp, fold_scores[i], seconds[i])
            _log_candidate(score, metric)
            scores.append(score)
    return scores


def _describe(hp: Hyperparameters) -> str:
    parts = [f"ngram≤{hp.ngram_max}"]
    if hp.char_ngram_max:
        parts.append(f"char≤{hp.char_ngram_max}")
    if hp.negation:
        parts.append("negation")
    parts.append("NB" if hp.nb_scaling else "no NB")
    if hp.class_weight != "none":
        parts.append(hp.class_weight)
    parts.append(f"C={hp.C:g}")
    return " ".join(parts)


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _log_candidate(score: CandidateScore, metric: str) -> None:
    with mlflow.start_run(run_name=f"candidate {score.index:02d}", nested=True):
        mlflow.set_tag("emotitrack.kind", "search-candidate")
        mlflow.log_params(spelled_params(score.hp.as_params()))
        mlflow.log_metrics(
            {
                f"cv_{metric}": score.mean,
                f"cv_{metric}_std": float(np.std(score.fold_scores)),
                "cv_fit_seconds": score.fit_seconds,
                **{f"cv_{metric}_fold_{k}": s for k, s in enumerate(score.fold_scores, start=1)},
            }
        )


def _log_summary(scores: list[CandidateScore], best: CandidateScore, metric: str) -> None:
    """Best score and parameters on the parent run, and every candidate as one table."""
    mlflow.log_metric(f"best_cv_{metric}", best.mean)
    mlflow.log_params({f"best_{k}": v for k, v in spelled_params(best.hp.as_params()).items()})
    table = pd.DataFrame(
        [
            {
                "candidate": s.index,
                **s.hp.as_params(),
                f"cv_{metric}": s.mean,
                "std": np.std(s.fold_scores),
            }
            for s in sorted(scores, key=lambda s: -s.mean)
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "search_results.csv"
        table.to_csv(path, index=False)
        mlflow.log_artifact(str(path))
