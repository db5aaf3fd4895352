"""From the fitted reference pipeline to the model format, logged to MLflow; and the migration of
versions registered before the format (``emotitrack repackage``).

The scikit-learn pipeline (``training.model``) is the reference. ``to_format`` reads its fitted
parameters into the format's config and arrays (``emotitrack.core.model_format``) and refuses a
pipeline whose probabilities the format's scorer does not reproduce to 1e-6, checked on probe
texts and on any texts the caller adds.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow import MlflowClient
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from emotitrack.core import model_format
from emotitrack.core.model_format import (
    ARRAYS_ARTIFACT,
    CONFIG_ARTIFACT,
    FORMAT,
    FORMAT_VERSION,
    ModelFiles,
    SentimentScorer,
    encode_strings,
    normalize_text,
    normalize_with_negation,
)
from emotitrack.core.reference import load_reference
from emotitrack.core.registry import ModelUnavailable, resolve
from training.model import probabilities

MODEL_ARTIFACT = "model"
# What the logged model needs at run time, pinned to what trained it: no scikit-learn.
MODEL_REQUIREMENTS = ("mlflow", "pandas", "numpy")
PARITY_TOLERANCE = 1e-6
# The normalisers training uses, by the name the format gives them. Versions registered before
# the format ship their own copies of these functions: those are known by name, and the parity
# check below proves they prepare text alike.
_NORMALIZERS = {normalize_text: "text-v1", normalize_with_negation: "negation-v1"}
_NORMALIZER_NAMES = {f.__name__: name for f, name in _NORMALIZERS.items()}
# Texts that exercise every branch of the normalisers and the analyzers, besides the real ones.
PROBE_TEXTS = (
    "Not good, but great! Really.",
    "<br /><br />I LOVED it!!! Sooo goooood :) :-( ;) =D",
    "see https://t.co/xyz @bob_99 can\\u2019t &amp; won't, www.Example.com",
    "never boring, not bad at all; nothing special? no. I don't hate it",
    "",
    "zzqx qqzx",
    "café naïve ᚠᚢᚦ 😍👍🏽 \\ud83d\\ude00 a b c\t\td\n e",
)


class ExportError(ValueError):
    """The pipeline has a part the format does not reproduce."""


class RepackageError(RuntimeError):
    """A version cannot be repackaged; the message says why."""


@dataclass(frozen=True)
class ExportedModel:
    config: dict[str, Any]
    arrays: dict[str, np.ndarray]
    scorer: SentimentScorer


def to_format(pipeline: Pipeline, check_texts: Sequence[str] = ()) -> ExportedModel:
    """The format of a fitted ``features`` → ``nb`` → ``clf`` pipeline (TF-IDF vectorizers,
    optional Naive-Bayes ratios, LogisticRegression), checked against ``predict_proba``."""
    steps = dict(pipeline.steps)
    clf = steps.get("clf")
    if set(steps) != {"features", "nb", "clf"} or not isinstance(clf, LogisticRegression):
        raise ExportError(f"expected features, nb and clf (LogisticRegression) steps, got {steps}")
    coef = np.asarray(clf.coef_, dtype=np.float64)
    nb = steps["nb"]
    if hasattr(nb, "ratio_"):  # versions saved before the ratios were folded in
        coef = coef * nb.ratio_
    elif nb not in ("passthrough", None):
        raise ExportError(f"unknown nb step {nb!r}")
    config: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classes": [str(c) for c in clf.classes_],
        "parts": [],
    }
    arrays: dict[str, np.ndarray] = {}
    idf = []
    for i, vectorizer in enumerate(_vectorizers(steps["features"])):
        part, part_arrays = _part(vectorizer, i)
        config["parts"].append(part)
        arrays |= part_arrays
        width = part["columns"]
        idf.append(np.asarray(vectorizer.idf_) if vectorizer.use_idf else np.ones(width))
    arrays |= {
        "idf": np.concatenate(idf),
        "coef": coef,
        "intercept": np.asarray(clf.intercept_, dtype=np.float64),
    }
    scorer = SentimentScorer(config, arrays)
    check_parity(scorer, pipeline, [*probe_texts(config, arrays), *check_texts])
    return ExportedModel(config, arrays, scorer)


def probe_texts(config: dict[str, Any], arrays: dict[str, np.ndarray]) -> list[str]:
    """``PROBE_TEXTS`` and texts made of each part's vocabulary (so that known n-grams occur)."""
    texts = list(PROBE_TEXTS)
    for i, part in enumerate(config["parts"]):
        grams = model_format.decode_strings(arrays[f"vocabulary_{i}"], part["columns"])[:60]
        texts += [" ".join(grams), ", ".join(reversed(grams[:30]))]
    return texts


def check_parity(scorer: SentimentScorer, pipeline: Pipeline, texts: Sequence[str]) -> None:
    """Raise ``ExportError`` unless the scorer gives the pipeline's probabilities, for the texts
    as one batch and each of the first ones alone (one text takes its own path). The pipeline
    computes its features in float64 for this: its float32 rounding alone can move a confident
    model's probabilities by about 1e-6, and the check is after parts the format lacks."""
    texts = list(texts)
    with _features_in_float64(pipeline):
        expected = probabilities(pipeline, texts)
    worst = float(np.abs(scorer.probabilities(texts) - expected).max(initial=0.0))
    for i, text in enumerate(texts[:50]):
        alone = float(np.abs(scorer.probabilities([text]) - expected[i]).max(initial=0.0))
        worst = max(worst, alone)
    if not worst <= PARITY_TOLERANCE:
        raise ExportError(
            f"the model format's probabilities differ from the pipeline's by up to {worst:.2g} "
            f"(allowed {PARITY_TOLERANCE:g}): the pipeline has a part the format does not "
            "reproduce"
        )


@contextmanager
def _features_in_float64(pipeline: Pipeline) -> Iterator[None]:
    vectorizers = _vectorizers(pipeline.named_steps["features"])
    dtypes = [getattr(vectorizer, "dtype", None) for vectorizer in vectorizers]
    try:
        for vectorizer, dtype in zip(vectorizers, dtypes, strict=True):
            if dtype is not None:
                vectorizer.dtype = np.float64
        yield
    finally:
        for vectorizer, dtype in zip(vectorizers, dtypes, strict=True):
            if dtype is not None:
                vectorizer.dtype = dtype


def _vectorizers(features: Any) -> list[Any]:
    if isinstance(features, FeatureUnion):
        if features.transformer_weights:
            raise ExportError("a FeatureUnion with transformer_weights")
        return [vectorizer for _, vectorizer in features.transformer_list]
    return [features]


def _part(vectorizer: Any, i: int) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One vectorizer's config and arrays."""
    if not isinstance(vectorizer, TfidfVectorizer) or not hasattr(vectorizer, "vocabulary_"):
        raise ExportError(f"expected a fitted TfidfVectorizer, got {vectorizer!r}")
    analyzer = vectorizer.analyzer
    if analyzer not in model_format.ANALYZERS or vectorizer.input != "content":
        raise ExportError(f"analyzer {analyzer!r} on input {vectorizer.input!r}")
    if vectorizer.tokenizer is not None or vectorizer.stop_words is not None:
        raise ExportError("a custom tokenizer or stop words")
    if vectorizer.norm not in model_format.NORMS:
        raise ExportError(f"norm {vectorizer.norm!r}")
    grams = [""] * len(vectorizer.vocabulary_)
    for gram, column in vectorizer.vocabulary_.items():
        grams[column] = gram
    part: dict[str, Any] = {
        "analyzer": analyzer,
        "normalizer": _normalizer(vectorizer),
        "ngram_range": [int(n) for n in vectorizer.ngram_range],
        "binary": bool(vectorizer.binary),
        "sublinear_tf": bool(vectorizer.sublinear_tf),
        "idf": bool(vectorizer.use_idf),
        "norm": vectorizer.norm,
        "columns": len(grams),
    }
    arrays = {f"vocabulary_{i}": encode_strings(grams)}
    if analyzer == "word":
        part["token_pattern"] = vectorizer.token_pattern
        samples = re.findall(vectorizer.token_pattern, "a b, c. d! e? f\tg\nh")
        if any(any(c.isspace() for c in str(token)) for token in samples):
            raise ExportError("a token pattern whose tokens hold spaces")
        tokens, keys, columns, longest = _word_index(grams)
        part |= {"tokens": len(tokens), "longest": longest}
        arrays[f"tokens_{i}"] = encode_strings(tokens)
        if keys is not None:  # else the scorer looks n-grams up by string
            arrays[f"keys_{i}"], arrays[f"columns_{i}"] = keys, columns
    return part, arrays


def _normalizer(vectorizer: TfidfVectorizer) -> str:
    preprocessor = vectorizer.preprocessor
    if preprocessor is None:
        if vectorizer.strip_accents:
            raise ExportError(f"strip_accents={vectorizer.strip_accents!r}")
        return "lowercase" if vectorizer.lowercase else "none"
    name = _NORMALIZERS.get(preprocessor) or _NORMALIZER_NAMES.get(
        getattr(preprocessor, "__name__", "")
    )
    if name is None:
        raise ExportError(f"an unknown preprocessor {preprocessor!r}")
    return name


def _word_index(grams: list[str]) -> tuple[list[str], np.ndarray | None, np.ndarray, int]:
    """Tokens (id = position + 1), the sorted integer keys of the n-grams and their columns,
    and the longest n-gram's length. No keys (None) if they would overflow int64."""
    split = [gram.split(" ") for gram in grams]
    token_ids: dict[str, int] = {}
    for tokens in split:
        for token in tokens:
            if token not in token_ids:
                token_ids[token] = len(token_ids) + 1
    base = len(token_ids) + 1
    longest = max((len(tokens) for tokens in split), default=1)
    columns = np.arange(len(grams), dtype=np.int32)
    if base**longest >= 2**63:
        return list(token_ids), None, columns, longest
    keys = np.empty(len(grams), dtype=np.int64)
    for j, tokens in enumerate(split):
        key = 0
        for token in tokens:
            key = key * base + token_ids[token]
        keys[j] = key
    order = np.argsort(keys)
    return list(token_ids), keys[order], columns[order], longest


def log_model(
    files: ModelFiles, signature: Any, input_example: Any, registered_model_name: str | None
) -> Any:
    """Log the format as an MLflow pyfunc model in the active run (and register it): the
    format's own module is the models-from-code entry, so the loader travels with the model."""
    return mlflow.pyfunc.log_model(
        name=MODEL_ARTIFACT,
        python_model=model_format.__file__,
        artifacts={CONFIG_ARTIFACT: str(files.config), ARRAYS_ARTIFACT: str(files.arrays)},
        signature=signature,
        input_example=input_example,
        pip_requirements=[f"{pkg}=={installed_version(pkg)}" for pkg in MODEL_REQUIREMENTS],
        registered_model_name=registered_model_name,
    )


def repackage(model_uri: str, tracking_uri: str) -> str:
    """Register a version logged before the format (a pickled pipeline and the training code
    it needs) as a new version in the format, in the same run, with the same tags and
    description; return its URI. Nothing is promoted."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        ref = resolve(client, model_uri)
    except ModelUnavailable as exc:
        raise RepackageError(str(exc)) from exc
    if ref.name is None or ref.version is None:
        raise RepackageError(f"{model_uri}: name a registered version, models:/NAME/VERSION")
    old = client.get_model_version(ref.name, ref.version)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = model_format.download(ref.load_uri, Path(tmp) / "old")
        if model_format.logged_files(model_dir) is not None:
            raise RepackageError(f"{ref.load_uri} is already in the model format")
        pipeline = getattr(
            model_format.load_pyfunc(model_dir).unwrap_python_model(), "pipeline", None
        )
        if not isinstance(pipeline, Pipeline):
            raise RepackageError(f"{ref.load_uri} holds no EmotiTrack scikit-learn pipeline")
        logged = mlflow.models.Model.load(str(model_dir))
        example = logged.load_input_example(str(model_dir))
        try:
            exported = to_format(pipeline, check_texts=_reference_texts(ref.run_id))
        except ExportError as exc:
            raise RepackageError(f"{ref.load_uri}: {exc}") from exc
        files = model_format.write(Path(tmp) / "format", exported.config, exported.arrays)
        with _run(ref.run_id):
            info = log_model(files, logged.signature, example, ref.name)
    version = str(info.registered_model_version)
    for key, value in old.tags.items():
        client.set_model_version_tag(ref.name, version, key, value)
    client.set_model_version_tag(ref.name, version, "repackaged_from", ref.version)
    note = f"Repackaged from version {ref.version} in model format {FORMAT_VERSION}."
    client.update_model_version(
        ref.name, version, description=f"{old.description or ''} {note}".strip()
    )
    return f"models:/{ref.name}/{version}"


def _reference_texts(run_id: str | None) -> list[str]:
    """Held-out texts the version's run logged (its reference sample), for the parity check."""
    if run_id is None:
        return []
    try:
        return [str(t) for t in load_reference(run_id)["text"].tolist()[:500]]
    except (OSError, mlflow.exceptions.MlflowException, KeyError):
        return []  # an older run without one: the probe texts remain


@contextmanager
def _run(run_id: str | None) -> Iterator[None]:
    """The version's own run (its metrics, parameters and reference sample stay its), or a new
    one for a version logged outside any run."""
    with mlflow.start_run(run_id=run_id):
        yield
