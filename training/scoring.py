"""Probabilities of a fitted EmotiTrack pipeline computed with a few numpy calls per batch.

The served pipeline is TF-IDF → LogisticRegression (NB ratios and temperature already folded into
the coefficients), so a text's logits are sums of ``tfidf(ngram) · w(ngram)`` over its known
n-grams. ``pipeline.predict_proba`` computes the same through a dict probe per n-gram string,
scipy.sparse and scikit-learn's input checks. ``compile_scorer`` reads the fitted parameters
once and returns a function giving the same probabilities (tested to 1e-6), or None for a
pipeline it does not reproduce, which then goes through ``predict_proba``. Word n-grams are
looked up in an integer index built at training time (``NgramIndex``); character n-grams are
counted word by word, each word's known columns remembered; the vectorizers of a FeatureUnion
share one text preparation and one counting and weighing pass. Measured on the IMDB model
(``benchmarks/serving_benchmark.py`` prints it as the in-process line): see the README.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
from scipy.special import expit
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
    keys = np.empty(len(grams), dtype=np.int64)
    for i, tokens in enumerate(grams):
        key = 0
        for token in tokens:
            key = key * base + token_ids[token]
        keys[i] = key
    order = np.argsort(keys)
    columns = np.fromiter(vocabulary.values(), dtype=np.int64, count=len(vocabulary))
    return NgramIndex(token_ids, base, keys[order], columns[order], longest)


@dataclass(frozen=True)
class CharNgramIndex:
    """Kept so that versions registered with it still unpickle: character n-grams are now counted
    word by word (``_char_wb_counter``) and no longer need an index."""

    code_points: np.ndarray
    base: int
    keys: np.ndarray
    columns: np.ndarray
    longest: int


def attach_ngram_indexes(pipeline: Pipeline) -> None:
    """Build the index of every word vectorizer at training time, so it is pickled with the
    model: building it takes ~2 s for IMDB, which would otherwise add to the API's start-up."""
    for vectorizer in _vectorizers(pipeline.named_steps.get("features")):
        if isinstance(vectorizer, TfidfVectorizer) and _indexable(vectorizer):
            vectorizer.ngram_index_ = ngram_index(vectorizer.vocabulary_)


def compile_scorer(pipeline: Pipeline) -> Scorer | None:
    """A fast equivalent of ``probabilities(pipeline, texts)``; None if the pipeline has steps
    this module does not reproduce exactly."""
    steps = dict(pipeline.steps)
    clf = steps.get("clf")
    if set(steps) != {"features", "nb", "clf"} or not isinstance(clf, LogisticRegression):
        return None
    parts = _parts_of(steps["features"])
    if parts is None:
        return None
    coef = np.asarray(clf.coef_, dtype=np.float64)
    nb = steps["nb"]
    if isinstance(nb, NBLogCountRatio):  # versions saved before the ratios were folded in
        coef = coef * nb.ratio_
    elif nb not in ("passthrough", None):
        return None
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    classes = len(clf.classes_)
    weighting = _Weighting.of(parts, coef)

    def score(texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, classes))
        rows, values, weights = _tfidf(parts, weighting, texts)
        if len(texts) == 1:  # one matrix-vector product instead of a bincount per class
            logits = (intercept + values @ weights)[None, :]
        else:
            contributions = values[:, None] * weights
            logits = intercept + np.stack(
                [
                    np.bincount(rows, weights=contributions[:, k], minlength=len(texts))
                    for k in range(weights.shape[1])
                ],
                axis=1,
            )
        return _probabilities(logits)

    return score if _agrees(score, pipeline) else None


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """LogisticRegression's ``predict_proba`` from its logits: the sigmoid for two classes, else
    the softmax (written out: scipy's costs ~15 µs of call overhead per request)."""
    if logits.shape[1] == 1:
        positive = expit(logits[:, 0])
        return np.stack([1.0 - positive, positive], axis=1)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


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


Occurrences = tuple[np.ndarray, np.ndarray]  # row and column of every known n-gram occurrence


@dataclass(frozen=True)
class _Part:
    """One fitted vectorizer: how its texts are prepared and where its known n-grams occur.
    Parts with the same ``prepared_by`` share one preparation pass (the word and character
    vectorizers of a preset normalise text the same way)."""

    prepared_by: Any
    prepare: Callable[[str], str]
    occurrences: Callable[[Sequence[str]], Occurrences]  # of prepared texts
    width: int  # the vectorizer's columns; they follow those of the parts before it
    binary: bool
    sublinear_tf: bool
    idf: np.ndarray | None
    l2: bool


@dataclass(frozen=True)
class _Weighting:
    """The TF-IDF settings of all parts and the classifier's weights, so that one pass weighs
    every part. Each column's idf and class weights sit side by side: one gather fetches both."""

    starts: np.ndarray  # first column of each part
    width: int
    idf_and_weights: np.ndarray  # per column: idf (1 for parts without), then one weight per class
    # Per part; tuples, not arrays: asking numpy whether all are true costs more than the answer.
    binary: tuple[bool, ...]
    sublinear_tf: tuple[bool, ...]
    l2: tuple[bool, ...]
    same_tf: bool  # every part binary or none, sublinear or none

    @classmethod
    def of(cls, parts: list[_Part], coef: np.ndarray) -> _Weighting:
        widths = [part.width for part in parts]
        idf = [np.ones(part.width) if part.idf is None else part.idf for part in parts]
        table = np.empty((sum(widths), 1 + len(coef)), dtype=np.float64)
        table[:, 0] = np.concatenate(idf)
        table[:, 1:] = coef.T
        return cls(
            starts=np.cumsum([0, *widths[:-1]]),
            width=sum(widths),
            idf_and_weights=table,
            binary=tuple(part.binary for part in parts),
            sublinear_tf=tuple(part.sublinear_tf for part in parts),
            l2=tuple(part.l2 for part in parts),
            same_tf=len({(part.binary, part.sublinear_tf) for part in parts}) == 1,
        )


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


def _saved_index(vectorizer: TfidfVectorizer) -> NgramIndex | None:
    """The word index pickled with the vectorizer, rebuilt if it is missing (a version saved
    before it existed) or stale."""
    index = getattr(vectorizer, "ngram_index_", None)
    fresh = (
        isinstance(index, NgramIndex)
        and len(index.keys) == len(vectorizer.vocabulary_)  # not refitted since
        and hasattr(index, "longest")  # not built by an earlier version of this module
    )
    return index if fresh else ngram_index(vectorizer.vocabulary_)


def _parts_of(step: Any) -> list[_Part] | None:
    if isinstance(step, FeatureUnion) and step.transformer_weights:
        return None
    parts, offset = [], 0
    vectorizers = _vectorizers(step)
    with_characters = any(getattr(v, "analyzer", None) == "char_wb" for v in vectorizers)
    words = _frequent_words(vectorizers) if with_characters else []
    for vectorizer in vectorizers:
        if not isinstance(vectorizer, TfidfVectorizer) or vectorizer.norm not in ("l2", None):
            return None
        index = _saved_index(vectorizer) if _indexable(vectorizer) else None
        prepared_by: Any = (vectorizer.preprocessor, vectorizer.lowercase, vectorizer.strip_accents)
        prepare = vectorizer.build_preprocessor()
        if index is not None:
            occurrences = _indexed_counter(vectorizer, index, offset)
        elif vectorizer.analyzer == "char_wb" and vectorizer.input == "content":
            occurrences = _char_wb_counter(vectorizer, offset, words)
        else:  # its analyzer prepares the raw text itself
            prepared_by, prepare = None, str
            occurrences = _dict_counter(vectorizer, offset)
        parts.append(
            _Part(
                prepared_by=prepared_by,
                prepare=prepare,
                occurrences=occurrences,
                width=len(vectorizer.vocabulary_),
                binary=vectorizer.binary,
                sublinear_tf=vectorizer.sublinear_tf,
                idf=np.asarray(vectorizer.idf_, dtype=np.float64) if vectorizer.use_idf else None,
                l2=vectorizer.norm == "l2",
            )
        )
        offset += len(vectorizer.vocabulary_)
    return parts


def _frequent_words(vectorizers: list[Any]) -> list[str]:
    """The most frequent single words of the word vectorizers' vocabularies (by idf), most
    frequent first: the words whose character n-grams are worth working out before any request."""
    scored: dict[str, float] = {}
    for vectorizer in vectorizers:
        if isinstance(vectorizer, TfidfVectorizer) and vectorizer.analyzer == "word":
            idf = vectorizer.idf_ if vectorizer.use_idf else np.zeros(len(vectorizer.vocabulary_))
            for gram, column in vectorizer.vocabulary_.items():
                if " " not in gram:
                    scored[gram] = min(scored.get(gram, np.inf), float(idf[column]))
    return sorted(scored, key=scored.__getitem__)[:CHAR_WORDS_WORKED_OUT_AHEAD]


def _rows(lengths: list[int]) -> np.ndarray:
    """The row of each of ``sum(lengths)`` entries, ``lengths[i]`` of them in row i."""
    if len(lengths) == 1:
        return np.zeros(lengths[0], dtype=np.int64)
    return np.repeat(np.arange(len(lengths)), lengths)


def _indexed_counter(
    vectorizer: TfidfVectorizer, index: NgramIndex, offset: int
) -> Callable[[Sequence[str]], Occurrences]:
    """Word n-grams through the integer index: token ids in Python, everything after in numpy."""
    tokenize = vectorizer.build_tokenizer()
    min_n, max_n = vectorizer.ngram_range[0], min(vectorizer.ngram_range[1], index.longest)
    get = index.token_ids.get
    columns = index.columns + offset  # the scorer's column of each key

    def occurrences(texts: Sequence[str]) -> Occurrences:
        ids: list[int] = []
        lengths = []
        for text in texts:
            tokens = tokenize(text)
            ids.extend([get(token, 0) for token in tokens])
            ids.append(0)  # a separator: no n-gram spans two texts
            lengths.append(len(tokens) + 1)
        token_ids = np.asarray(ids, dtype=np.int64)
        return _known_windows(token_ids, _rows(lengths), index, columns, min_n, max_n)

    return occurrences


def _known_windows(
    ids: np.ndarray,
    text_of: np.ndarray,
    index: NgramIndex,
    columns: np.ndarray,
    min_n: int,
    max_n: int,
) -> Occurrences:
    """The windows of ``min_n``..``max_n`` ids that are in the index: their rows and
    ``columns`` (one per key). Id 0 is unknown or a separator: no window holding one is in the
    vocabulary."""
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
        return empty, empty
    wanted, row = np.concatenate(keys), np.concatenate(rows)
    # Sorted, successive binary searches touch nearby keys: of a review's ~330 µs here, ~70 µs
    # less with the IMDB model's 950k keys, the sort included.
    order = np.argsort(wanted)
    wanted, row = wanted[order], row[order]
    position = np.minimum(np.searchsorted(index.keys, wanted), len(index.keys) - 1)
    hit = index.keys[position] == wanted
    return row[hit], columns[position[hit]]


# Words whose character n-gram columns are remembered (~0.4 kB each). Past it the memo starts
# afresh from the words worked out ahead: simpler than LRU bookkeeping.
CHAR_WORD_MEMO_SIZE = 50_000
# The most frequent words of the model's word vocabulary are worked out when the scorer is
# compiled (~0.1 s), so that a new server's first requests do not pay for them.
CHAR_WORDS_WORKED_OUT_AHEAD = 20_000


def _char_wb_counter(
    vectorizer: TfidfVectorizer, offset: int, ahead: list[str]
) -> Callable[[Sequence[str]], Occurrences]:
    """``char_wb`` n-grams, word by word. scikit-learn takes them inside each whitespace-separated
    word padded with one space, so a text's n-grams are its words' n-grams put together, and a
    word's known columns can be remembered: most words of a request were in an earlier one.
    Building a tweet's ~300 character n-grams in numpy cost more than all the rest of its
    scoring; with the memo it is a dict probe per word. ``ahead``: words to work out now."""
    lookup = vectorizer.vocabulary_.get
    min_n, max_n = vectorizer.ngram_range
    windows_by_length: dict[int, Callable[[str], tuple[str, ...]]] = {}

    def columns_of(word: str) -> np.ndarray:
        padded = f" {word} "
        windows = windows_by_length.get(len(padded))
        if windows is None:
            windows = _window_getter(len(padded), min_n, max_n)
            if len(padded) <= _LONGEST_WORD_WITH_A_GETTER:
                windows_by_length[len(padded)] = windows
        known = [j for j in map(lookup, windows(padded)) if j is not None]
        return np.array(known, dtype=np.int64) + offset

    worked_out = {word: columns_of(word) for word in ahead}
    memo = dict(worked_out)

    def occurrences(texts: Sequence[str]) -> Occurrences:
        known: list[np.ndarray] = []
        lengths = []
        for text in texts:
            length = 0
            for word in text.split():
                columns = memo.get(word)
                if columns is None:
                    if len(memo) >= CHAR_WORD_MEMO_SIZE:
                        memo.clear()
                        memo.update(worked_out)
                    columns = memo[word] = columns_of(word)
                known.append(columns)
                length += len(columns)
            lengths.append(length)
        columns = np.concatenate(known) if known else np.zeros(0, dtype=np.int64)
        return _rows(lengths), columns

    return occurrences


_LONGEST_WORD_WITH_A_GETTER = 64  # characters, padded


def _window_getter(length: int, min_n: int, max_n: int) -> Callable[[str], tuple[str, ...]]:
    """All ``char_wb`` windows of a padded word of ``length`` characters, in one C call
    (``operator.itemgetter`` of slices): slicing in a Python loop cost three times as much, and
    was most of what a word never seen before costs."""
    spans = []
    for n in range(min_n, max_n + 1):
        if n >= length:  # scikit-learn takes a word this short whole, once
            spans.append(slice(0, length))
            break
        spans.extend(slice(i, i + n) for i in range(length - n + 1))
    if len(spans) == 1:  # itemgetter of one item returns it bare, not in a tuple
        only = spans[0]
        return lambda padded: (padded[only],)
    return itemgetter(*spans)


def _dict_counter(
    vectorizer: TfidfVectorizer, offset: int
) -> Callable[[Sequence[str]], Occurrences]:
    """Occurrences through the vocabulary dict, for vectorizers nothing above covers (a custom
    tokenizer, ``char`` rather than ``char_wb``, keys that would overflow int64)."""
    analyze, lookup = vectorizer.build_analyzer(), vectorizer.vocabulary_.get

    def occurrences(texts: Sequence[str]) -> Occurrences:
        columns: list[int] = []
        lengths: list[int] = []
        for text in texts:
            row = [j for j in map(lookup, analyze(text)) if j is not None]
            columns.extend(row)
            lengths.append(len(row))
        return _rows(lengths), np.asarray(columns, dtype=np.int64) + offset

    return occurrences


def _tfidf(
    parts: list[_Part], weighting: _Weighting, texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The TF-IDF matrix's nonzero cells, each part l2-normalised on its own as in a
    FeatureUnion: their rows, values and the class weights of their columns. The occurrences of
    all parts are counted and weighed in one pass."""
    prepared: dict[Any, list[str]] = {}
    all_rows, all_columns = [], []
    for part in parts:
        key = part.prepared_by if part.prepared_by is not None else id(part)
        if key not in prepared:
            prepared[key] = [part.prepare(text) for text in texts]
        rows, columns = part.occurrences(prepared[key])
        all_rows.append(rows)
        all_columns.append(columns)
    rows, columns, counts = _count(all_rows, all_columns, len(texts), weighting.width)
    values = counts.astype(np.float64)
    one_text, several_parts = len(texts) == 1, len(parts) > 1
    # Each cell's part, where parts are weighed differently or a batch is normalised.
    part_of = None
    if several_parts and (not weighting.same_tf or (not one_text and any(weighting.l2))):
        part_of = np.searchsorted(weighting.starts, columns, side="right") - 1
    _apply_tf(values, weighting.binary, weighting.sublinear_tf, part_of)
    # ``take`` rather than ``[columns]``: numpy's fancy indexing of rows cost ~12 µs for a
    # tweet's ~400 cells, ``take`` ~2 µs.
    idf_and_weights = weighting.idf_and_weights.take(columns, axis=0)
    values *= idf_and_weights[:, 0]
    if one_text and several_parts:
        _normalise_parts_of_one_text(values, columns, weighting)
    elif any(weighting.l2):
        segment = rows if part_of is None else rows * len(parts) + part_of
        squares = np.bincount(segment, weights=values * values, minlength=len(texts) * len(parts))
        norms = np.sqrt(squares)
        if not all(weighting.l2):
            norms.reshape(len(texts), len(parts))[:, ~np.asarray(weighting.l2)] = 1.0
        values /= norms[segment]  # rows with no known n-gram have no values at all
    return rows, values, idf_and_weights[:, 1:]


def _normalise_parts_of_one_text(
    values: np.ndarray, columns: np.ndarray, weighting: _Weighting
) -> None:
    """l2-normalise each part's cells of one text in place. Its cells are sorted by column, so
    each part's are one slice: a dot product per part instead of bincount over cell parts."""
    bounds = [0, *columns.searchsorted(weighting.starts[1:]).tolist(), len(columns)]
    for part, l2 in enumerate(weighting.l2):
        if l2:
            cells = values[bounds[part] : bounds[part + 1]]
            norm = math.sqrt(cells @ cells)
            if norm:
                cells /= norm


def _count(rows: list[np.ndarray], columns: list[np.ndarray], texts: int, width: int) -> Counts:
    """The distinct (row, column) cells among the occurrences and how often each occurs."""
    column = columns[0] if len(columns) == 1 else np.concatenate(columns)
    if texts == 1:  # every row is 0
        cells = column
    else:
        cells = (rows[0] if len(rows) == 1 else np.concatenate(rows)) * width + column
    cells = np.sort(cells)
    if not len(cells):
        return cells, cells, cells
    # Boundaries between runs of equal cells: where a run starts, and the end of the last one.
    bounds = np.empty(len(cells) + 1, dtype=bool)
    bounds[0] = bounds[-1] = True
    np.not_equal(cells[1:], cells[:-1], out=bounds[1:-1])
    starts = bounds.nonzero()[0]
    counts = starts[1:] - starts[:-1]
    cells = cells[starts[:-1]]
    if texts == 1:
        return np.zeros(len(cells), dtype=np.int64), cells, counts
    return cells // width, cells % width, counts


def _apply_tf(
    values: np.ndarray,
    binary: tuple[bool, ...],
    sublinear: tuple[bool, ...],
    part_of: np.ndarray | None,
) -> None:
    """Raw counts → binary or sublinear (1 + log) term frequencies, each part as it was fitted."""
    if all(binary):
        values.fill(1.0)
    elif any(binary) and part_of is not None:
        values[np.asarray(binary)[part_of]] = 1.0
    if all(sublinear):
        np.log(values, out=values)
        values += 1.0
    elif any(sublinear) and part_of is not None:
        chosen = np.asarray(sublinear)[part_of]
        values[chosen] = np.log(values[chosen]) + 1.0
