"""The EmotiTrack model format: a versioned JSON config and plain arrays, and the scorer that reads them.

A model is ``config.json`` (classes, how each feature part prepares text and cuts it into
n-grams, how counts are weighed) and ``arrays.npz`` (idf, the classifier's weights with the
Naive-Bayes ratios and the temperature folded in, the n-gram vocabulary and its integer index),
read with ``allow_pickle=False``. Nothing in it names a Python class, so a registered version
loads wherever this project's modules have moved since.

This file imports only the standard library and numpy (pandas and MLflow inside the functions
that need them) because it is also the model's MLflow loader: training logs it as the
models-from-code entry, MLflow copies it into every model and runs it under another module name
(end of file). In-process pyfunc users, ``mlflow models serve`` and ``spark_udf`` therefore score
with the same code as the API. It must import no other module of this project.

The scorer gives scikit-learn's ``predict_proba`` of the pipeline it was exported from (the
reference, ``training/export.py``; parity is tested to 1e-6) with a few numpy calls per batch:
word n-grams are looked up as integers in a sorted index, character n-grams word by word with a
memo, and all feature parts are counted and weighed in one pass.

Format version 1:

- ``config.json``: ``format`` ("emotitrack-sentiment"), ``format_version``, ``classes`` and
  ``parts``, one per feature part in column order: ``analyzer`` ("word" or "char_wb"),
  ``normalizer`` (a ``NORMALIZERS`` name), ``ngram_range`` [min, max], ``binary``,
  ``sublinear_tf``, ``idf`` (booleans), ``norm`` ("l2" or null), ``columns``; word parts also
  ``token_pattern``, ``tokens`` and ``longest`` (tokens in the longest n-gram).
- ``arrays.npz``: ``coef`` (one row for two classes, else one per class; a column per feature
  of all parts), ``intercept``, ``idf`` (1 where a part has none); per part i ``vocabulary_i``
  (its n-grams in column order, one per line, UTF-8); per word part ``tokens_i`` (one per line,
  id = line + 1), ``keys_i`` and ``columns_i`` (the sorted integer keys of its n-grams and their
  columns; absent when they would overflow int64, and the n-grams are then looked up by string).
"""

import contextlib
import html
import json
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "emotitrack-sentiment"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
ARRAYS_FILE = "arrays.npz"
# The names of the two files among the MLflow model's artifacts.
CONFIG_ARTIFACT = "config"
ARRAYS_ARTIFACT = "arrays"
PROBABILITY_PREFIX = "prob_"
ANALYZERS = ("word", "char_wb")
NORMS = ("l2", None)

# ---------------------------------------------------------------------------------------------
# Text normalisation: how training and every scorer prepare a text before cutting it into n-grams.

_HTML_TAG = re.compile(r"<[^>]{0,200}>")
_ESCAPED_UNICODE = re.compile(r"\\u([0-9a-fA-F]{4})")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)  # HTTPS://X.COM too
_MENTION = re.compile(r"@\w+")
_ELONGATION = re.compile(r"(\w)\1{2,}")
_ANY_RUN = re.compile(r"(.)\1\1", re.DOTALL)
_SHORT_TEXT = 300  # characters
_NEGATION = re.compile(
    r"\b(?:not|no|never|cannot|nothing|nobody|none|nor|neither|without|\w+n't)\b"
    r"[^.,:;!?]{0,60}"
)
_WORD = re.compile(r"\b\w[\w']*")
# Words (with inner apostrophes: "don't"), "!" / "?" runs and the common emoticons, which the
# default token pattern drops although they carry much of a tweet's sentiment.
WORD_PATTERN = r"\w[\w']*|[!?]+|[:;=][\-o']?[()\[\]dpo/\\|*]"


def normalize_text(text: str) -> str:
    """Lower-case text with markup, escapes, URLs, user names and elongations made uniform.

    IMDB reviews carry ``<br />`` tags, tweets literal ``\\u2019`` escapes, HTML entities, URLs
    and user names: noise that splits one word into many features."""
    # Each pattern runs only on texts that can match it: a regex scan of a review costs more
    # than a substring test, and most texts have no escapes, tags, URLs or user names.
    if "\\u" in text:
        text = _ESCAPED_UNICODE.sub(lambda m: chr(int(m.group(1), 16)), text)
    if "<" in text:
        text = _HTML_TAG.sub(" ", text)
    text = html.unescape(text)
    # Any case: "://" has none, and lower() is cheaper than a case-insensitive regex scan.
    if "://" in text or "www." in text.lower():
        text = _URL.sub(" url ", text)
    if "@" in text:
        text = _MENTION.sub(" @user ", text)
    if _has_word_character_run(text):
        text = _ELONGATION.sub(r"\1\1", text)
    return text.replace("\u2019", "'").lower()


def _has_word_character_run(text: str) -> bool:
    """Whether a word character occurs three times in a row (what ``_ELONGATION`` shortens),
    found without the costly regex scan in most texts: a short text (a tweet, a sentence) is
    first searched for any character three times in a row; a long one, where "..." and "!!!"
    make that search find something too often, with numpy."""
    if len(text) < _SHORT_TEXT:
        return _ANY_RUN.search(text) is not None and _ELONGATION.search(text) is not None
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    runs = np.flatnonzero((codes[2:] == codes[1:-1]) & (codes[1:-1] == codes[:-2]))
    return any(text[i].isalnum() or text[i] == "_" for i in set(runs.tolist()))


def normalize_with_negation(text: str) -> str:
    """``normalize_text``, then mark words that follow a negation up to the next punctuation
    (``not good at all`` → ``not neg_good neg_at neg_all``), as in Das & Chen (2001)."""
    return _NEGATION.sub(_mark_negated, normalize_text(text))


def _mark_negated(match: re.Match[str]) -> str:
    head, _, tail = match.group(0).partition(" ")
    return head + " " + _WORD.sub(lambda w: "neg_" + w.group(0), tail) if tail else head


def _unchanged(text: str) -> str:
    return text


# The config names a normaliser; a changed normalisation gets a new name and the old one stays,
# so that every version keeps preparing text as it was trained to.
NORMALIZERS: dict[str, Callable[[str], str]] = {
    "none": _unchanged,
    "lowercase": str.lower,
    "text-v1": normalize_text,
    "negation-v1": normalize_with_negation,
}

# ---------------------------------------------------------------------------------------------
# Files


@dataclass(frozen=True)
class ModelFiles:
    """Where a model's two files are."""

    config: Path
    arrays: Path


def write(
    directory: Path, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
) -> ModelFiles:
    """Write ``config.json`` and ``arrays.npz`` (uncompressed: read time is the API's start-up)."""
    check_config(config)
    directory.mkdir(parents=True, exist_ok=True)
    files = ModelFiles(directory / CONFIG_FILE, directory / ARRAYS_FILE)
    files.config.write_text(json.dumps(config, indent=1, ensure_ascii=False) + "\n", "utf-8")
    plain = {name: np.asarray(array) for name, array in arrays.items()}
    if any(array.dtype == object for array in plain.values()):
        raise ValueError("object arrays would need pickle: store numbers or encoded strings")
    with files.arrays.open("wb") as out:
        np.savez(out, allow_pickle=False, **plain)
    return files


def read(directory: Path) -> "SentimentScorer":
    """The scorer of the model written to ``directory``."""
    return read_files(ModelFiles(directory / CONFIG_FILE, directory / ARRAYS_FILE))


def read_files(files: ModelFiles) -> "SentimentScorer":
    config = json.loads(files.config.read_text("utf-8"))
    check_config(config)  # before the arrays: a newer format is refused without reading them
    with np.load(files.arrays, allow_pickle=False) as stored:
        arrays = {name: stored[name] for name in stored.files}
    return SentimentScorer(config, arrays)


def check_config(config: Mapping[str, Any]) -> None:
    """Refuse what this reader cannot score, saying why."""
    if config.get("format") != FORMAT:
        raise ValueError(f"not an {FORMAT} model config (format {config.get('format')!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"model format version {version!r}; this reader reads 1 to {FORMAT_VERSION}: "
            "upgrade emotitrack to serve it"
        )
    for part in config["parts"]:
        if part["analyzer"] not in ANALYZERS:
            raise ValueError(f"unknown analyzer {part['analyzer']!r}; known: {ANALYZERS}")
        if part["normalizer"] not in NORMALIZERS:
            raise ValueError(
                f"unknown normalizer {part['normalizer']!r}; known: {sorted(NORMALIZERS)}"
            )
        if part["norm"] not in NORMS:
            raise ValueError(f"unknown norm {part['norm']!r}; known: {NORMS}")


def encode_strings(strings: Sequence[str]) -> np.ndarray:
    """Strings as one UTF-8 blob, one per line (n-grams and tokens hold no newline). Lone
    surrogates (from tweets' literal ``\\ud83d`` escapes) are kept as they are."""
    if any("\n" in s for s in strings):
        raise ValueError("a string holds a newline: it cannot be stored one per line")
    return np.frombuffer("\n".join(strings).encode("utf-8", "surrogatepass"), dtype=np.uint8)


def decode_strings(blob: np.ndarray, count: int) -> list[str]:
    if count == 0:
        return []
    strings = blob.tobytes().decode("utf-8", "surrogatepass").split("\n")
    if len(strings) != count:
        raise ValueError(f"expected {count} strings, found {len(strings)}")
    return strings


# ---------------------------------------------------------------------------------------------
# The scorer

Occurrences = tuple[np.ndarray, np.ndarray]  # row and column of every known n-gram occurrence
Counts = tuple[np.ndarray, np.ndarray, np.ndarray]  # rows, columns, counts of known n-grams
Cells = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # rows, columns, values, weights

# Words whose character n-gram columns are remembered. Past it the memo starts afresh from the
# words worked out ahead: simpler than LRU bookkeeping.
CHAR_WORD_MEMO_SIZE = 50_000
# The most frequent words of the model's word vocabulary, worked out when the model is read so
# that a new server's first requests do not pay for them.
CHAR_WORDS_WORKED_OUT_AHEAD = 20_000
_LONGEST_WORD_WITH_A_GETTER = 64  # characters, padded


@dataclass(frozen=True)
class _Part:
    """One feature part (a vectorizer of the reference pipeline): how its texts are prepared and
    where its known n-grams occur. Parts with the same normaliser share one preparation."""

    config: Mapping[str, Any]
    prepare: Callable[[str], str]
    occurrences: Callable[[Sequence[str]], Occurrences]  # of prepared texts
    start: int  # its first column; each part's columns follow those of the part before
    width: int
    vocabulary: np.ndarray  # its n-grams, encoded (``encode_strings``)


@dataclass(frozen=True)
class _WordIndex:
    """A word part's vocabulary keyed by integers: each n-gram is the base-``base`` number of its
    tokens' ids (from 1; 0 stands for a token in no n-gram), keys sorted, so a batch's n-grams
    are looked up with one ``np.searchsorted`` instead of a dict probe per n-gram string."""

    token_ids: dict[str, int]
    base: int
    keys: np.ndarray  # sorted int64
    columns: np.ndarray  # the scorer's column of each key
    longest: int  # tokens in the longest n-gram: longer windows are never looked up


@dataclass(frozen=True)
class _Weighting:
    """The TF-IDF settings of all parts and the classifier's weights, so that one pass weighs
    every part. Each column's idf and class weights sit side by side: one gather fetches both."""

    starts: np.ndarray  # first column of each part
    width: int
    idf_and_weights: np.ndarray  # per column: idf (1 for parts without), then one weight per row
    # Per part; tuples, not arrays: asking numpy whether all are true costs more than the answer.
    binary: tuple[bool, ...]
    sublinear_tf: tuple[bool, ...]
    l2: tuple[bool, ...]
    same_tf: bool  # every part binary or none, sublinear or none


class SentimentScorer:
    """Class probabilities, explanations and the word tokenizer of one model.

    Threads may share one: its only mutable state, the memo of words' character n-grams and the
    n-gram name offsets, is changed by single dict operations and only ever holds right
    answers."""

    def __init__(self, config: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        check_config(config)
        self.config = config
        self.classes: list[str] = [str(c) for c in config["classes"]]
        coef = np.asarray(arrays["coef"], dtype=np.float64)
        self._intercept = np.asarray(arrays["intercept"], dtype=np.float64)
        idf = np.asarray(arrays["idf"], dtype=np.float64)
        self._word_indexes: dict[int, _WordIndex] = {}  # by the part's first column
        parts: list[_Part] = []
        start = 0
        for i, part in enumerate(config["parts"]):
            width = int(part["columns"])
            vocabulary = np.asarray(arrays[f"vocabulary_{i}"], dtype=np.uint8)
            if part["analyzer"] == "word":
                occurrences = self._word_counter(i, part, arrays, vocabulary, start)
            else:
                ahead = _frequent_words(config, arrays, idf)
                occurrences = _char_wb_counter(part, vocabulary, start, ahead)
            prepare = NORMALIZERS[part["normalizer"]]
            parts.append(_Part(part, prepare, occurrences, start, width, vocabulary))
            start += width
        weight_rows = 1 if len(self.classes) == 2 else len(self.classes)
        if coef.shape != (weight_rows, start) or idf.shape != (start,):
            raise ValueError(
                f"coef {coef.shape} and idf {idf.shape} do not fit {len(self.classes)} classes "
                f"and {start} columns"
            )
        self._parts = parts
        self._weighting = _weighting(parts, idf, coef)
        self._name_starts: dict[int, np.ndarray] = {}  # per part: where each n-gram starts

    # -- public --------------------------------------------------------------------------------
    def probabilities(self, texts: Sequence[str]) -> np.ndarray:
        """Class probabilities (rows x classes, float64, rows summing to 1)."""
        if not texts:
            return np.zeros((0, len(self.classes)))
        rows, _, values, weights = self._cells(texts)
        if len(texts) == 1:  # one matrix-vector product instead of a bincount per weight row
            logits = (self._intercept + values @ weights)[None, :]
        else:
            contributions = values[:, None] * weights
            logits = self._intercept + np.stack(
                [
                    np.bincount(rows, weights=contributions[:, k], minlength=len(texts))
                    for k in range(weights.shape[1])
                ],
                axis=1,
            )
        return _probabilities(logits)

    __call__ = probabilities

    def explain(self, texts: Sequence[str], top: int = 5) -> list[dict[str, list[dict[str, Any]]]]:
        """Per text and class, the n-grams that pushed the prediction most towards that class,
        with their contributions to the (calibrated) logit: feature value x weight. Character
        n-grams are shown quoted."""
        if not texts:
            return []
        rows, columns, values, weights = self._cells(texts)
        if weights.shape[1] == 1:  # binary: the logit of classes[1] against classes[0]
            towards = np.hstack([-weights, weights])
        else:
            towards = weights - weights.mean(axis=1, keepdims=True)
        bounds = np.searchsorted(rows, np.arange(len(texts) + 1))
        explanations = []
        for i in range(len(texts)):
            cells = slice(bounds[i], bounds[i + 1])
            contributions = (values[cells, None] * towards[cells]).T
            cell_columns = columns[cells]
            explanation = {}
            for c, cls in enumerate(self.classes):
                order = np.argsort(-contributions[c])[:top]
                explanation[cls] = [
                    {
                        "ngram": self._ngram(int(cell_columns[k])),
                        "contribution": round(float(contributions[c, k]), 4),
                    }
                    for k in order
                    if contributions[c, k] > 0
                ]
            explanations.append(explanation)
        return explanations

    def tokenizer(self) -> Callable[[str], list[str]] | None:
        """How the first word part cuts a text into tokens (normalised first); None without one."""
        part = self._first_word_part()
        if part is None:
            return None
        prepare, findall = part.prepare, re.compile(part.config["token_pattern"]).findall

        def tokenize(text: str) -> list[str]:
            return list(findall(prepare(text)))

        return tokenize

    def unigrams(self) -> set[str] | None:
        """The single words of the first word part's vocabulary; None without a word part."""
        part = self._first_word_part()
        if part is None:
            return None
        index = self._word_indexes.get(part.start)
        if index is None:
            return {gram for gram in decode_strings(part.vocabulary, part.width) if " " not in gram}
        tokens = list(index.token_ids)  # in id order, from 1
        return {tokens[key - 1] for key in index.keys[index.keys < index.base].tolist()}

    # -- counting and weighing -----------------------------------------------------------------
    def _first_word_part(self) -> _Part | None:
        return next((p for p in self._parts if p.config["analyzer"] == "word"), None)

    def _cells(self, texts: Sequence[str]) -> Cells:
        """The TF-IDF matrix's nonzero cells, each part l2-normalised on its own as in a
        FeatureUnion: their rows, columns, values and the weight rows of their columns, sorted
        by row then column. The occurrences of all parts are counted and weighed in one pass."""
        weighting = self._weighting
        prepared: dict[str, list[str]] = {}
        all_rows, all_columns = [], []
        for part in self._parts:
            normalizer = part.config["normalizer"]
            if normalizer not in prepared:
                prepared[normalizer] = [part.prepare(text) for text in texts]
            rows, columns = part.occurrences(prepared[normalizer])
            all_rows.append(rows)
            all_columns.append(columns)
        rows, columns, counts = _count(all_rows, all_columns, len(texts), weighting.width)
        values = counts.astype(np.float64)
        one_text, several_parts = len(texts) == 1, len(self._parts) > 1
        # Each cell's part, where parts are weighed differently or a batch is normalised.
        part_of = None
        if several_parts and (not weighting.same_tf or (not one_text and any(weighting.l2))):
            part_of = np.searchsorted(weighting.starts, columns, side="right") - 1
        _apply_tf(values, weighting.binary, weighting.sublinear_tf, part_of)
        # ``take`` rather than ``[columns]``: numpy's fancy indexing of rows costs several times
        # as much for a few hundred cells.
        idf_and_weights = weighting.idf_and_weights.take(columns, axis=0)
        values *= idf_and_weights[:, 0]
        if one_text and several_parts:
            _normalise_parts_of_one_text(values, columns, weighting)
        elif any(weighting.l2):
            parts = len(self._parts)
            segment = rows if part_of is None else rows * parts + part_of
            squares = np.bincount(segment, weights=values * values, minlength=len(texts) * parts)
            norms = np.sqrt(squares)
            if not all(weighting.l2):
                norms.reshape(len(texts), parts)[:, ~np.asarray(weighting.l2)] = 1.0
            values /= norms[segment]  # rows with no known n-gram have no values at all
        return rows, columns, values, idf_and_weights[:, 1:]

    def _word_counter(
        self,
        i: int,
        part: Mapping[str, Any],
        arrays: Mapping[str, np.ndarray],
        vocabulary: np.ndarray,
        start: int,
    ) -> Callable[[Sequence[str]], Occurrences]:
        """Word n-grams through the integer index (token ids in Python, everything after in
        numpy), or through a dict of the n-gram strings for a model whose keys would overflow
        int64 (no index stored)."""
        findall = re.compile(part["token_pattern"]).findall
        min_n, max_n = part["ngram_range"]
        if f"keys_{i}" not in arrays:
            return _dict_counter(findall, vocabulary, int(part["columns"]), start, min_n, max_n)
        tokens = decode_strings(arrays[f"tokens_{i}"], int(part["tokens"]))
        index = _WordIndex(
            token_ids={token: t for t, token in enumerate(tokens, start=1)},
            base=len(tokens) + 1,
            keys=np.asarray(arrays[f"keys_{i}"], dtype=np.int64),
            columns=np.asarray(arrays[f"columns_{i}"], dtype=np.int64) + start,
            longest=int(part["longest"]),
        )
        self._word_indexes[start] = index
        max_n = min(max_n, index.longest)
        get = index.token_ids.get

        def occurrences(texts: Sequence[str]) -> Occurrences:
            ids: list[int] = []
            lengths = []
            for text in texts:
                found = findall(text)
                ids.extend([get(token, 0) for token in found])
                ids.append(0)  # a separator: no n-gram spans two texts
                lengths.append(len(found) + 1)
            token_ids = np.asarray(ids, dtype=np.int64)
            return _known_windows(token_ids, _rows(lengths), index, min_n, max_n)

        return occurrences

    def _ngram(self, column: int) -> str:
        """The n-gram of one column, decoded from its part's blob when first asked for."""
        p = int(np.searchsorted(self._weighting.starts, column, side="right")) - 1
        part = self._parts[p]
        starts = self._name_starts.get(p)
        if starts is None:
            newlines = np.flatnonzero(part.vocabulary == ord("\n"))
            end = [len(part.vocabulary) + 1]
            starts = self._name_starts[p] = np.concatenate([[0], newlines + 1, end])
        j = column - part.start
        encoded = part.vocabulary[starts[j] : starts[j + 1] - 1].tobytes()
        gram = encoded.decode("utf-8", "surrogatepass")
        return gram if part.config["analyzer"] == "word" else repr(gram)


def _weighting(parts: list[_Part], idf: np.ndarray, coef: np.ndarray) -> _Weighting:
    widths = [part.width for part in parts]
    table = np.empty((sum(widths), 1 + len(coef)), dtype=np.float64)
    table[:, 0] = idf
    table[:, 1:] = coef.T
    tf = {(part.config["binary"], part.config["sublinear_tf"]) for part in parts}
    return _Weighting(
        starts=np.cumsum([0, *widths[:-1]]),
        width=sum(widths),
        idf_and_weights=table,
        binary=tuple(bool(part.config["binary"]) for part in parts),
        sublinear_tf=tuple(bool(part.config["sublinear_tf"]) for part in parts),
        l2=tuple(part.config["norm"] == "l2" for part in parts),
        same_tf=len(tf) == 1,
    )


def _probabilities(logits: np.ndarray) -> np.ndarray:
    """LogisticRegression's ``predict_proba`` from its logits: the sigmoid for two classes, else
    the softmax."""
    if logits.shape[1] == 1:
        positive = np.exp(-np.logaddexp(0.0, -logits[:, 0]))  # the sigmoid, without overflow
        return np.stack([1.0 - positive, positive], axis=1)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(exp / exp.sum(axis=1, keepdims=True))


def _rows(lengths: list[int]) -> np.ndarray:
    """The row of each of ``sum(lengths)`` entries, ``lengths[i]`` of them in row i."""
    if len(lengths) == 1:
        return np.zeros(lengths[0], dtype=np.int64)
    return np.repeat(np.arange(len(lengths)), lengths)


def _known_windows(
    ids: np.ndarray, text_of: np.ndarray, index: _WordIndex, min_n: int, max_n: int
) -> Occurrences:
    """The windows of ``min_n``..``max_n`` ids that are in the index: their rows and columns.
    Id 0 is unknown or a separator: no window holding one is in the vocabulary."""
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
    # Sorted, successive binary searches touch nearby keys: faster, the sort included.
    order = np.argsort(wanted)
    wanted, row = wanted[order], row[order]
    position = np.minimum(np.searchsorted(index.keys, wanted), len(index.keys) - 1)
    hit = index.keys[position] == wanted
    return row[hit], index.columns[position[hit]]


def _dict_counter(
    findall: Callable[[str], list[str]],
    vocabulary: np.ndarray,
    width: int,
    start: int,
    min_n: int,
    max_n: int,
) -> Callable[[Sequence[str]], Occurrences]:
    """Word n-grams as strings, as scikit-learn builds them, looked up in a dict."""
    lookup = {gram: start + j for j, gram in enumerate(decode_strings(vocabulary, width))}.get

    def occurrences(texts: Sequence[str]) -> Occurrences:
        columns: list[int] = []
        lengths: list[int] = []
        for text in texts:
            tokens = findall(text)
            grams = [
                " ".join(tokens[k : k + n])
                for n in range(min_n, min(max_n, len(tokens)) + 1)
                for k in range(len(tokens) - n + 1)
            ]
            row = [j for j in map(lookup, grams) if j is not None]
            columns.extend(row)
            lengths.append(len(row))
        return _rows(lengths), np.asarray(columns, dtype=np.int64)

    return occurrences


def _char_wb_counter(
    part: Mapping[str, Any], vocabulary: np.ndarray, start: int, ahead: list[str]
) -> Callable[[Sequence[str]], Occurrences]:
    """``char_wb`` n-grams, word by word. scikit-learn takes them inside each
    whitespace-separated word padded with one space, so a text's n-grams are its words' n-grams
    put together, and a word's known columns can be remembered: most words of a request were in
    an earlier one. ``ahead``: words to work out now."""
    grams = decode_strings(vocabulary, int(part["columns"]))
    lookup = {gram: start + j for j, gram in enumerate(grams)}.get
    min_n, max_n = part["ngram_range"]
    windows_by_length: dict[int, Callable[[str], tuple[str, ...]]] = {}

    def columns_of(word: str) -> np.ndarray:
        padded = f" {word} "
        windows = windows_by_length.get(len(padded))
        if windows is None:
            windows = _window_getter(len(padded), min_n, max_n)
            if len(padded) <= _LONGEST_WORD_WITH_A_GETTER:
                windows_by_length[len(padded)] = windows
        known = [j for j in map(lookup, windows(padded)) if j is not None]
        return np.array(known, dtype=np.int64)

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


def _frequent_words(
    config: Mapping[str, Any], arrays: Mapping[str, np.ndarray], idf: np.ndarray
) -> list[str]:
    """The most frequent single words of the word parts' vocabularies (lowest idf first): the
    words whose character n-grams are worth working out before any request."""
    scored: dict[str, float] = {}
    start = 0
    for i, part in enumerate(config["parts"]):
        width = int(part["columns"])
        if part["analyzer"] == "word":
            grams = decode_strings(np.asarray(arrays[f"vocabulary_{i}"], dtype=np.uint8), width)
            part_idf = idf[start : start + width] if part["idf"] else np.zeros(width)
            for gram, value in zip(grams, part_idf.tolist(), strict=True):
                if " " not in gram:
                    scored[gram] = min(scored.get(gram, math.inf), value)
        start += width
    return sorted(scored, key=scored.__getitem__)[:CHAR_WORDS_WORKED_OUT_AHEAD]


def _window_getter(length: int, min_n: int, max_n: int) -> Callable[[str], tuple[str, ...]]:
    """All ``char_wb`` windows of a padded word of ``length`` characters, in one C call
    (``operator.itemgetter`` of slices) rather than slicing in a Python loop."""
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


# ---------------------------------------------------------------------------------------------
# MLflow: finding the format in a logged model, older versions, and the pyfunc model itself


def download(model_uri: str, destination: Path) -> Path:
    """Download a logged model's whole folder (``models:/``, ``runs:/``, a path) into
    ``destination``; the folder's path."""
    import mlflow.artifacts

    destination.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination))
    return Path(local)


def logged_files(model_dir: Path) -> ModelFiles | None:
    """The config and arrays of a downloaded MLflow model in this format; None for any other
    model (another pyfunc, or an EmotiTrack version registered before this format)."""
    from mlflow.models import Model

    flavor = Model.load(str(model_dir)).flavors.get("python_function") or {}
    artifacts = flavor.get("artifacts") or {}
    if CONFIG_ARTIFACT not in artifacts or ARRAYS_ARTIFACT not in artifacts:
        return None
    files = ModelFiles(
        model_dir / artifacts[CONFIG_ARTIFACT]["path"],
        model_dir / artifacts[ARRAYS_ARTIFACT]["path"],
    )
    config = json.loads(files.config.read_text("utf-8"))
    return files if isinstance(config, dict) and config.get("format") == FORMAT else None


def read_logged(model_dir: Path) -> "SentimentScorer | None":
    """The scorer of a downloaded MLflow model in this format; None for any other model."""
    files = logged_files(model_dir)
    return read_files(files) if files is not None else None


def load_pyfunc(model_dir: Path) -> Any:
    """Load a downloaded model as MLflow pyfunc. A model that ships its own code (``code_paths``:
    EmotiTrack versions registered before this format carry the training package they were
    written against) is loaded with that code, even where packages of the same names are
    already imported here; those stay what they were for everything else."""
    import mlflow.pyfunc
    from mlflow.models import Model

    flavor = Model.load(str(model_dir)).flavors.get("python_function") or {}
    code = flavor.get("code")
    if not code:
        return mlflow.pyfunc.load_model(str(model_dir), suppress_warnings=True)
    code_dir = model_dir / code
    shipped = {path.name.removesuffix(".py") for path in code_dir.iterdir()}
    with _shipped_code_first(shipped, str(code_dir)):
        return mlflow.pyfunc.load_model(str(model_dir), suppress_warnings=True)


@contextlib.contextmanager
def _shipped_code_first(packages: set[str], code_dir: str) -> Iterator[None]:
    """Import ``packages`` from ``code_dir`` inside the block (MLflow puts it first on the
    path, but a package already imported would be reused), then put back the modules imported
    before. The model keeps its own modules through the objects it holds. Not thread-safe
    against imports of the same packages meanwhile: serving imports none of them at run time."""

    def shipped(module: str) -> bool:
        return module.partition(".")[0] in packages

    set_aside = {name: module for name, module in sys.modules.items() if shipped(name)}
    for name in set_aside:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in [name for name in sys.modules if shipped(name)]:
            del sys.modules[name]
        sys.modules.update(set_aside)
        sys.path[:] = [entry for entry in sys.path if entry != code_dir]


def texts_from_input(model_input: Any) -> list[str]:
    """Accept what pyfunc clients send: a DataFrame (``text`` column, or a single column), a
    Series, a list/array of strings or one string."""
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if "text" in model_input.columns:
            column = model_input["text"]
        elif model_input.shape[1] == 1:
            column = model_input.iloc[:, 0]
        else:
            raise ValueError(f"expected a 'text' column, got columns {list(model_input.columns)}")
        return [str(t) for t in column.tolist()]
    if isinstance(model_input, str):
        return [model_input]
    if isinstance(model_input, pd.Series | np.ndarray | list | tuple):
        return [str(t) for t in list(model_input)]
    raise TypeError(f"unsupported model input type {type(model_input).__name__}")


def prediction_table(proba: np.ndarray, classes: Sequence[str]) -> Any:
    """One row per text: ``label``, ``confidence`` and ``prob_<class>`` for every class (a
    pandas DataFrame)."""
    import pandas as pd

    best = proba.argmax(axis=1)
    table = pd.DataFrame(
        {
            "label": np.asarray(classes, dtype=object)[best],
            "confidence": proba[np.arange(len(proba)), best],
        }
    )
    for i, cls in enumerate(classes):
        table[PROBABILITY_PREFIX + cls] = proba[:, i]
    return table


def python_model() -> Any:
    """The MLflow ``PythonModel`` of this format. Built on demand, not at import: serving reads
    the format without ``mlflow.pyfunc``.

    ``params={"explain": True}`` adds an ``explanation`` column: per row, JSON of the n-grams
    that pushed the prediction towards each class."""
    import pandas as pd
    from mlflow.pyfunc import PythonModel

    class SentimentModel(PythonModel):
        def __init__(self) -> None:
            self.scorer: SentimentScorer | None = None

        def load_context(self, context: Any) -> None:
            self.scorer = read_files(
                ModelFiles(
                    Path(context.artifacts[CONFIG_ARTIFACT]),
                    Path(context.artifacts[ARRAYS_ARTIFACT]),
                )
            )

        # The input hint is pandas' DataFrame, which MLflow leaves to the logged signature.
        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> pd.DataFrame:
            assert self.scorer is not None, "model not loaded"
            texts = texts_from_input(model_input)
            table = prediction_table(self.scorer.probabilities(texts), self.scorer.classes)
            if params and params.get("explain"):
                table["explanation"] = [json.dumps(e) for e in self.scorer.explain(texts)]
            return table

    return SentimentModel()


# MLflow runs this file under another module name when it loads a model (models-from-code):
# only then is the model set. Imported as part of the project, it does nothing.
if __name__ != "emotitrack.core.model_format":
    from mlflow.models import set_model

    set_model(python_model())
