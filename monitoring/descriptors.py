"""Text descriptors computed here rather than by Evidently: its OOV and sentiment descriptors
need NLTK data that cannot be downloaded offline, and the out-of-vocabulary share that matters
is the one of *our model's* vocabulary."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
DESCRIPTOR_COLUMNS = ("text_length", "word_count", "oov_share", "non_letter_share")


def describe_texts(
    texts: Iterable[str], tokenize: Callable[[str], list[str]], vocabulary: set[str]
) -> pd.DataFrame:
    """Length, word count, share of tokens unknown to the model, share of non-letter characters."""
    rows = []
    for text in texts:
        tokens = tokenize(text)
        known = sum(1 for t in tokens if t in vocabulary)
        letters = len(LETTER.findall(text))
        rows.append(
            (
                len(text),
                len(tokens),
                1.0 - known / len(tokens) if tokens else 1.0,
                1.0 - letters / len(text) if text else 0.0,
            )
        )
    return pd.DataFrame(
        np.array(rows, dtype=float).reshape(-1, 4), columns=list(DESCRIPTOR_COLUMNS)
    )


def with_descriptors(frame: pd.DataFrame, pipeline: Pipeline) -> pd.DataFrame:
    """``frame`` (with a ``text`` column) plus the descriptors, tokenised as the model's TF-IDF
    step tokenises and judged against its unigram vocabulary."""
    vectorizer = pipeline.named_steps["tfidf"]
    tokenize = vectorizer.build_tokenizer()
    vocabulary = {term for term in vectorizer.vocabulary_ if " " not in term}
    descriptors = describe_texts(
        frame["text"].tolist(), lambda text: tokenize(text.lower()), vocabulary
    )
    return pd.concat([frame.reset_index(drop=True), descriptors], axis=1)
