"""Traffic generators against our API: a few threaded ``/predict`` clients that keep every
answer, and the soak's mixed load (every route, tagged texts, a ledger)."""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import Counter
from typing import Any

import aiohttp
import httpx
import orjson

from harness.ledger import Ledger, tagged


class Traffic:
    """Clients sending ``/predict`` until the block ends; every response is kept."""

    def __init__(self, url: str, clients: int = 2) -> None:
        self.url = url
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.request_ids: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _send(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self._stop.is_set():
                i += 1
                response = client.post(
                    "/predict", json={"text": f"review {i}: loved it, great cast"}
                )
                with self._lock:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 200:
                        body = response.json()
                        self.versions[body["model_version"]] += 1
                        self.request_ids.append(body["request_id"])

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


class MixedTraffic:
    """``concurrency`` clients, each sending one request at a time until ``stopping`` is set:
    seven in eight send ``/predict``, ``/predict/batch`` or ``/invocations`` with tagged real
    texts, one in eight sends ``/feedback`` for ids it got back. All of it goes to ``ledger``."""

    def __init__(
        self,
        url: str,
        texts: list[str],
        ledger: Ledger,
        *,
        concurrency: int,
        batch_texts: int = 8,
        invocation_texts: int = 4,
        seed: int = 42,
        feedback_may_wait: bool = False,
    ) -> None:
        self.url = url
        self.texts = texts
        self.ledger = ledger
        self.concurrency = concurrency
        self.batch_texts = batch_texts
        self.invocation_texts = invocation_texts
        self.feedback_may_wait = feedback_may_wait  # the log store goes away: 503 is expected
        self.tags = itertools.count(1)
        self.stopping = asyncio.Event()
        self.rng = random.Random(seed)  # noqa: S311 - a reproducible mix

    def tagged(self, count: int) -> tuple[list[int], list[str]]:
        tags = [next(self.tags) for _ in range(count)]
        return tags, [tagged(tag, self.rng.choice(self.texts)) for tag in tags]

    def choose_route(self) -> str:
        draw = self.rng.random()
        if draw < 0.5:
            return "/predict"
        return "/predict/batch" if draw < 0.78 else "/invocations"

    async def run(self) -> None:
        # aiohttp, not httpx: its client costs the server less CPU on a shared machine
        # (benchmarks/README.md); it is locked anyway, as a dependency of mlflow.
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(self.url, connector=connector, timeout=timeout) as client:
            # other users than those asking for predictions: a stuck /feedback (it needs the
            # store) cannot starve the prediction clients
            feedback = self.concurrency // 8
            await asyncio.gather(
                *(self.predicting(client) for _ in range(self.concurrency - feedback)),
                *(self.giving_feedback(client) for _ in range(feedback)),
            )

    async def predicting(self, client: aiohttp.ClientSession) -> None:
        while not self.stopping.is_set():
            await self.send_prediction(client, self.choose_route())

    async def giving_feedback(self, client: aiohttp.ClientSession) -> None:
        while not self.stopping.is_set():
            if self.ledger.feedback_queue:
                await self.send_feedback(client)
            else:
                await asyncio.sleep(0.01)

    async def send_prediction(self, client: aiohttp.ClientSession, route: str) -> None:
        count = {"/predict": 1, "/predict/batch": self.batch_texts}.get(
            route, self.invocation_texts
        )
        tags, texts = self.tagged(count)
        body: dict[str, Any] = (
            {"text": texts[0]}
            if route == "/predict"
            else {"texts": texts}
            if route == "/predict/batch"
            else {"dataframe_split": {"columns": ["text"], "data": [[t] for t in texts]}}
        )
        response = await self.post(client, route, body)
        if response is None:
            return
        status, payload = response
        if status != 200:
            self.ledger.fail(route, f"{status} {payload[:300]!r}")
            return
        answer = orjson.loads(payload)
        predictions = [answer] if route == "/predict" else answer["predictions"]
        if len(predictions) != count:
            self.ledger.fail(route, f"{len(predictions)} predictions for {count} texts")
            return
        if route == "/invocations":  # MLflow's response shape: no request id, no version
            self.ledger.acknowledge(tags, [None] * count, [p["label"] for p in predictions])
            return
        self.ledger.saw_version(str(answer["model_version"]))
        self.ledger.acknowledge(
            tags, [p["request_id"] for p in predictions], [p["sentiment"] for p in predictions]
        )

    async def send_feedback(self, client: aiohttp.ClientSession) -> None:
        request_id, label = self.ledger.feedback_queue.popleft()
        response = await self.post(client, "/feedback", {"request_id": request_id, "label": label})
        if response is None:
            return
        status, payload = response
        if status == 200:
            self.ledger.feedback_acked.add(request_id)
        elif status == 503 and self.feedback_may_wait:
            # by design while the log store is down ("retry later"): a client retries
            self.ledger.feedback_deferred += 1
            self.ledger.feedback_queue.append((request_id, label))
        else:
            self.ledger.fail("/feedback", f"{status} {payload[:300]!r}")

    async def post(
        self, client: aiohttp.ClientSession, route: str, body: dict[str, Any]
    ) -> tuple[int, bytes] | None:
        """(status, body) of one request, or None when it got no answer."""
        started = time.perf_counter()
        try:
            async with client.post(
                route, data=orjson.dumps(body), headers={"content-type": "application/json"}
            ) as answer:
                response = answer.status, await answer.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            if self.ledger.killed_at is not None:
                self.ledger.cut_by_kill += 1  # never acknowledged: not a failure
                self.stopping.set()
            else:
                self.ledger.fail(route, f"{type(exc).__name__}: {exc}")
            return None
        if response[0] == 200:
            self.ledger.latencies_ms[route].append((time.perf_counter() - started) * 1000)
        return response
