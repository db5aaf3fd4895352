"""Text descriptors: what monitoring compares when it cannot (or may not) read the text itself.

Computed here rather than by Evidently: its OOV and sentiment descriptors need NLTK data that
cannot be downloaded offline, and the out-of-vocabulary share that matters is the one of *our
model's* vocabulary. Serving stores them instead of the text when ``EMOTITRACK_STORE_TEXT`` is
off; monitoring computes the same ones for the reference sample and for logged texts, so both
sides of a drift report are measured alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from emotitrack.core.model_format import SentimentScorer

LETTERS = re.compile(r"[^\W\d_]+", re.UNICODE)  # runs of letters: far fewer matches than letters
DESCRIPTOR_COLUMNS = ("text_length", "word_count", "oov_share", "non_letter_share")
_DEFAULT_TOKEN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern


def describe_text(
    text: str, tokenize: Callable[[str], list[str]], vocabulary: set[str] | None
) -> tuple[float, float, float, float]:
    """Length, word count, share of tokens unknown to the model (NaN without a vocabulary),
    share of non-letter characters: ``DESCRIPTOR_COLUMNS`` in order."""
    tokens = tokenize(text)
    if vocabulary is None:
        oov = float("nan")
    else:
        known = sum(1 for t in tokens if t in vocabulary)
        oov = 1.0 - known / len(tokens) if tokens else 1.0
    letters = sum(map(len, LETTERS.findall(text)))
    return (
        float(len(text)),
        float(len(tokens)),
        oov,
        1.0 - letters / len(text) if text else 0.0,
    )


def describe_texts(
    texts: Iterable[str], tokenize: Callable[[str], list[str]], vocabulary: set[str] | None
) -> pd.DataFrame:
    """``describe_text`` for many texts, as a table with ``DESCRIPTOR_COLUMNS``."""
    rows = [describe_text(text, tokenize, vocabulary) for text in texts]
    return pd.DataFrame(
        np.array(rows, dtype=float).reshape(-1, 4), columns=list(DESCRIPTOR_COLUMNS)
    )


@dataclass(frozen=True)
class TextDescriber:
    """Descriptors as one model sees text: its word tokenizer and unigram vocabulary."""

    tokenize: Callable[[str], list[str]]
    vocabulary: set[str] | None

    @classmethod
    def for_model(cls, scorer: SentimentScorer | None) -> TextDescriber:
        """Use the model format's word tokenizer and unigram vocabulary; for another kind of
        model (None, or a model without word n-grams), the default word pattern and no
        out-of-vocabulary share."""
        tokenize = scorer.tokenizer() if scorer is not None else None
        if scorer is None or tokenize is None:
            return cls.default()
        return cls(tokenize, scorer.unigrams())

    @classmethod
    def for_pipeline(cls, pipeline: Any) -> TextDescriber:
        """The same from a fitted scikit-learn pipeline (the reference in training and
        benchmarks), found by duck typing: the core does not import scikit-learn."""
        vectorizer = next(_word_vectorizers(pipeline), None)
        if vectorizer is None:
            return cls.default()
        analyze_tokens = vectorizer.build_tokenizer()
        preprocess = vectorizer.build_preprocessor()
        vocabulary = {term for term in vectorizer.vocabulary_ if " " not in term}
        return cls(lambda text: analyze_tokens(preprocess(text)), vocabulary)

    @classmethod
    def default(cls) -> TextDescriber:
        return cls(lambda text: _DEFAULT_TOKEN.findall(text.lower()), None)

    def describe(self, texts: Iterable[str]) -> pd.DataFrame:
        return describe_texts(texts, self.tokenize, self.vocabulary)

    def describe_one(self, text: str) -> dict[str, float]:
        """One text's descriptors, without building a table (serving does this per request)."""
        return dict(
            zip(
                DESCRIPTOR_COLUMNS, describe_text(text, self.tokenize, self.vocabulary), strict=True
            )
        )


def _word_vectorizers(estimator: Any) -> Iterator[Any]:
    """Fitted word-analyzer vectorizers anywhere in a pipeline (steps, unions, column
    transformers), first one first."""
    if hasattr(estimator, "build_tokenizer"):  # a CountVectorizer (TfidfVectorizer is one too)
        if estimator.analyzer == "word" and hasattr(estimator, "vocabulary_"):
            yield estimator
        return
    for attribute in ("steps", "transformer_list", "transformers_"):
        for part in getattr(estimator, attribute, None) or []:
            yield from _word_vectorizers(part[1])
