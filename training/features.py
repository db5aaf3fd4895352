"""Text features of the sentiment model: normalisation, word/character TF-IDF and Naive-Bayes scaling.

Everything here ends up pickled inside the model, so serving needs nothing but this package.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

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
    # Any case: "://" has none, and lower() costs ~1 µs per review where a regex scan costs ~20.
    if "://" in text or "www." in text.lower():
        text = _URL.sub(" url ", text)
    if "@" in text:
        text = _MENTION.sub(" @user ", text)
    if _has_word_character_run(text):
        text = _ELONGATION.sub(r"\1\1", text)
    return text.replace("\u2019", "'").lower()


def _has_word_character_run(text: str) -> bool:
    """Whether a word character occurs three times in a row (what ``_ELONGATION`` shortens).
    Its regex scan cost ~60 µs per review, a third of the served model's text preparation, and
    finds something in few texts. A short text (a tweet, a sentence) is first searched for any
    character three times in a row (~2 µs; none in most); a long one, where "..." and "!!!" make
    that search find something too often, with numpy (~9 µs per review)."""
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


class NBLogCountRatio(TransformerMixin, BaseEstimator):
    """Scale each feature by its Naive-Bayes log-count ratio (Wang & Manning 2012, NBSVM).

    ``r = log((p / |p|₁) / (q / |q|₁))`` with ``p``/``q`` the smoothed feature sums over positive /
    negative documents; a linear classifier on ``x ∘ r`` is the NB-LR model. Binary labels only:
    with three classes there is no single ratio per feature."""

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = alpha

    def fit(self, X: Any, y: Any) -> Self:
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise ValueError(
                f"Naive-Bayes feature scaling needs exactly two classes, got {list(self.classes_)}; "
                "train without it (--nb-scaling false) for more classes"
            )
        X = sp.csr_matrix(X)
        positive = np.asarray(X[y == self.classes_[1]].sum(axis=0)).ravel() + self.alpha
        negative = np.asarray(X[y == self.classes_[0]].sum(axis=0)).ravel() + self.alpha
        self.ratio_ = np.log(positive / positive.sum()) - np.log(negative / negative.sum())
        self.ratio_ = self.ratio_.astype(X.dtype)
        return self

    def transform(self, X: Any) -> sp.csr_matrix:
        check_is_fitted(self, "ratio_")
        return sp.csr_matrix(X).multiply(self.ratio_).tocsr()


class LeanTfidfVectorizer(TfidfVectorizer):
    """``TfidfVectorizer`` with a leaner ``transform`` for serving: the same matrix (tested), but
    n-grams are looked up with ``dict.get`` instead of scikit-learn's try/except per n-gram.

    Most trigrams of a new text are not in the vocabulary, and a raised ``KeyError`` per
    unknown n-gram made scikit-learn's transform cost ~1 ms per review, five times the analyzer.
    Fitting is scikit-learn's own."""

    def transform(self, raw_documents: Iterable[str]) -> sp.csr_matrix:
        if isinstance(raw_documents, str):
            raise ValueError("Iterable over raw text documents expected, string object received.")
        check_is_fitted(self, "vocabulary_")
        analyze = self.build_analyzer()
        lookup = self.vocabulary_.get
        indices: list[int] = []
        counts: list[int] = []
        indptr = [0]
        for document in raw_documents:
            row = Counter([j for j in map(lookup, analyze(document)) if j is not None])
            indices.extend(row.keys())
            counts.extend(row.values())
            indptr.append(len(indices))
        columns = np.asarray(indices, dtype=np.int32)
        data = np.asarray(counts, dtype=self.dtype)
        if self.binary:
            data.fill(1)
        if self.sublinear_tf:
            np.log(data, out=data)
            data += 1
        if self.use_idf:
            data *= self.idf_[columns]
        matrix = sp.csr_matrix(
            (data, columns, np.asarray(indptr, dtype=np.int32)),
            shape=(len(indptr) - 1, len(self.vocabulary_)),
        )
        matrix.sort_indices()
        return normalize(matrix, norm=self.norm, copy=False) if self.norm else matrix
