"""Probabilities of a fitted EmotiTrack pipeline computed with a few numpy calls per batch.

The served pipeline is TF-IDF → LogisticRegression (NB ratios and temperature already folded into
the coefficients), so a text's logits are sums of ``tfidf(ngram) · w(ngram)`` over its known
n-grams. ``pipeline.predict_proba`` computes the same through a dict probe per n-gram string,
scipy.sparse and scikit-learn's input checks. ``compile_scorer`` reads the fitted parameters
once and returns a function giving the same probabilities (tested to 1e-6), or None for a
pipeline it does not reproduce, which then goes through ``predict_proba``. Word and character
n-grams are looked up in integer indexes built at training time (``NgramIndex``,
``CharNgramIndex``). Measured on the IMDB model (``benchmarks/serving_benchmark.py`` prints
it as the in-process line): see the README.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from training.features import NBLogCountRatio

Scorer = Callable[[Sequence[str]], np.ndarray]
Counts = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, columns, counts of known n-grams


@dataclass(frozen=True)
class NgramIndex:
    """A word vectorizer's vocabulary keyed by integers: each n-gram is the base-``base`` number
    of its tokens' ids, and the keys are sorted, so a batch's n-grams are looked up with one
    ``np.searchsorted``. Probing the dict of ~860k n-gram strings instead, hashing every new
    string, cost ~0.4 µs per n-gram: ~270 µs of a review's ~600 µs (IMDB model)."""

    token_ids: dict[str, int]  # from 1; 0 stands for a token in no n-gram of the vocabulary
    base: int
    keys: np.ndarray  # sorted int64
    columns: np.ndarray  # the vectorizer's column of each key
    longest: int  # tokens in the longest n-gram: longer windows are never looked up


def ngram_index(vocabulary: dict[str, int]) -> NgramIndex | None:
    """The index of a fitted word-n-gram vocabulary; None if its keys would overflow int64."""
    grams = [gram.split(" ") for gram in vocabulary]
    token_ids: dict[str, int] = {}
    for tokens in grams:
        for token in tokens:
            if token not in token_ids:
                token_ids[token] = len(token_ids) + 1
    base = len(token_ids) + 1
    longest = max((len(tokens) for tokens in grams), default=1)
    if base**longest >= 2**63:
        return None
    keys, columns = _sorted_keys(grams, token_ids, base, vocabulary)
    return NgramIndex(token_ids, base, keys, columns, longest)


def _sorted_keys(
    grams: list[Any], ids: dict[str, int], base: int, vocabulary: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Each n-gram's key (the base-``base`` number of its tokens' or characters' ids), sorted,
    and the vocabulary column of each."""
    keys = np.empty(len(grams), dtype=np.int64)
    for i, units in enumerate(grams):
        key = 0
        for unit in units:
            key = key * base + ids[unit]
        keys[i] = key
    order = np.argsort(keys)
    columns = np.fromiter(vocabulary.values(), dtype=np.int64, count=len(vocabulary))
    return keys[order], columns[order]


@dataclass(frozen=True)
class CharNgramIndex:
    """A ``char_wb`` vectorizer's vocabulary keyed by integers, as ``NgramIndex`` for words: each
    n-gram is the base-``base`` number of its characters' ids (a character's id is its position
    in ``code_points`` + 1). Probing the dict per character n-gram made a tweet's character
    features cost more than all the rest of its scoring together."""

    code_points: np.ndarray  # sorted uint32: every character of the vocabulary's n-grams
    base: int
    keys: np.ndarray  # sorted int64
    columns: np.ndarray
    longest: int


def char_ngram_index(vocabulary: dict[str, int]) -> CharNgramIndex | None:
    """The index of a fitted ``char_wb`` vocabulary; None if its keys would overflow int64 or an
    n-gram holds NUL (the separator the counter puts between words)."""
    characters = sorted({c for gram in vocabulary for c in gram})
    if "\x00" in characters:
        return None
    ids = {c: i for i, c in enumerate(characters, start=1)}
    base = len(characters) + 1
    longest = max((len(gram) for gram in vocabulary), default=1)
    if base**longest >= 2**63:
        return None
    keys, columns = _sorted_keys(list(vocabulary), ids, base, vocabulary)
    code_points = np.array([ord(c) for c in characters], dtype=np.uint32)
    return CharNgramIndex(code_points, base, keys, columns, longest)


def attach_ngram_indexes(pipeline: Pipeline) -> None:
    """Build the index of every vectorizer at training time, so it is pickled with the model:
    building it takes ~2 s for IMDB, which would otherwise add to the API's start-up."""
    for vectorizer in _vectorizers(pipeline.named_steps.get("features")):
        if isinstance(vectorizer, TfidfVectorizer) and _indexable(vectorizer):
            vectorizer.ngram_index_ = ngram_index(vectorizer.vocabulary_)
        elif isinstance(vectorizer, TfidfVectorizer) and _char_indexable(vectorizer):
            vectorizer.ngram_index_ = char_ngram_index(vectorizer.vocabulary_)


def compile_scorer(pipeline: Pipeline) -> Scorer | None:
    """A fast equivalent of ``probabilities(pipeline, texts)``; None if the pipeline has steps
    this module does not reproduce exactly."""
    steps = dict(pipeline.steps)
    clf = steps.get("clf")
    if set(steps) != {"features", "nb", "clf"} or not isinstance(clf, LogisticRegression):
        return None
    features = _features_of(steps["features"])
    if features is None:
        return None
    coef = np.asarray(clf.coef_, dtype=np.float64)
    nb = steps["nb"]
    if isinstance(nb, NBLogCountRatio):  # versions saved before the ratios were folded in
        coef = coef * nb.ratio_
    elif nb not in ("passthrough", None):
        return None
    # Feature-major, so one fancy index per batch gathers every class's weights.
    weights = np.ascontiguousarray(coef.T)
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    binary = weights.shape[1] == 1

    def score(texts: Sequence[str]) -> np.ndarray:
        rows, columns, values = _tfidf(features, texts)
        contributions = values[:, None] * weights[columns]
        logits = intercept + np.stack(
            [
                np.bincount(rows, weights=contributions[:, k], minlength=len(texts))
                for k in range(weights.shape[1])
            ],
            axis=1,
        )
        if binary:
            positive = expit(logits[:, 0])
            return np.stack([1.0 - positive, positive], axis=1)
        return np.asarray(softmax(logits, axis=1))

    return score if _agrees(score, pipeline) else None


def _agrees(score: Scorer, pipeline: Pipeline) -> bool:
    """A last check against what this module cannot see (a token pattern matching spaces, a
    custom preprocessor returning bytes): the pipeline's own probabilities on texts made of its
    vocabulary must come out the same."""
    step = pipeline.named_steps["features"]
    vocabulary = [gram for v in _vectorizers(step) for gram in list(v.vocabulary_)[:60]]
    probes = [
        " ".join(vocabulary),
        ", ".join(reversed(vocabulary[:30])),
        "Not good, but great! Really.",
    ]
    expected = pipeline.predict_proba(probes).astype(np.float64)
    expected /= expected.sum(axis=1, keepdims=True)
    return bool(np.allclose(score(probes), expected, atol=1e-6))


@dataclass(frozen=True)
class _Features:
    """One fitted vectorizer: how it counts a batch's n-grams and how it weighs the counts."""

    count: Callable[[Sequence[str]], Counts]
    offset: int  # where its columns start in the classifier's input
    binary: bool
    sublinear_tf: bool
    idf: np.ndarray | None
    l2: bool


def _vectorizers(step: Any) -> list[Any]:
    if isinstance(step, FeatureUnion):
        return [vectorizer for _, vectorizer in step.transformer_list]
    return [step]


def _indexable(vectorizer: TfidfVectorizer) -> bool:
    """Word n-grams of text built by the vectorizer's own token pattern, whose tokens hold no
    space (else an n-gram's tokens could not be told apart by splitting it)."""
    if vectorizer.analyzer != "word" or vectorizer.input != "content":
        return False
    if vectorizer.tokenizer is not None or vectorizer.stop_words is not None:
        return False
    tokens = re.findall(vectorizer.token_pattern, "a b, c. d! e? f\tg\nh")
    return not any(any(c.isspace() for c in str(token)) for token in tokens)


def _char_indexable(vectorizer: TfidfVectorizer) -> bool:
    """``char_wb`` n-grams whose shortest size is at most 3: a padded word (`` w ``) then always
    yields every window that fits it, which is what the index counts. (scikit-learn emits a
    word shorter than the smallest size whole, once.)"""
    return (
        vectorizer.analyzer == "char_wb"
        and vectorizer.input == "content"
        and vectorizer.ngram_range[0] <= 3
    )


def _saved_index(vectorizer: TfidfVectorizer) -> NgramIndex | CharNgramIndex | None:
    """The index pickled with the vectorizer, rebuilt if it is missing (a version saved before
    it existed) or stale; None for vectorizers no index covers."""
    kind: type[NgramIndex] | type[CharNgramIndex]
    build: Callable[[dict[str, int]], NgramIndex | CharNgramIndex | None]
    if _indexable(vectorizer):
        kind, build = NgramIndex, ngram_index
    elif _char_indexable(vectorizer):
        kind, build = CharNgramIndex, char_ngram_index
    else:
        return None
    index = getattr(vectorizer, "ngram_index_", None)
    fresh = (
        isinstance(index, kind)
        and len(index.keys) == len(vectorizer.vocabulary_)  # not refitted since
        and hasattr(index, "longest")  # not built by an earlier version of this module
    )
    return index if fresh else build(vectorizer.vocabulary_)


def _features_of(step: Any) -> list[_Features] | None:
    if isinstance(step, FeatureUnion) and step.transformer_weights:
        return None
    features, offset = [], 0
    for vectorizer in _vectorizers(step):
        if not isinstance(vectorizer, TfidfVectorizer) or vectorizer.norm not in ("l2", None):
            return None
        index = _saved_index(vectorizer)
        if isinstance(index, NgramIndex):
            count = _indexed_counter(vectorizer, index)
        elif isinstance(index, CharNgramIndex):
            count = _char_indexed_counter(vectorizer, index)
        else:
            count = _dict_counter(vectorizer)
        features.append(
            _Features(
                count=count,
                offset=offset,
                binary=vectorizer.binary,
                sublinear_tf=vectorizer.sublinear_tf,
                idf=np.asarray(vectorizer.idf_, dtype=np.float64) if vectorizer.use_idf else None,
                l2=vectorizer.norm == "l2",
            )
        )
        offset += len(vectorizer.vocabulary_)
    return features


def _indexed_counter(
    vectorizer: TfidfVectorizer, index: NgramIndex
) -> Callable[[Sequence[str]], Counts]:
    """Counts through the integer index: token ids in Python, everything after in numpy."""
    preprocess, tokenize = vectorizer.build_preprocessor(), vectorizer.build_tokenizer()
    min_n, max_n = vectorizer.ngram_range[0], min(vectorizer.ngram_range[1], index.longest)
    get, width = index.token_ids.get, len(vectorizer.vocabulary_)

    def count(texts: Sequence[str]) -> Counts:
        ids: list[int] = []
        lengths = []
        for text in texts:
            tokens = tokenize(preprocess(text))
            ids.extend([get(token, 0) for token in tokens])
            ids.append(0)  # a separator: no n-gram spans two texts
            lengths.append(len(tokens) + 1)
        token_ids = np.asarray(ids, dtype=np.int64)
        text_of = np.repeat(np.arange(len(texts)), lengths)
        return _count_known_windows(token_ids, text_of, index, min_n, max_n, width)

    return count


def _char_indexed_counter(
    vectorizer: TfidfVectorizer, index: CharNgramIndex
) -> Callable[[Sequence[str]], Counts]:
    """Counts ``char_wb`` n-grams through the integer index. scikit-learn pads each word with a
    space and takes the windows inside it; here the padded words are joined with NUL (id 0, in
    no n-gram), so the windows of one string are exactly those, and the string's characters
    become ids with one ``np.searchsorted``."""
    preprocess = vectorizer.build_preprocessor()
    min_n, max_n = vectorizer.ngram_range[0], min(vectorizer.ngram_range[1], index.longest)
    points, last = index.code_points, len(index.code_points) - 1
    width = len(vectorizer.vocabulary_)

    def count(texts: Sequence[str]) -> Counts:
        pieces, lengths = [], []
        for text in texts:
            words = preprocess(text).split()
            piece = " " + " \x00 ".join(words) + " \x00" if words else "\x00"
            pieces.append(piece)
            lengths.append(len(piece))
        codes = np.frombuffer("".join(pieces).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        position = np.minimum(np.searchsorted(points, codes), last)
        known = points[position] == codes
        char_ids = np.where(known, position + 1, 0).astype(np.int64)
        text_of = np.repeat(np.arange(len(texts)), lengths)
        return _count_known_windows(char_ids, text_of, index, min_n, max_n, width)

    return count


def _count_known_windows(
    ids: np.ndarray,
    text_of: np.ndarray,
    index: NgramIndex | CharNgramIndex,
    min_n: int,
    max_n: int,
    width: int,
) -> Counts:
    """Count the windows of ``min_n``..``max_n`` ids that are in the index, per text. Id 0 is
    unknown or a separator: no window holding one is in the vocabulary. ``width``: the
    vectorizer's number of columns."""
    known = ids > 0
    key, usable = ids, known
    keys, rows = [], []
    for n in range(1, max_n + 1):
        if n > 1:  # the windows of n ids from those of n - 1: one multiply-add, not n - 1
            if len(key) < 2:
                break
            key = key[:-1] * index.base + ids[n - 1 :]
            usable = usable[:-1] & known[n - 1 :]
        if n >= min_n:
            keys.append(key[usable])
            rows.append(text_of[: len(key)][usable])
    if not keys:  # no window long enough: no known n-gram
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    wanted, row = np.concatenate(keys), np.concatenate(rows)
    # Sorted, successive binary searches touch nearby keys: of a review's ~330 µs here, ~70 µs
    # less with the IMDB model's 950k keys, the sort included.
    order = np.argsort(wanted)
    wanted, row = wanted[order], row[order]
    position = np.minimum(np.searchsorted(index.keys, wanted), len(index.keys) - 1)
    hit = index.keys[position] == wanted
    cells, counts = np.unique(row[hit] * width + index.columns[position[hit]], return_counts=True)
    return cells // width, cells % width, counts


def _dict_counter(vectorizer: TfidfVectorizer) -> Callable[[Sequence[str]], Counts]:
    """Counts through the vocabulary dict, for vectorizers no index covers (a custom tokenizer,
    ``char`` rather than ``char_wb``, keys that would overflow int64)."""
    analyze, lookup = vectorizer.build_analyzer(), vectorizer.vocabulary_.get

    def count(texts: Sequence[str]) -> Counts:
        columns: list[int] = []
        counts: list[int] = []
        lengths: list[int] = []
        for text in texts:
            row = Counter([j for j in map(lookup, analyze(text)) if j is not None])
            columns.extend(row.keys())
            counts.extend(row.values())
            lengths.append(len(row))
        return (
            np.repeat(np.arange(len(texts)), lengths),
            np.asarray(columns, dtype=np.int64),
            np.asarray(counts, dtype=np.int64),
        )

    return count


def _tfidf(features: list[_Features], texts: Sequence[str]) -> Counts:
    """The TF-IDF matrix as (row, column, value) triples, each vectorizer l2-normalised on its
    own as in a FeatureUnion."""
    all_rows, all_columns, all_values = [], [], []
    for part in features:
        rows, columns, counts = part.count(texts)
        values = counts.astype(np.float64)
        if part.binary:
            values.fill(1.0)
        if part.sublinear_tf:
            values = np.log(values) + 1.0
        if part.idf is not None:
            values *= part.idf[columns]
        if part.l2:
            norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=len(texts)))
            values /= norms[rows]  # rows with no known n-gram contribute no values at all
        all_rows.append(rows)
        all_columns.append(columns + part.offset)
        all_values.append(values)
    if len(features) == 1:
        return all_rows[0], all_columns[0], all_values[0]
    return np.concatenate(all_rows), np.concatenate(all_columns), np.concatenate(all_values)
