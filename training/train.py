"""One training run: load and check data, fit, evaluate, log everything to MLflow, register."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import infer_signature
from sklearn.pipeline import Pipeline

from emotitrack.core import model_format
from emotitrack.core.model_format import ModelFiles
from emotitrack.core.progress import log, step
from emotitrack.core.reference import REFERENCE_ARTIFACT
from training.behaviour import markdown_table, report, run_checks
from training.data import (
    LABEL,
    TEXT,
    TRAIN_FINGERPRINTS_ARTIFACT,
    DataError,
    Splits,
    data_report,
    load_labelled,
    make_splits,
    splits_digest,
    text_fingerprints,
)
from training.evaluate import score, strongest_ngrams_plot, write_report_files
from training.export import log_model, to_format
from training.hyperparameters import Hyperparameters, describe_model
from training.model import (
    build_pipeline,
    fit_pipeline,
    probabilities,
    strongest_ngrams,
    vectorizers,
)
from training.reference import build_reference
from training.settings import TrainingSettings

# Validation texts the exported model must score as the pipeline does (beside probe texts).
PARITY_TEXTS = 300


@dataclass(frozen=True)
class TrainingResult:
    run_id: str
    model_uri: str
    registered_name: str
    version: str
    metrics: dict[str, float]
    # The fitted reference pipeline, in memory only (the registered model is its export): for
    # callers that compare with scikit-learn's predict_proba, such as the benchmarks.
    pipeline: Pipeline | None = field(default=None, repr=False, compare=False)


def train(
    settings: TrainingSettings, hp: Hyperparameters, preset: str | None = None
) -> TrainingResult:
    """Train on ``settings.data`` and register the model as a new version of ``settings.model_name``.

    ``preset`` only names where ``hp`` came from, for the record."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    # Under `mlflow run` the run (and its experiment) already exists: MLFLOW_RUN_ID names it.
    if "MLFLOW_RUN_ID" not in os.environ:
        mlflow.set_experiment(settings.experiment)
    splits = load_splits(settings)
    if hp.nb_scaling and len(splits.labels) != 2:
        raise DataError(
            f"{settings.data}: {len(splits.labels)} classes {splits.labels}; Naive-Bayes scaling "
            "needs two: pass --nb-scaling false (or --preset semeval for 3-class tweets)"
        )
    with mlflow.start_run() as run:
        return train_in_run(run.info.run_id, settings, hp, splits, preset)


def load_splits(settings: TrainingSettings) -> Splits:
    """The checked train/validation/test splits of ``settings.data``, as every run makes them."""
    with step(f"loading {settings.data}"):
        data = load_labelled(settings.data, settings.text_column, settings.label_column)
        splits = make_splits(
            data,
            seed=settings.seed,
            validation_fraction=settings.validation_fraction,
            test_fraction=settings.test_fraction,
            min_rows=settings.min_rows,
        )
    log.info(
        "train %d, validation %d, test %d rows; labels %s",
        len(splits.train),
        len(splits.validation),
        len(splits.test),
        splits.labels,
    )
    return splits


def train_in_run(
    run_id: str,
    settings: TrainingSettings,
    hp: Hyperparameters,
    splits: Splits,
    preset: str | None = None,
) -> TrainingResult:
    """Fit, evaluate, log and register inside the active run ``run_id``."""
    log_new_params(
        run_id,
        {
            **hp.as_params(),
            "data": str(settings.data),
            "text_column": settings.text_column,
            "label_column": settings.label_column,
            "seed": settings.seed,
            "validation_fraction": settings.validation_fraction,
            "test_fraction": settings.test_fraction,
            "test_from_source": splits.test_from_source,
            "labels": ",".join(splits.labels),
            "resolved_preset": preset or "none",  # `preset` itself: what was asked (auto)
        },
    )
    digest = _log_data(settings, splits)
    # data_path: the data resolved, as a gate run from another directory must find it
    mlflow.set_tags(
        {
            "git_commit": _git_commit(),
            "data_digest": digest,
            "data_path": str(Path(settings.data).resolve()),
        }
    )

    pipeline = build_pipeline(hp, settings.seed)
    calibration_set = None
    calibration = f", calibrating on {hp.calibration_folds} folds" if hp.calibration_folds else ""
    if hp.calibration_folds and hp.calibrate_on == "validation":  # calibration_folds 0: off
        calibration_set = (splits.validation[TEXT].tolist(), splits.validation[LABEL].tolist())
        calibration = f", calibrating on the {len(splits.validation)} validation texts"
    with step(f"fitting TF-IDF + LogisticRegression on {len(splits.train)} texts{calibration}"):
        started = time.perf_counter()
        temperature = fit_pipeline(
            pipeline,
            splits.train[TEXT].tolist(),
            splits.train[LABEL].tolist(),
            hp.calibration_folds,
            settings.seed,
            calibration_set,
        )
        train_seconds = time.perf_counter() - started
    classes = [str(c) for c in pipeline.classes_]
    with step("exporting the model format and checking it scores as the pipeline does"):
        exported = to_format(pipeline, splits.validation[TEXT].tolist()[:PARITY_TEXTS])

    served = exported.scorer.probabilities  # what the logged model answers

    with step("evaluating on validation and test"):
        val_pred = model_format.prediction_table(served(splits.validation[TEXT].tolist()), classes)
        test_pred = model_format.prediction_table(served(splits.test[TEXT].tolist()), classes)
        metrics = {
            f"val_{k}": v for k, v in score(splits.validation[LABEL], val_pred, classes).items()
        }
        metrics |= {
            f"test_{k}": v for k, v in score(splits.test[LABEL], test_pred, classes).items()
        }
        metrics["train_time_s"] = train_seconds
        metrics["calibration_temperature"] = temperature
        metrics["vocabulary_size"] = float(
            sum(len(v.vocabulary_) for _, v in vectorizers(pipeline))
        )
        metrics["predict_latency_ms_p50"] = single_text_latency_ms(served, splits.test)
        metrics["predict_proba_latency_ms_p50"] = single_text_latency_ms(
            lambda batch: probabilities(pipeline, batch), splits.test, warm=False
        )

    with tempfile.TemporaryDirectory() as tmp, step("logging evaluation, reference and model"):
        work = Path(tmp)
        files = model_format.write(work / "format", exported.config, exported.arrays)
        metrics["model_size_bytes"] = float(
            files.config.stat().st_size + files.arrays.stat().st_size
        )
        mlflow.log_metrics(metrics)
        for path in write_report_files(
            splits.test, test_pred, classes, work / "evaluation", settings.seed
        ):
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        _log_explanations(pipeline, work / "explanations")
        metrics |= _log_behaviour(served, classes)
        reference = build_reference(splits.test, test_pred, settings.reference_size, settings.seed)
        reference_file = work / Path(REFERENCE_ARTIFACT).name
        reference.to_parquet(reference_file, index=False)
        mlflow.log_artifact(str(reference_file), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
        mlflow.log_metrics({k: v for k, v in metrics.items() if k.startswith("behaviour_")})
        info = _log_model(files, splits, test_pred, settings.model_name)

    version = str(info.registered_model_version)
    _describe_version(settings, version, run_id, metrics, digest, hp)
    log.info(
        "run %s: test accuracy %.4f, macro F1 %.4f; registered %s version %s",
        run_id,
        metrics["test_accuracy"],
        metrics["test_f1_macro"],
        settings.model_name,
        version,
    )
    return TrainingResult(
        run_id=run_id,
        model_uri=info.model_uri,
        registered_name=settings.model_name,
        version=version,
        metrics=metrics,
        pipeline=pipeline,
    )


def single_text_latency_ms(
    predict: Callable[[list[str]], np.ndarray],
    test: pd.DataFrame,
    texts: int = 200,
    warm: bool = True,
) -> float:
    """Median time of one single-text prediction on real held-out texts, each timed once.
    ``warm``: first answer the next 1,000 held-out texts one by one, as a server in service
    would have (the served scorer remembers the character n-grams of words it has seen, so
    timing the same texts again would flatter it, and an idle new one would be slower than in
    service)."""
    held_out = test[TEXT].tolist()
    for text in held_out[texts : texts + 1000] if warm else []:
        predict([text])
    timings = []
    for text in held_out[:texts]:
        started = time.perf_counter()
        predict([text])
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1000)


def _log_explanations(pipeline: Pipeline, out: Path) -> None:
    """The n-grams weighing most towards each class: a table and a bar chart."""
    out.mkdir(parents=True, exist_ok=True)
    table = strongest_ngrams(pipeline)
    table.to_csv(out / "strongest_ngrams.csv", index=False)
    strongest_ngrams_plot(table, out / "strongest_ngrams.png")
    mlflow.log_artifacts(str(out), artifact_path="explanations")


def _log_behaviour(
    predict: Callable[[list[str]], np.ndarray], classes: list[str]
) -> dict[str, float]:
    """Behavioural checks (negation, intensifiers, contrast, invariances, product reviews) as a
    report artifact and one pass-rate metric per check; models without positive/negative
    classes have nothing to check."""
    if not {"positive", "negative"} <= set(classes):
        log.info("behavioural checks skipped: classes %s lack positive/negative", classes)
        return {}
    results = run_checks(predict, classes)
    mlflow.log_dict(report(results), "behaviour/report.json")
    mlflow.log_text(markdown_table(results), "behaviour/report.md")
    failing = [r.name for r in results if not r.ok]
    if failing:
        log.warning("behavioural checks below their minimum pass rate: %s", ", ".join(failing))
    return {f"behaviour_{r.name}": r.pass_rate for r in results}


def log_new_params(run_id: str, params: dict[str, object]) -> None:
    """Log what `mlflow run` has not logged already: it records the MLproject parameters as
    given (``true``, ``7.0``), and MLflow refuses to log a key twice with another spelling."""
    logged = mlflow.MlflowClient().get_run(run_id).data.params
    mlflow.log_params({k: v for k, v in spelled_params(params).items() if k not in logged})


def spelled_params(params: dict[str, object]) -> dict[str, object]:
    """Booleans as MLproject spells them (``true``), so every run compares alike in the UI."""
    return {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}


def _log_data(settings: TrainingSettings, splits: Splits) -> str:
    """Log the splits as MLflow dataset inputs and the data report; return a digest of all three."""
    source = str(Path(settings.data).resolve())
    warnings.filterwarnings(
        "ignore", message="The specified dataset source can be interpreted", category=UserWarning
    )  # MLflow registers two equivalent local sources for a path and warns about it
    for name, frame, context in (
        ("train", splits.train, "training"),
        ("validation", splits.validation, "validation"),
        ("test", splits.test, "evaluation"),
    ):
        dataset = from_pandas(frame, source=source, targets=LABEL, name=name)
        mlflow.log_input(dataset, context=context)
    # The rows this model has seen, as fingerprints: a promotion gate scores champion and
    # challenger only on rows neither was trained on, whatever data or seed each used.
    fingerprints = sorted(set(text_fingerprints(splits.train[TEXT])))
    mlflow.log_text("\n".join(fingerprints) + "\n", TRAIN_FINGERPRINTS_ARTIFACT)
    report = data_report(splits)
    mlflow.log_dict(report, "data/data_report.json")
    overlap = report["overlap"]
    assert isinstance(overlap, dict)
    mlflow.log_metrics(
        {
            "data_train_rows": len(splits.train),
            "data_validation_rows": len(splits.validation),
            "data_test_rows": len(splits.test),
            "data_train_duplicates": int(splits.train[TEXT].duplicated().sum()),
            "data_train_test_overlap": overlap["train_test"],
        }
    )
    log.info("data report: %s", json.dumps(report["overlap"]))
    return splits_digest(splits)


def _log_model(
    files: ModelFiles, splits: Splits, test_pred: pd.DataFrame, name: str
) -> mlflow.models.model.ModelInfo:
    example = splits.test[[TEXT]].head(3).reset_index(drop=True)
    signature = infer_signature(
        example, test_pred.head(3).reset_index(drop=True), params={"explain": False}
    )
    info: mlflow.models.model.ModelInfo = log_model(files, signature, example, name)
    return info


def _describe_version(
    settings: TrainingSettings,
    version: str,
    run_id: str,
    metrics: dict[str, float],
    digest: str,
    hp: Hyperparameters,
) -> None:
    client = mlflow.MlflowClient()
    client.update_model_version(
        settings.model_name,
        version,
        description=(
            f"{describe_model(hp)} trained on {settings.data} (data digest {digest}); "
            f"test accuracy {metrics['test_accuracy']:.4f}, macro F1 {metrics['test_f1_macro']:.4f}."
        ),
    )
    client.set_model_version_tag(settings.model_name, version, "data_digest", digest)
    client.set_model_version_tag(settings.model_name, version, "run_id", run_id)


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607 - git from PATH, fixed arguments
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(__file__).parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()
