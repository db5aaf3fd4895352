"""MLflow's scoring protocol, differentially: one corpus of payloads sent to `mlflow models serve`
and to our API on the same registered model must get the same status classes, the same
predictions (to 1e-6) and the same MLflow error codes, except where we differ on purpose
(``DIFFERENCES``, each with its reason). And MLflow's own client works against our API.

The payloads come from MLflow's scoring-server documentation (the four JSON formats, ``params``,
CSV) and its own tests (mlflow/mlflow ``tests/pyfunc/test_scoring_server.py``: malformed JSON,
JSON that is not an object, two formats at once, a split/records mix-up, an index that does not
fit the data, empty CSV, ``charset=UTF-8``, unknown Content-Type parameters)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from mlflow.pyfunc.scoring_server.client import ScoringServerClient

from harness.processes import HOST, Server, free_port
from harness.registries import Registry, make_registry
from harness.servers import ApiServer, mlflow_models_serve_command, start_api

pytestmark = pytest.mark.integration
MODEL_URI = "models:/emotitrack-sentiment@production"
JSON = {"content-type": "application/json"}
CSV = {"content-type": "text/csv"}
SPLIT_OF_NUMBERS = json.dumps(
    {"dataframe_split": pd.DataFrame([[1.5], [2.5]]).to_dict(orient="split")}
).encode()

# name -> (body, headers)
CORPUS: dict[str, tuple[bytes, dict[str, str]]] = {
    # valid: every format of the documentation, with and without params
    "split": (
        b'{"dataframe_split": {"columns": ["text"], "data": [["Loved it!"], ["Awful."]]}}',
        JSON,
    ),
    "split_index": (
        b'{"dataframe_split": {"index": [5, 6], "columns": ["text"], '
        b'"data": [["Loved it!"], ["Awful."]]}}',
        JSON,
    ),
    "split_two_columns": (
        b'{"dataframe_split": {"columns": ["id", "text"], "data": [[1, "Loved it!"]]}}',
        JSON,
    ),
    "records": (b'{"dataframe_records": [{"text": "Loved it!"}, {"text": "Awful."}]}', JSON),
    "records_extra_field": (b'{"dataframe_records": [{"text": "Loved it!", "stars": 5}]}', JSON),
    "instances": (b'{"instances": ["Loved it!", "Awful."]}', JSON),
    "instances_records": (b'{"instances": [{"text": "Loved it!"}, {"text": "Awful."}]}', JSON),
    "inputs_columns": (b'{"inputs": {"text": ["Loved it!", "Awful."]}}', JSON),
    "inputs_list": (b'{"inputs": ["Loved it!", "Awful."]}', JSON),
    "inputs_one_text_column": (b'{"inputs": {"text": "Loved it!"}}', JSON),
    "params_explain": (
        b'{"inputs": ["Loved it!", "Dull and far too long."], "params": {"explain": true}}',
        JSON,
    ),
    "params_explain_false": (b'{"instances": ["Loved it!"], "params": {"explain": false}}', JSON),
    "params_empty": (b'{"inputs": ["Loved it!"], "params": {}}', JSON),
    "params_unknown_ignored": (b'{"inputs": ["Loved it!"], "params": {"top_k": 3}}', JSON),
    "params_null": (b'{"inputs": ["Loved it!"], "params": null}', JSON),
    "csv": (b'text\nLoved it!\n"Awful, simply awful."\n', CSV),
    "csv_charset": (b"text\nLoved it!\n", {"content-type": "text/csv; charset=UTF-8"}),
    "json_charset": (
        b'{"inputs": ["Loved it!"]}',
        {"content-type": "application/json; charset=utf-8"},
    ),
    "csv_header_only": (b"text\n", CSV),
    "no_rows": (b'{"inputs": []}', JSON),
    "unicode": ('{"inputs": ["Très bien 😀 — הסרט היה נהדר"]}'.encode(), JSON),
    # invalid
    "malformed_json": (b"this is,,,, not valid json", JSON),
    "empty_body": (b"", JSON),
    "json_number": (b"1", JSON),
    "json_string": (b'"1"', JSON),
    "json_list": (b"[1]", JSON),
    "no_format": (b'{"not": "a serialized dataframe"}', JSON),
    "two_formats": (b'{"dataframe_records": [], "dataframe_split": {"data": []}}', JSON),
    "split_as_records": (b'{"dataframe_split": [{"text": "a"}]}', JSON),
    "records_as_split": (b'{"dataframe_records": {"columns": ["text"], "data": [["a"]]}}', JSON),
    "index_does_not_fit": (
        b'{"dataframe_split": {"index": [1, 2], "data": [[1], [2], [3]]}}',
        JSON,
    ),
    "split_other_column": (b'{"dataframe_split": {"columns": ["review"], "data": [["a"]]}}', JSON),
    # rows that do not fit the columns (pandas refuses them)
    "split_row_too_long": (
        b'{"dataframe_split": {"columns": ["text"], "data": [["a", "b"]]}}',
        JSON,
    ),
    "split_row_too_short": (
        b'{"dataframe_split": {"columns": ["id", "text"], "data": [["a"]]}}',
        JSON,
    ),
    "records_other_column": (b'{"dataframe_records": [{"review": "a"}]}', JSON),
    "inputs_bare_string": (b'{"inputs": "Loved it!"}', JSON),
    "params_wrong_type": (b'{"inputs": ["Loved it!"], "params": {"explain": "yes"}}', JSON),
    "params_not_object": (b'{"inputs": ["Loved it!"], "params": [true]}', JSON),
    "csv_empty": (b"", CSV),
    "csv_other_columns": (b"a,b\n1,2\n", CSV),
    "charset_not_utf8": (b"text\nLoved it!\n", {"content-type": "text/csv; charset=latin-1"}),
    "unknown_content_parameter": (
        b'{"inputs": ["a"]}',
        {"content-type": "application/json; something=something"},
    ),
    "unsupported_content_type": (
        SPLIT_OF_NUMBERS,
        {"content-type": "not_a_supported_content_type"},
    ),
    "invalid_utf8": (b'{"inputs": ["caf\xe9"]}', JSON),
    # where we differ on purpose: see DIFFERENCES
    "numbers": (b'{"instances": [1, 2]}', JSON),
    "null_text": (b'{"instances": [null]}', JSON),
    "blank_text": (b'{"inputs": [""]}', JSON),
    "split_without_columns": (b'{"dataframe_split": {"data": [["Loved it!"]]}}', JSON),
    "no_content_type": (b'{"inputs": ["Loved it!"]}', {}),
}

# name -> (mlflow's status, ours, why we differ)
DIFFERENCES: dict[str, tuple[int, int, str]] = {
    "numbers": (200, 400, "a cell that is not a string is refused, not classified as '1'"),
    "null_text": (200, 400, "null is refused, not classified as the text 'None'"),
    "blank_text": (200, 422, "one rule on every endpoint: blank texts are refused"),
    "split_without_columns": (400, 200, "the one unnamed column is read as the text"),
    "no_content_type": (500, 200, "MLflow fails without a Content-Type; we read JSON"),
}


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(imdb_sample, tmp_path_factory.mktemp("mlflow-protocol"))


@pytest.fixture(scope="module")
def ours(registry: Registry) -> Iterator[ApiServer]:
    server = start_api(registry.tracking_uri, registry.workdir)
    yield server
    assert server.terminate() == 0


@pytest.fixture(scope="module")
def peer(registry: Registry) -> Iterator[Server]:
    """`mlflow models serve --env-manager local` on the same registered model."""
    port = free_port()
    with Server(
        mlflow_models_serve_command(MODEL_URI, port),
        port,
        registry.workdir / f"mlflow-models-serve-{port}.log",
        ready_path="/ping",
        cwd=registry.workdir,
        env={"MLFLOW_TRACKING_URI": registry.tracking_uri},
    ) as server:
        yield server


def send(server: Server, name: str) -> httpx.Response:
    body, headers = CORPUS[name]
    return httpx.post(f"{server.url}/invocations", content=body, headers=headers, timeout=60)


def assert_same_rows(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    assert len(ours) == len(theirs)
    for mine, peer in zip(ours, theirs, strict=True):
        assert set(mine) == set(peer)
        assert mine["label"] == peer["label"]
        for column in set(mine) - {"label", "explanation"}:
            assert mine[column] == pytest.approx(peer[column], abs=1e-6), column
        if "explanation" in peer:
            assert_same_explanation(
                json.loads(mine["explanation"]), json.loads(peer["explanation"])
            )


def assert_same_explanation(mine: dict[str, Any], peer: dict[str, Any]) -> None:
    assert set(mine) == set(peer) and any(peer.values())
    for cls, ngrams in peer.items():
        assert [n["ngram"] for n in mine[cls]] == [n["ngram"] for n in ngrams]
        assert [n["contribution"] for n in mine[cls]] == pytest.approx(
            [n["contribution"] for n in ngrams], abs=1e-6
        )


@pytest.mark.parametrize("name", list(CORPUS))
def test_answers_as_mlflow_models_serve(ours: ApiServer, peer: Server, name: str) -> None:
    mine, theirs = send(ours, name), send(peer, name)
    if name in DIFFERENCES:
        expected_peer, expected_ours, _ = DIFFERENCES[name]
        assert (theirs.status_code, mine.status_code) == (expected_peer, expected_ours)
        return
    assert mine.status_code // 100 == theirs.status_code // 100, (mine.text, theirs.text)
    if theirs.status_code == 200:
        assert_same_rows(mine.json()["predictions"], theirs.json()["predictions"])
        assert len(mine.json()["request_ids"]) == len(mine.json()["predictions"])
        return
    error = mine.json()
    assert error["message"] and error["error_code"]
    # MLflow's 415s are plain text: no code to compare (and we read unknown media types as
    # JSON, so a body that is not JSON gets a 400 there)
    if theirs.headers["content-type"] == "application/json":
        assert error["error_code"] == theirs.json()["error_code"], (error, theirs.text)


def test_the_corpus_covers_both_outcomes_and_every_format() -> None:
    """A corpus that lost its invalid half, or a format, would prove little."""
    bodies = b" ".join(body for body, _ in CORPUS.values())
    for key in (b"dataframe_split", b"dataframe_records", b"instances", b"inputs", b"params"):
        assert key in bodies
    assert any(h == CSV for _, h in CORPUS.values())
    assert set(DIFFERENCES) <= set(CORPUS)


def test_ping_and_version_as_mlflow(ours: ApiServer, peer: Server) -> None:
    for path in ("/ping", "/version"):
        mine, theirs = httpx.get(ours.url + path), httpx.get(peer.url + path)
        assert (mine.status_code, mine.text) == (theirs.status_code, theirs.text), path
    assert httpx.get(ours.url + "/health").json() == {"status": "ok"}  # ours, not MLflow's


def test_mlflow_scoring_client_end_to_end(ours: ApiServer, peer: Server) -> None:
    frame = pd.DataFrame({"text": ["Loved it, a wonderful film.", "Dull and far too long."]})
    answers = {}
    for name, server in (("ours", ours), ("peer", peer)):
        client = ScoringServerClient(HOST, server.port)
        client.wait_server_ready(timeout=30)
        plain = client.invoke(frame).get_predictions()
        explained = client.invoke(frame, params={"explain": True}).get_predictions()
        answers[name] = (plain, explained)
    (plain, explained), (peer_plain, peer_explained) = answers["ours"], answers["peer"]
    assert list(plain["label"]) == ["positive", "negative"]
    assert "explanation" not in plain.columns and "explanation" in explained.columns
    for mine, theirs in ((plain, peer_plain), (explained, peer_explained)):
        assert_same_rows(mine.to_dict("records"), theirs.to_dict("records"))
