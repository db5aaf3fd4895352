"""What training commands refuse, kept free of heavy imports so the command line loads fast."""

from __future__ import annotations

# The gate keeps the better version, so only metrics where higher is better.
GATE_METRICS = ("accuracy", "f1_macro", "recall_macro", "roc_auc")


class DataError(ValueError):
    """The data cannot be trained on; the message says what to fix."""


class PromotionError(RuntimeError):
    """The promotion cannot be done as asked; the message says why."""


class PromotionRefused(PromotionError):
    """The gate found the challenger worse than the champion."""
