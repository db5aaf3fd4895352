"""Promotion: make a registered version the Production model, optionally behind a quality gate.

Production is marked twice on purpose: the alias ``production`` (MLflow's current mechanism,
``models:/NAME@production``) and the legacy stage ``Production`` (``models:/NAME/Production``),
which MLflow 3 still resolves for older clients.
"""

from __future__ import annotations

import getpass
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from training.data import LABEL, TEXT, load_labelled, make_splits
from training.evaluate import score
from training.progress import log, step
from training.settings import TrainingSettings

PRODUCTION_ALIAS = "production"
PRODUCTION_STAGE = "Production"


class PromotionError(RuntimeError):
    """The promotion cannot be done as asked; the message says why."""


class PromotionRefused(PromotionError):
    """The gate found the challenger worse than the champion."""


@dataclass(frozen=True)
class GateResult:
    metric: str
    challenger: float
    champion: float
    tolerance: float
    rows: int

    @property
    def passed(self) -> bool:
        return self.challenger >= self.champion - self.tolerance

    def summary(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        return (
            f"gate {verdict}: {self.metric} challenger {self.challenger:.4f} vs champion "
            f"{self.champion:.4f} (tolerance {self.tolerance}) on {self.rows} held-out rows"
        )


@dataclass(frozen=True)
class Promotion:
    name: str
    version: str
    previous: str | None
    gate: GateResult | None


def production_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version the ``production`` alias points at, if any."""
    try:
        return client.get_model_version_by_alias(name, PRODUCTION_ALIAS)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def newest_version(client: MlflowClient, name: str) -> str:
    versions = client.search_model_versions(f"name = '{name}'")
    if not versions:
        raise PromotionError(f"registered model '{name}' has no versions; train one first")
    return str(max(int(v.version) for v in versions))


def promote(
    settings: TrainingSettings,
    version: str | None = None,
    *,
    gate: bool = False,
    reason: str = "",
) -> Promotion:
    """Point ``production`` (alias and stage) at ``version`` (default: the newest)."""
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    name = settings.model_name
    version = version or newest_version(client, name)
    challenger = _get_version(client, name, version)
    champion = production_version(client, name)
    # The registry answers versions as int or str depending on the call: compare as str.
    previous = str(champion.version) if champion else None
    result = None
    if gate and champion is not None and previous != str(challenger.version):
        result = evaluate_gate(settings, challenger, champion)
        log.info(result.summary())
        if not result.passed:
            client.set_model_version_tag(name, version, "gate_refused_at", _now())
            raise PromotionRefused(result.summary())
    _mark_production(client, name, version)
    _record(client, name, version, previous, result, reason)
    log.info(
        "%s version %s is Production (models:/%s@%s, models:/%s/%s); previous: %s",
        name,
        version,
        name,
        PRODUCTION_ALIAS,
        name,
        PRODUCTION_STAGE,
        previous or "none",
    )
    return Promotion(name=name, version=version, previous=previous, gate=result)


def _get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise PromotionError(f"{name} version {version} not found: {exc.message}") from exc


def _mark_production(client: MlflowClient, name: str, version: str) -> None:
    client.set_registered_model_alias(name, PRODUCTION_ALIAS, version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # stages are deprecated; set on purpose
        client.transition_model_version_stage(name, version, PRODUCTION_STAGE)
        # Archive the others ourselves: MLflow's archive_existing_versions=True compares an
        # integer column with a text parameter, which PostgreSQL via psycopg 3 rejects.
        for other in client.search_model_versions(f"name = '{name}'"):
            if other.current_stage == PRODUCTION_STAGE and str(other.version) != version:
                client.transition_model_version_stage(name, str(other.version), "Archived")


def _record(
    client: MlflowClient,
    name: str,
    version: str,
    previous: str | None,
    gate: GateResult | None,
    reason: str,
) -> None:
    tags = {
        "promoted_at": _now(),
        "promoted_by": _who(),
        "promotion_reason": reason or "not given",
        "previous_production_version": previous or "none",
    }
    if gate is not None:
        tags["gate"] = gate.summary()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    current = client.get_model_version(name, version).description or ""
    note = f"Promoted to Production {tags['promoted_at']} by {tags['promoted_by']}: {tags['promotion_reason']}."
    client.update_model_version(name, version, description=f"{current}\n{note}".strip())


def evaluate_gate(
    settings: TrainingSettings, challenger: ModelVersion, champion: ModelVersion
) -> GateResult:
    """Score both versions on the challenger's validation split, rebuilt from its run's params
    (same data, columns, seed and fractions), so neither is judged on test data."""
    held_out = _challenger_validation_rows(settings, challenger)
    scores = {}
    for role, mv in (("challenger", challenger), ("champion", champion)):
        with step(f"gate: scoring {role} version {mv.version} on {len(held_out)} rows"):
            scores[role] = _score_version(
                settings.model_name, mv.version, held_out, settings.gate_metric
            )
    return GateResult(
        metric=settings.gate_metric,
        challenger=scores["challenger"],
        champion=scores["champion"],
        tolerance=settings.gate_tolerance,
        rows=len(held_out),
    )


def _challenger_validation_rows(
    settings: TrainingSettings, challenger: ModelVersion
) -> pd.DataFrame:
    if not challenger.run_id:
        raise PromotionError(
            f"version {challenger.version} has no run; cannot rebuild its held-out data"
        )
    params = MlflowClient().get_run(challenger.run_id).data.params
    try:
        data = load_labelled(params["data"], params["text_column"], params["label_column"])
        splits = make_splits(
            data,
            seed=int(params["seed"]),
            validation_fraction=float(params["validation_fraction"]),
            test_fraction=float(params["test_fraction"]),
            min_rows=2,
        )
    except KeyError as exc:
        raise PromotionError(f"run {challenger.run_id} lacks param {exc}; cannot gate") from exc
    return splits.validation


def _score_version(name: str, version: str, frame: pd.DataFrame, metric: str) -> float:
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
    predictions = model.predict(frame[[TEXT]])
    classes = sorted(c.removeprefix("prob_") for c in predictions.columns if c.startswith("prob_"))
    unknown = set(frame[LABEL]) - set(classes)
    if unknown:
        raise PromotionError(
            f"version {version} cannot predict labels {sorted(unknown)} of the gate data"
        )
    metrics = score(frame[LABEL], predictions, classes)
    if metric not in metrics:
        raise PromotionError(f"unknown gate metric '{metric}'; choose one of {sorted(metrics)}")
    return metrics[metric]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
