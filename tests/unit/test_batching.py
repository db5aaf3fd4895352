"""Micro-batching: concurrent requests share model calls and each gets its own rows back."""

from __future__ import annotations

import asyncio

import numpy as np

from serving.batching import MicroBatcher


def test_concurrent_requests_share_calls_and_get_their_own_rows() -> None:
    calls: list[int] = []

    def score(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        values = np.array([float(t) for t in texts])
        return np.column_stack([values, -values])

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(window_ms=5, max_batch=64)
        batcher.start()
        try:
            return await asyncio.gather(
                *(batcher.score(score, [str(i), str(i + 0.5)]) for i in range(40))
            )
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    for i, rows in enumerate(results):
        assert rows[:, 0].tolist() == [i, i + 0.5]
    assert sum(calls) == 80 and len(calls) < 40  # shared calls, nothing scored twice
    assert max(calls) <= 64  # whole requests, never past the limit


def test_a_failing_model_fails_only_its_requests() -> None:
    def broken(texts: list[str]) -> np.ndarray:
        raise RuntimeError("model exploded")

    def fine(texts: list[str]) -> np.ndarray:
        return np.ones((len(texts), 2))

    async def scenario() -> tuple[object, object]:
        batcher = MicroBatcher(window_ms=5, max_batch=64)
        batcher.start()
        try:
            return tuple(
                await asyncio.gather(
                    batcher.score(broken, ["a"]), batcher.score(fine, ["b"]), return_exceptions=True
                )
            )  # type: ignore[return-value]
        finally:
            await batcher.stop()

    failed, ok = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError) and str(failed) == "model exploded"
    assert isinstance(ok, np.ndarray) and ok.shape == (1, 2)


def test_large_requests_go_straight_to_the_model() -> None:
    async def scenario() -> np.ndarray:
        batcher = MicroBatcher(window_ms=1000, max_batch=4)
        batcher.start()
        try:
            return await asyncio.wait_for(
                batcher.score(lambda t: np.zeros((len(t), 2)), ["x"] * 10), timeout=0.5
            )
        finally:
            await batcher.stop()

    assert asyncio.run(scenario()).shape == (10, 2)


def test_shared_calls_never_exceed_max_batch_and_big_requests_go_whole() -> None:
    calls: list[int] = []

    def score(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        values = np.array([float(t) for t in texts])
        return np.column_stack([values, -values])

    async def scenario() -> tuple[np.ndarray, list[np.ndarray]]:
        batcher = MicroBatcher(window_ms=5, max_batch=4)
        batcher.start()
        try:
            big = batcher.score(score, [str(i) for i in range(10)])
            small = [batcher.score(score, [str(i), str(i + 0.5), str(i + 0.25)]) for i in range(5)]
            rows, *others = await asyncio.gather(big, *small)
            return rows, others
        finally:
            await batcher.stop()

    big_rows, small_rows = asyncio.run(scenario())
    assert big_rows[:, 0].tolist() == list(range(10))  # in order, none missing
    for i, rows in enumerate(small_rows):
        assert rows[:, 0].tolist() == [i, i + 0.5, i + 0.25]
    # the 10-text request in one call of its own; the 3-text ones never grouped past 4
    assert sum(calls) == 25 and sorted(calls)[-1] == 10 and sorted(calls)[-2] <= 4, calls


class TwoPlaces:
    """A scorer with a separate in-process path, as ScoringProcess has; records which ran."""

    def __init__(self) -> None:
        self.places: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.places.append("process")
        return np.ones((len(texts), 2))

    def in_process(self, texts: list[str]) -> np.ndarray:
        self.places.append("in-process")
        return np.ones((len(texts), 2))


def test_a_lone_request_scores_in_process_and_a_busy_server_uses_the_process() -> None:
    scorer = TwoPlaces()
    in_flight = 1

    async def scenario() -> None:
        nonlocal in_flight
        batcher = MicroBatcher(window_ms=0, max_batch=64, in_flight=lambda: in_flight)
        batcher.start()
        try:
            await batcher.score(scorer, ["alone"])  # the only request in the server
            in_flight = 8
            await batcher.score(scorer, ["one of eight"])  # others are being parsed
            in_flight = 1
            await batcher.score(scorer, ["a", "batch"])  # two texts: worth the round trip
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert scorer.places == ["in-process", "process", "process"]
