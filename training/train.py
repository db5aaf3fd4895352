"""One training run: load and check data, fit, evaluate, log everything to MLflow, register."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.models import infer_signature

from training.data import LABEL, TEXT, Splits, data_report, load_labelled, make_splits
from training.evaluate import score, write_report_files
from training.model import (
    PIPELINE_ARTIFACT,
    Hyperparameters,
    build_pipeline,
    prediction_table,
    save_pipeline,
)
from training.progress import log, step
from training.reference import REFERENCE_ARTIFACT, build_reference
from training.settings import TrainingSettings

MODEL_ARTIFACT = "model"
# What the logged model needs at run time, pinned to what trained it.
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "pandas", "numpy", "joblib")


@dataclass(frozen=True)
class TrainingResult:
    run_id: str
    model_uri: str
    registered_name: str
    version: str
    metrics: dict[str, float]


def train(settings: TrainingSettings, hp: Hyperparameters) -> TrainingResult:
    """Train on ``settings.data`` and register the model as a new version of ``settings.model_name``."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    # Under `mlflow run` the run (and its experiment) already exists: MLFLOW_RUN_ID names it.
    if "MLFLOW_RUN_ID" not in os.environ:
        mlflow.set_experiment(settings.experiment)
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
    with mlflow.start_run() as run:
        return _run(run.info.run_id, settings, hp, splits)


def _run(
    run_id: str, settings: TrainingSettings, hp: Hyperparameters, splits: Splits
) -> TrainingResult:
    _log_params(
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
        },
    )
    digest = _log_data(settings, splits)
    mlflow.set_tags({"git_commit": _git_commit(), "data_digest": digest})

    pipeline = build_pipeline(hp, settings.seed)
    with step(f"fitting TF-IDF + LogisticRegression on {len(splits.train)} texts"):
        started = time.perf_counter()
        pipeline.fit(splits.train[TEXT].tolist(), splits.train[LABEL].tolist())
        train_seconds = time.perf_counter() - started
    classes = [str(c) for c in pipeline.classes_]

    with step("evaluating on validation and test"):
        val_pred = prediction_table(pipeline, splits.validation[TEXT].tolist())
        test_pred = prediction_table(pipeline, splits.test[TEXT].tolist())
        metrics = {
            f"val_{k}": v for k, v in score(splits.validation[LABEL], val_pred, classes).items()
        }
        metrics |= {
            f"test_{k}": v for k, v in score(splits.test[LABEL], test_pred, classes).items()
        }
        metrics["train_time_s"] = train_seconds
        metrics["vocabulary_size"] = float(len(pipeline.named_steps["tfidf"].vocabulary_))

    with tempfile.TemporaryDirectory() as tmp, step("logging evaluation, reference and model"):
        work = Path(tmp)
        pipeline_file = save_pipeline(pipeline, work / "pipeline.pkl")
        metrics["model_size_bytes"] = float(pipeline_file.stat().st_size)
        mlflow.log_metrics(metrics)
        for path in write_report_files(
            splits.test, test_pred, classes, work / "evaluation", settings.seed
        ):
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        reference = build_reference(splits.test, test_pred, settings.reference_size, settings.seed)
        reference_file = work / Path(REFERENCE_ARTIFACT).name
        reference.to_parquet(reference_file, index=False)
        mlflow.log_artifact(str(reference_file), artifact_path=str(Path(REFERENCE_ARTIFACT).parent))
        info = _log_model(pipeline_file, splits, test_pred, settings.model_name)

    version = str(info.registered_model_version)
    _describe_version(settings, version, run_id, metrics, digest)
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
    )


def _log_params(run_id: str, params: dict[str, object]) -> None:
    """Log what `mlflow run` has not logged already: it records the MLproject parameters as
    given (``true``, ``7.0``), and MLflow refuses to log a key twice with another spelling."""
    logged = mlflow.MlflowClient().get_run(run_id).data.params
    spelled = {k: str(v).lower() if isinstance(v, bool) else v for k, v in params.items()}
    mlflow.log_params({k: v for k, v in spelled.items() if k not in logged})


def _log_data(settings: TrainingSettings, splits: Splits) -> str:
    """Log the splits as MLflow dataset inputs and the data report; return a digest of all three."""
    source = str(Path(settings.data).resolve())
    digests = []
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
        digests.append(dataset.digest)
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
    return hashlib.sha256("-".join(digests).encode()).hexdigest()[:16]


def _log_model(
    pipeline_file: Path, splits: Splits, test_pred: pd.DataFrame, name: str
) -> mlflow.models.model.ModelInfo:
    example = splits.test[[TEXT]].head(3).reset_index(drop=True)
    signature = infer_signature(example, test_pred.head(3).reset_index(drop=True))
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=str(Path(__file__).with_name("pyfunc_entry.py")),
        artifacts={PIPELINE_ARTIFACT: str(pipeline_file)},
        # The wrapper class lives in this package; ship it with the model.
        code_paths=[str(Path(__file__).parent)],
        signature=signature,
        input_example=example,
        pip_requirements=[f"{pkg}=={installed_version(pkg)}" for pkg in MODEL_REQUIREMENTS],
        registered_model_name=name,
    )


def _describe_version(
    settings: TrainingSettings, version: str, run_id: str, metrics: dict[str, float], digest: str
) -> None:
    client = mlflow.MlflowClient()
    client.update_model_version(
        settings.model_name,
        version,
        description=(
            f"TF-IDF + LogisticRegression trained on {settings.data} (data digest {digest}); "
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
