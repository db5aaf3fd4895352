"""`POST /predict` with `"explain": true` over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness.registries import make_registry
from harness.servers import ApiServer, start_api

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    registry = make_registry(imdb_sample, tmp_path_factory.mktemp("explain-api"))
    server = start_api(registry.tracking_uri, registry.workdir)
    yield server
    assert server.terminate() == 0


def test_explanation_names_the_ngrams_behind_the_prediction(api: ApiServer) -> None:
    text = "A brilliant, moving film. The best I have seen this year."
    plain = httpx.post(f"{api.url}/predict", json={"text": text}, timeout=30)
    explained = httpx.post(f"{api.url}/predict", json={"text": text, "explain": True}, timeout=30)
    assert plain.status_code == explained.status_code == 200, explained.text
    assert "explanation" not in plain.json()
    body = explained.json()
    assert body["sentiment"] == plain.json()["sentiment"] == "positive"
    assert body["confidence"] == pytest.approx(plain.json()["confidence"])
    explanation = body["explanation"]
    assert set(explanation) == {"negative", "positive"}
    towards_positive = explanation["positive"]
    assert 1 <= len(towards_positive) <= 5
    assert all(item["contribution"] > 0 for item in towards_positive)
    assert {"brilliant", "best", "moving"} & {item["ngram"] for item in towards_positive}


def test_explain_must_be_a_boolean(api: ApiServer) -> None:
    response = httpx.post(
        f"{api.url}/predict", json={"text": "Fine.", "explain": "yes"}, timeout=30
    )
    assert response.status_code == 422
    assert "explain" in response.text
