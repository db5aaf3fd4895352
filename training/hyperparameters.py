"""The pipeline's knobs: what ``emotitrack train`` options, MLproject parameters and presets set.

Kept apart from ``training.model`` so that building the command line imports no scikit-learn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

CLASS_WEIGHTS = ("none", "balanced")
CALIBRATION_SETS = ("folds", "validation")


@dataclass(frozen=True)
class Hyperparameters:
    """Pipeline knobs, exposed as MLproject parameters and ``emotitrack train`` options.

    Defaults are the IMDB preset (see ``training.presets``), chosen by cross-validation on the
    IMDB training data, never on test."""

    ngram_max: int = 3
    char_ngram_max: int = 0
    max_features: int = 0
    min_df: int = 2
    max_df: float = 0.95
    sublinear_tf: bool = True
    negation: bool = True
    nb_scaling: bool = True
    C: float = 100.0
    class_weight: str = "none"
    calibration_folds: int = 3
    calibrate_on: str = "folds"
    max_iter: int = 2000

    def __post_init__(self) -> None:
        if self.class_weight not in CLASS_WEIGHTS:
            raise ValueError(
                f"class_weight must be one of {CLASS_WEIGHTS}, got {self.class_weight!r}"
            )
        if self.ngram_max < 1 or self.char_ngram_max not in (0, *range(2, 10)):
            raise ValueError("ngram_max must be >= 1 and char_ngram_max 0 (off) or 2-9")
        # Checked here, not by scikit-learn mid-fit: a bad value then costs a failed MLflow run.
        if self.max_features < 0:
            raise ValueError(f"max_features must be 0 (no limit) or more, got {self.max_features}")
        if self.min_df < 1:
            raise ValueError(f"min_df must be at least 1, got {self.min_df}")
        if not 0 < self.max_df <= 1:
            raise ValueError(f"max_df must be above 0 and at most 1, got {self.max_df}")
        if not self.C > 0:  # also refuses NaN
            raise ValueError(f"C must be above 0, got {self.C}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")
        if self.calibration_folds == 1 or self.calibration_folds < 0:
            raise ValueError("calibration_folds must be 0 (off) or at least 2")
        if self.calibrate_on not in CALIBRATION_SETS:
            raise ValueError(
                f"calibrate_on must be one of {CALIBRATION_SETS}, got {self.calibrate_on!r}"
            )

    def as_params(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, **changes: Any) -> Hyperparameters:
        return replace(self, **changes)


def describe_model(hp: Hyperparameters) -> str:
    """The model ``hp`` builds, in words: ``TF-IDF (words 1-3) + NB-scaled, calibrated
    LogisticRegression``; a registered version's description says what that version is."""
    features = f"words 1-{hp.ngram_max}"
    if hp.char_ngram_max:
        features += f", characters 2-{hp.char_ngram_max}"
    traits = [
        trait
        for trait, present in (
            ("NB-scaled", hp.nb_scaling),
            ("class-balanced", hp.class_weight == "balanced"),
            ("calibrated", hp.calibration_folds > 0),  # 0 is off whatever calibrate_on says
        )
        if present
    ]
    head = " ".join(filter(None, [", ".join(traits), "LogisticRegression"]))
    return f"TF-IDF ({features}) + {head}"
