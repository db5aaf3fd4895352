"""Shadow predictions in the prediction log: their request id scheme and the comparison with the
answers they shadowed, computed by the database.

A shadow record is keyed ``<primary request id>.shadow`` (the table's key is the request id), so
feedback, which is given for the primary id, joins to both: the primary row by its id, the shadow
row by its id without the suffix. Serving writes shadow records; monitoring and the promotion
gate read the comparison through ``compare``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from emotitrack.core.prediction_log import FEEDBACK, PREDICTIONS

SHADOW_SOURCE = "shadow"
SHADOW_SUFFIX = ".shadow"


def shadow_request_id(primary_request_id: str) -> str:
    """The request id of the shadow record of ``primary_request_id``."""
    return primary_request_id + SHADOW_SUFFIX


def primary_request_id(request_id: str) -> str:
    """The request id feedback is given for: a shadow record's primary id, any other unchanged."""
    return request_id.removesuffix(SHADOW_SUFFIX)


@dataclass(frozen=True)
class ShadowComparison:
    """One (primary version, shadow version) pair over a window of shadowed requests."""

    primary_name: str
    primary_version: str
    shadow_name: str
    shadow_version: str
    rows: int  # primary predictions that have a shadow prediction
    agreements: int  # of those, same label
    labelled: int  # of those, with feedback
    primary_correct: int
    shadow_correct: int

    @property
    def agreement(self) -> float | None:
        return self.agreements / self.rows if self.rows else None

    @property
    def primary_accuracy(self) -> float | None:
        return self.primary_correct / self.labelled if self.labelled else None

    @property
    def shadow_accuracy(self) -> float | None:
        return self.shadow_correct / self.labelled if self.labelled else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "primary_model": self.primary_name,
            "primary_version": self.primary_version,
            "shadow_model": self.shadow_name,
            "shadow_version": self.shadow_version,
            "rows": self.rows,
            "agreement": self.agreement,
            "labelled": self.labelled,
            "primary_accuracy": self.primary_accuracy,
            "shadow_accuracy": self.shadow_accuracy,
        }


def compare(
    connectable: sa.Engine | sa.Connection,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    primary_version: str | None = None,
    shadow_version: str | None = None,
    model_name: str | None = None,
) -> list[ShadowComparison]:
    """Agreement and, where feedback was given, both accuracies, per (primary, shadow) version
    pair of the primary predictions made in [since, until); one GROUP BY in the database.
    ``model_name`` narrows both sides to one registered model."""
    if "source" not in {c["name"] for c in sa.inspect(connectable).get_columns("predictions")}:
        return []  # a log from before shadow records: none to compare
    primary, shadow = PREDICTIONS.alias("p"), PREDICTIONS.alias("s")

    def count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
        return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)

    query = (
        sa.select(
            primary.c.model_name.label("primary_name"),
            primary.c.model_version.label("primary_version"),
            shadow.c.model_name.label("shadow_name"),
            shadow.c.model_version.label("shadow_version"),
            sa.func.count().label("rows"),
            count_if(primary.c.label == shadow.c.label).label("agreements"),
            sa.func.count(FEEDBACK.c.label).label("labelled"),
            count_if(FEEDBACK.c.label == primary.c.label).label("primary_correct"),
            count_if(FEEDBACK.c.label == shadow.c.label).label("shadow_correct"),
        )
        .select_from(
            primary.join(
                shadow, shadow.c.request_id == primary.c.request_id + SHADOW_SUFFIX
            ).outerjoin(FEEDBACK, FEEDBACK.c.request_id == primary.c.request_id)
        )
        .where(shadow.c.source == SHADOW_SOURCE, primary.c.source != SHADOW_SOURCE)
        .group_by(
            primary.c.model_name,
            primary.c.model_version,
            shadow.c.model_name,
            shadow.c.model_version,
        )
        .order_by(primary.c.model_version, shadow.c.model_version)
    )
    if since is not None:
        # a shadow record is written after its primary: this bound lets partitions be skipped
        query = query.where(primary.c.created_at >= since, shadow.c.created_at >= since)
    if until is not None:
        query = query.where(primary.c.created_at < until)
    for column, value in (
        (primary.c.model_version, primary_version),
        (shadow.c.model_version, shadow_version),
        (primary.c.model_name, model_name),
        (shadow.c.model_name, model_name),
    ):
        if value is not None:
            query = query.where(column == value)
    if isinstance(connectable, sa.Engine):
        with connectable.connect() as conn:
            rows = conn.execute(query).mappings().all()
    else:
        rows = connectable.execute(query).mappings().all()
    return [
        ShadowComparison(
            primary_name=row["primary_name"],
            primary_version=row["primary_version"],
            shadow_name=row["shadow_name"],
            shadow_version=row["shadow_version"],
            rows=int(row["rows"]),
            agreements=int(row["agreements"]),
            labelled=int(row["labelled"]),
            primary_correct=int(row["primary_correct"]),
            shadow_correct=int(row["shadow_correct"]),
        )
        for row in rows
    ]
