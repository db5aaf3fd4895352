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
from pathlib import Path

import mlflow
import pandas as pd
import sqlalchemy as sa
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from emotitrack.core.prediction_log import create_store_engine, redacted_url
from emotitrack.core.progress import log, step
from emotitrack.core.shadow_log import compare
from training.data import (
    LABEL,
    TEXT,
    TRAIN_FINGERPRINTS_ARTIFACT,
    DataError,
    Splits,
    load_labelled,
    make_splits,
    splits_digest,
    text_fingerprints,
)
from training.errors import GATE_METRICS, PromotionError, PromotionRefused
from training.evaluate import score
from training.settings import TrainingSettings

PRODUCTION_ALIAS = "production"
PRODUCTION_STAGE = "Production"
# Metrics the gate may compare: all higher-is-better (log loss and ECE are not).
# Fewer rows than this that neither version has seen say too little to compare them.
MIN_GATE_ROWS = 20
# What the gate compares on: the challenger's held-out validation rows, or the live requests
# both versions scored (Production answering, the challenger in shadow) that got feedback.
GATE_EVIDENCE = ("validation", "shadow")
MIN_SHADOW_FEEDBACK = 200  # shadow-scored requests with feedback the shadow gate needs


@dataclass(frozen=True)
class GateResult:
    metric: str
    challenger: float
    champion: float
    tolerance: float
    rows: int
    excluded: int = 0  # validation rows left out because the champion was trained on them
    evidence: str = "validation"  # or "shadow": live requests with feedback

    @property
    def passed(self) -> bool:
        return self.challenger >= self.champion - self.tolerance

    def summary(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        if self.evidence == "shadow":
            return (
                f"gate {verdict}: {self.metric} challenger {self.challenger:.4f} vs champion "
                f"{self.champion:.4f} (tolerance {self.tolerance}) on {self.rows} live requests "
                "with feedback that both scored (challenger in shadow)"
            )
        excluded = f" ({self.excluded} left out: the champion trained on them)"
        return (
            f"gate {verdict}: {self.metric} challenger {self.challenger:.4f} vs champion "
            f"{self.champion:.4f} (tolerance {self.tolerance}) on {self.rows} held-out rows"
            + (excluded if self.excluded else "")
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
    evidence: str = "validation",
    prediction_log_url: str | None = None,
    min_feedback: int = MIN_SHADOW_FEEDBACK,
) -> Promotion:
    """Point ``production`` (alias and stage) at ``version`` (default: the newest). With
    ``gate``, on ``evidence``: the validation rows neither version trained on, or (``shadow``)
    the live requests in ``prediction_log_url`` that both scored and that got feedback."""
    if evidence not in GATE_EVIDENCE:
        raise PromotionError(f"gate evidence {evidence!r}: choose one of {GATE_EVIDENCE}")
    if gate and evidence == "shadow" and not prediction_log_url:
        raise PromotionError(
            "the shadow gate reads the prediction log: give its URL (--prediction-log-url or "
            "EMOTITRACK_PREDICTION_LOG_URL)"
        )
    if gate and settings.gate_metric not in GATE_METRICS:
        raise PromotionError(
            f"gate metric {settings.gate_metric!r} cannot gate: choose one of {GATE_METRICS}"
        )
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = MlflowClient()
    name = settings.model_name
    challenger = _get_version(client, name, version or newest_version(client, name))
    # As the registry spells it ("02" → "2"), so that the archiving below spares it.
    version = str(challenger.version)
    champion = production_version(client, name)
    # The registry answers versions as int or str depending on the call: compare as str.
    previous = str(champion.version) if champion else None
    result = None
    if gate and champion is not None and previous != version:
        if evidence == "shadow":
            assert prediction_log_url is not None  # checked above
            result = evaluate_shadow_gate(
                settings, challenger, champion, prediction_log_url, min_feedback=min_feedback
            )
        else:
            result = evaluate_gate(settings, challenger, champion)
        log.info(result.summary())
        if not result.passed:
            client.set_model_version_tag(name, version, "gate_refused_at", _now())
            raise PromotionRefused(result.summary())
        _check_champion_unchanged(client, name, previous)
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


def _check_champion_unchanged(client: MlflowClient, name: str, champion: str | None) -> None:
    """A gate takes minutes: if someone promoted another version meanwhile, this challenger was
    compared with a model that is no longer Production."""
    now = production_version(client, name)
    current = str(now.version) if now else None
    if current != champion:
        raise PromotionError(
            f"Production moved from version {champion} to {current} while the gate ran; "
            "run promote again to compare with the new champion"
        )


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
    """Score both versions on the challenger's validation rows that the champion was not
    trained on either: the challenger's split is rebuilt from its run (same data, checked by
    digest; same columns, seed and fractions), the champion's training rows are the
    fingerprints its run recorded. Neither is judged on test data or on rows it has seen."""
    challenger_run = _rebuilt_splits(challenger)
    validation = challenger_run.splits.validation
    seen = _training_fingerprints(champion, challenger_run)
    unseen = ~pd.Series(text_fingerprints(validation[TEXT]), index=validation.index).isin(seen)
    held_out = validation[unseen]
    if len(held_out) < MIN_GATE_ROWS:
        raise PromotionError(
            f"only {len(held_out)} of the challenger's {len(validation)} validation rows are "
            f"not in the champion's (version {champion.version}) training data; at least "
            f"{MIN_GATE_ROWS} are needed to compare them: promote without --gate after "
            "comparing the runs, or give the challenger a validation split of new rows"
        )
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
        excluded=len(validation) - len(held_out),
    )


def evaluate_shadow_gate(
    settings: TrainingSettings,
    challenger: ModelVersion,
    champion: ModelVersion,
    prediction_log_url: str,
    *,
    min_feedback: int = MIN_SHADOW_FEEDBACK,
) -> GateResult:
    """Accuracy of both versions on the live requests Production (``champion``) answered and
    the challenger scored in shadow, where feedback gave the true label: the same requests,
    the same labels, counted by the database. Feedback measures accuracy only, whatever
    metric the validation gate uses."""
    try:
        engine = create_store_engine(prediction_log_url)
    except (sa.exc.ArgumentError, ImportError) as exc:  # not echoed: it may hold a password
        raise PromotionError(
            "the prediction log URL is not a SQLAlchemy database URL with an installed driver "
            f"({type(exc).__name__})"
        ) from exc
    try:
        pairs = compare(
            engine,
            primary_version=str(champion.version),
            shadow_version=str(challenger.version),
            model_name=settings.model_name,
        )
    except Exception as exc:  # unreachable store, no table: say where we looked
        raise PromotionError(
            f"cannot read the prediction log at {redacted_url(prediction_log_url)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    finally:
        engine.dispose()
    labelled = sum(pair.labelled for pair in pairs)
    if labelled < min_feedback:
        shadowed = sum(pair.rows for pair in pairs)
        raise PromotionError(
            f"only {labelled} of the {shadowed} requests that Production (version "
            f"{champion.version}) answered and version {challenger.version} scored in shadow "
            f"have feedback; at least {min_feedback} are needed to compare them: serve version "
            f"{challenger.version} as the shadow model (EMOTITRACK_SHADOW_MODEL_URI) and collect "
            "more feedback, or gate on validation data (--gate-evidence validation)"
        )
    return GateResult(
        metric="accuracy",
        challenger=sum(pair.shadow_correct for pair in pairs) / labelled,
        champion=sum(pair.primary_correct for pair in pairs) / labelled,
        tolerance=settings.gate_tolerance,
        rows=labelled,
        evidence="shadow",
    )


@dataclass(frozen=True)
class _RunSplits:
    """A training run's splits, rebuilt from what it logged."""

    splits: Splits
    recipe: tuple[str, ...]  # data, columns, seed and fractions: equal recipes, equal splits


def _rebuilt_splits(version: ModelVersion) -> _RunSplits:
    if not version.run_id:
        raise PromotionError(f"version {version.version} has no run; cannot rebuild its data")
    run = MlflowClient().get_run(version.run_id)
    params, tags = run.data.params, run.data.tags
    try:
        # data_path: the resolved path (``data`` is as typed, perhaps relative to elsewhere)
        path = tags.get("data_path") or params["data"]
        recipe = (
            path,
            params["text_column"],
            params["label_column"],
            params["seed"],
            params["validation_fraction"],
            params["test_fraction"],
        )
        seed = int(float(params["seed"]))  # `mlflow run -P seed=7.0` logs "7.0"
    except KeyError as exc:
        raise PromotionError(f"run {version.run_id} lacks param {exc}; cannot gate") from exc
    except ValueError as exc:
        raise PromotionError(f"run {version.run_id} logged seed {params['seed']!r}") from exc
    try:
        data = load_labelled(path, params["text_column"], params["label_column"])
        splits = make_splits(
            data,
            seed=seed,
            validation_fraction=float(params["validation_fraction"]),
            test_fraction=float(params["test_fraction"]),
            min_rows=2,
        )
    except DataError as exc:
        raise PromotionError(
            f"the gate cannot rebuild version {version.version}'s data from {path}: {exc}"
        ) from exc
    logged, digest = tags.get("data_digest"), splits_digest(splits)
    if logged and digest != logged:
        raise PromotionError(
            f"the data at {path} changed since version {version.version} was trained on it "
            f"(digest {digest}, logged {logged}): its held-out rows cannot be "
            "rebuilt; retrain on the current data and gate that version"
        )
    return _RunSplits(splits, recipe)


def _training_fingerprints(champion: ModelVersion, challenger: _RunSplits) -> set[str]:
    """Fingerprints of the rows the champion was trained on: from its run's record, or, for
    versions trained before runs kept one, from its rebuilt splits."""
    if not champion.run_id:
        raise PromotionError(f"version {champion.version} has no run; cannot tell what it saw")
    client = MlflowClient()
    folder = TRAIN_FINGERPRINTS_ARTIFACT.rpartition("/")[0]
    if TRAIN_FINGERPRINTS_ARTIFACT in {
        a.path for a in client.list_artifacts(champion.run_id, folder)
    }:
        local = client.download_artifacts(champion.run_id, TRAIN_FINGERPRINTS_ARTIFACT)
        return set(Path(local).read_text().split())
    rebuilt = _rebuilt_splits(champion)
    if rebuilt.recipe != challenger.recipe:
        raise PromotionError(
            f"version {champion.version} (Production) recorded no training rows and was "
            "trained on other data or splits than the challenger: no row is known to be "
            "held out from both; promote without --gate after comparing the runs"
        )
    return set(text_fingerprints(rebuilt.splits.train[TEXT]))


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
