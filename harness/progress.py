"""Progress lines for long runs (benchmarks, soak): a timestamp and the message, flushed."""

from __future__ import annotations

import time


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)
