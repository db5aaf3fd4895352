"""Text normalisation under its former name: it lives in ``emotitrack.core.model_format``.

Kept because model versions registered before the data format pickled their pipeline with
references to these functions here, and their shipped code imports them from here; drop it once
every such version is repackaged (``emotitrack repackage``).
"""

from emotitrack.core.model_format import WORD_PATTERN, normalize_text, normalize_with_negation

__all__ = ["WORD_PATTERN", "normalize_text", "normalize_with_negation"]
