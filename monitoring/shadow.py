"""The shadow section of the monitoring report: how often the shadow model agrees with the
answers Production gave and, where feedback was given, both accuracies on the same requests.

Computed by the database (``emotitrack.core.shadow_log.compare``): one GROUP BY over the window,
never the window in memory.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from emotitrack.core.prediction_log import create_store_engine
from emotitrack.core.shadow_log import ShadowComparison, compare


def shadow_comparisons(
    prediction_log_url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    primary_version: str | None = None,
) -> list[ShadowComparison]:
    """Per (primary version, shadow version) pair, the shadowed requests of [since, until)."""
    engine = create_store_engine(prediction_log_url)
    try:
        return compare(engine, since=since, until=until, primary_version=primary_version)
    finally:
        engine.dispose()


def shadow_summary(
    prediction_log_url: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    primary_version: str | None = None,
) -> dict[str, Any]:
    """The report's ``shadow`` section: one entry per version pair (empty: no shadow ran)."""
    pairs = shadow_comparisons(
        prediction_log_url, since=since, until=until, primary_version=primary_version
    )
    return {"pairs": [pair.as_dict() for pair in pairs]}
