"""Descriptor columns for the drift report, the same on both sides: computed from the text with
the model's tokenizer and vocabulary (``emotitrack.core.descriptors``, where serving also computes them
when it keeps no texts), or taken as logged where the text was not stored."""

from __future__ import annotations

import pandas as pd
from sklearn.pipeline import Pipeline

from emotitrack.core.descriptors import DESCRIPTOR_COLUMNS, TextDescriber


def with_descriptors(frame: pd.DataFrame, model: TextDescriber | Pipeline) -> pd.DataFrame:
    """``frame`` (with a ``text`` column) plus the descriptors of its texts; ``model`` is a
    describer or the fitted pipeline to build one from."""
    describer = model if isinstance(model, TextDescriber) else TextDescriber.for_pipeline(model)
    descriptors = describer.describe(frame["text"].tolist())
    return pd.concat([frame.reset_index(drop=True), descriptors], axis=1)


def describe_window(current: pd.DataFrame, describer: TextDescriber) -> pd.DataFrame:
    """The window with descriptors: computed from the text where it was logged, as logged
    where only the descriptors were kept (EMOTITRACK_STORE_TEXT=false)."""
    frame = current.reset_index(drop=True)
    descriptors = pd.DataFrame(
        {
            name: frame[name].astype(float) if name in frame else float("nan")
            for name in DESCRIPTOR_COLUMNS
        },
        index=frame.index,
    )
    has_text = frame["text"].notna()
    if has_text.any():
        computed = describer.describe(frame.loc[has_text, "text"].tolist())
        descriptors.loc[has_text, list(DESCRIPTOR_COLUMNS)] = computed.to_numpy()
    return pd.concat(
        [frame.drop(columns=list(DESCRIPTOR_COLUMNS), errors="ignore"), descriptors], axis=1
    )
