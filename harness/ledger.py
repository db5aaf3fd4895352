"""What clients sent and were acknowledged, and its reconciliation with the prediction log.

Every text a client sends carries a unique tag (``[soak 17] ...``), so an acknowledged prediction
can be found in the log even where the API returned no request id (``/invocations``)."""

from __future__ import annotations

import random
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from emotitrack.core.prediction_log import FEEDBACK, PREDICTIONS, create_store_engine

ROUTES = ("/predict", "/predict/batch", "/invocations", "/feedback")
TAG = re.compile(r"^\[soak (\d+)\] ")


def tagged(tag: int, text: str) -> str:
    return f"[soak {tag}] {text}"


@dataclass
class Promotion:
    version: str
    at_s: float  # seconds into the run when the alias moved
    served_after_s: float | None = None  # until the first answer from that version


@dataclass
class Ledger:
    """What the clients sent and were acknowledged; everything a soak report is built from."""

    started: float = field(default_factory=time.monotonic)
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in ROUTES})
    failures: Counter[str] = field(default_factory=Counter)
    failure_samples: list[str] = field(default_factory=list)
    acked_tags: set[int] = field(default_factory=set)  # every acknowledged prediction's tag
    acked_ids: dict[str, int] = field(default_factory=dict)  # request id -> tag
    ack_times: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, predictions)
    feedback_queue: deque[tuple[str, str]] = field(default_factory=deque)
    feedback_acked: set[str] = field(default_factory=set)
    feedback_deferred: int = 0  # 503 while the log store was down: retried later
    versions: Counter[str] = field(default_factory=Counter)
    promotions: list[Promotion] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)
    cut_by_kill: int = 0  # requests without an answer because the server was killed
    killed_at: float | None = None
    outage: tuple[float, float] | None = None  # seconds into the run
    cpu_cores: dict[str, float] = field(default_factory=dict)
    queue_depth: list[tuple[float, float]] = field(default_factory=list)  # the log's, sampled

    def now_s(self) -> float:
        return time.monotonic() - self.started

    def total(self) -> int:
        return sum(len(v) for v in self.latencies_ms.values()) + sum(self.failures.values())

    def fail(self, route: str, what: str) -> None:
        self.failures[route] += 1
        if len(self.failure_samples) < 10:
            self.failure_samples.append(f"{self.now_s():.1f}s {route}: {what[:300]}")

    def acknowledge(self, tags: list[int], ids: list[str | None], labels: list[str]) -> None:
        self.acked_tags.update(tags)
        self.ack_times.append((time.monotonic(), len(tags)))
        for tag, request_id, label in zip(tags, ids, labels, strict=True):
            if request_id is not None:
                self.acked_ids[request_id] = tag
                if random.random() < 0.25:  # noqa: S311 - feedback for a share of the answers
                    self.feedback_queue.append((request_id, label))

    def saw_version(self, version: str) -> None:
        self.versions[version] += 1
        latest = self.promotions[-1] if self.promotions else None
        if latest and latest.version == version and latest.served_after_s is None:
            latest.served_after_s = self.now_s() - latest.at_s

    def acked_before_kill(self, window_s: float) -> int:
        """Predictions acknowledged in the last ``window_s`` before the SIGKILL."""
        assert self.killed_at is not None
        return sum(n for at, n in self.ack_times if self.killed_at - window_s <= at)


def reconcile(log_url: str, ledger: Ledger) -> dict[str, Any]:
    """The prediction log against what the clients were acknowledged, by text tag and by id."""
    engine = create_store_engine(log_url)
    head = sa.func.substr(PREDICTIONS.c.text, 1, 32)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(PREDICTIONS.c.request_id, head)).all()
        feedback = {r[0] for r in conn.execute(sa.select(FEEDBACK.c.request_id))}
    engine.dispose()
    tag_of_id: dict[str, int] = {}
    logged: Counter[int] = Counter()
    for request_id, text_head in rows:
        found = TAG.match(text_head)
        if found:
            tag_of_id[request_id] = int(found.group(1))
            logged[int(found.group(1))] += 1
    return {
        "acknowledged": len(ledger.acked_tags),
        "logged": len(rows),
        "missing": len(ledger.acked_tags - logged.keys()),
        "duplicates": sum(count - 1 for count in logged.values() if count > 1),
        "logged_not_acknowledged": len(logged.keys() - ledger.acked_tags),
        "ids_acknowledged": len(ledger.acked_ids),
        "ids_missing": sum(1 for i in ledger.acked_ids if i not in tag_of_id),
        "ids_with_wrong_text": sum(
            1 for i, tag in ledger.acked_ids.items() if i in tag_of_id and tag_of_id[i] != tag
        ),
        "feedback_acknowledged": len(ledger.feedback_acked),
        "feedback_missing": len(ledger.feedback_acked - feedback),
        "feedback_not_acknowledged": len(feedback - ledger.feedback_acked),
    }
