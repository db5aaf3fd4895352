"""Progress lines for long steps: what is happening, and how long it took."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("emotitrack")


@contextmanager
def step(title: str) -> Iterator[None]:
    """Log ``title …`` when a step starts and ``title: done in N s`` when it ends."""
    log.info("%s ...", title)
    started = time.perf_counter()
    yield
    log.info("%s: done in %.1f s", title, time.perf_counter() - started)


def configure_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
    )
    # MLflow and alembic are chatty at INFO (store migrations, URI notices).
    for noisy in ("mlflow", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
