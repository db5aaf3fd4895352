"""scikit-learn parts of the reference pipeline: a lean TF-IDF vectorizer and Naive-Bayes scaling.

Text normalisation is the model format's (``emotitrack.core.model_format``): the pipeline
prepares text exactly as the served scorer does. It is re-exported here for the pipeline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Self

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils.validation import check_is_fitted

from emotitrack.core.model_format import WORD_PATTERN, normalize_text, normalize_with_negation

__all__ = [
    "WORD_PATTERN",
    "LeanTfidfVectorizer",
    "NBLogCountRatio",
    "normalize_text",
    "normalize_with_negation",
]


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
    """``TfidfVectorizer`` with a leaner ``transform`` (evaluation, calibration): the same matrix
    (tested), but n-grams are looked up with ``dict.get`` instead of scikit-learn's try/except
    per n-gram. Most trigrams of a new text are not in the vocabulary, and a raised ``KeyError``
    per unknown n-gram cost several times the analyzer. Fitting is scikit-learn's own."""

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
