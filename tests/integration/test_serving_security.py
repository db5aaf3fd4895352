"""Security of the API over real HTTP: API keys, CORS, request timeouts (slowloris included),
no texts or secrets in the server's logs, and the prediction log without texts."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest

from emotitrack.core import model_format
from emotitrack.core.descriptors import DESCRIPTOR_COLUMNS, TextDescriber
from emotitrack.core.prediction_log import PredictionReader
from harness.registries import Registry, make_registry
from harness.servers import ApiServer, start_api

pytestmark = pytest.mark.integration

KEYS = ("key-alpha-7f3e91", "key-beta-0c44d2")
ADMIN_TOKEN = "admin-token-5b9a27"
ORIGIN = "https://dashboard.example"
# A text no log line would contain by chance: if it shows up in the server's output, a text leaked.
MARKER = "zebra-quokka-marmalade-4471"


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(imdb_sample, tmp_path_factory.mktemp("serving-security"))


@pytest.fixture(scope="module")
def guarded(registry: Registry) -> Iterator[ApiServer]:
    """Keys on (as a JSON list), CORS open to one origin, texts not stored."""
    server = start_api(
        registry.tracking_uri,
        registry.workdir,
        api_keys=f'["{KEYS[0]}", "{KEYS[1]}"]',
        admin_token=ADMIN_TOKEN,
        cors_origins=ORIGIN,
        store_text="false",
        log_flush_interval_s="0.1",
    )
    yield server
    assert server.terminate() == 0


def key(n: int = 0) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[n]}"}


def test_keyed_endpoints_need_a_key_that_matches(guarded: ApiServer) -> None:
    with httpx.Client(base_url=guarded.url) as client:
        missing = client.post("/predict", json={"text": "Loved it."})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["detail"] == (
            "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
        )
        for wrong in ({"authorization": "Bearer nope"}, {"x-api-key": KEYS[0][:-1]}):
            refused = client.post("/predict", json={"text": "Loved it."}, headers=wrong)
            assert refused.status_code == 401 and "not accepted" in refused.json()["detail"]
        # either header, either key
        assert (
            client.post("/predict", json={"text": "Loved it."}, headers=key(0)).status_code == 200
        )
        by_header = client.post(
            "/predict", json={"text": "Loved it."}, headers={"x-api-key": KEYS[1]}
        )
        assert by_header.status_code == 200
        request_id = by_header.json()["request_id"]
        for path, body in (
            ("/predict/batch", {"texts": ["Great.", "Awful."]}),
            ("/invocations", {"instances": ["Great."]}),
            ("/feedback", {"request_id": request_id, "label": "positive"}),
        ):
            assert client.post(path, json=body).status_code == 401, path
            assert client.post(path, json=body, headers=key(1)).status_code == 200, path
        # the key is checked before the body is read: no parsing for strangers
        garbage = client.post(
            "/predict", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert garbage.status_code == 401
        for path in ("/health", "/ready", "/model", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path
        # the admin token is its own secret: an API key does not open /admin
        assert client.post("/admin/reload", headers=key(0)).status_code == 401
        admin = client.post("/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        assert admin.status_code == 200


def test_openapi_documents_the_keys(guarded: ApiServer) -> None:
    spec = httpx.get(f"{guarded.url}/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert schemes["ApiKeyBearer"] == {
        **schemes["ApiKeyBearer"],
        "type": "http",
        "scheme": "bearer",
    }
    assert (
        schemes["ApiKeyHeader"]["name"] == "X-API-Key" and schemes["ApiKeyHeader"]["in"] == "header"
    )
    for path in ("/predict", "/predict/batch", "/invocations", "/feedback"):
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"ApiKeyBearer": []}, {"ApiKeyHeader": []}], path
        assert "401" in operation["responses"], path
    assert "security" not in spec["paths"]["/health"]["get"]


def test_fuzzing_with_a_key_finds_the_keys_enforced_and_documented(
    guarded: ApiServer, tmp_path: Path
) -> None:
    """schemathesis from /openapi.json with a key: ``ignored_auth`` repeats each request without
    it and fails if that one is not refused; the 401s must match the documented schema."""
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"), "run", f"{guarded.url}/openapi.json",
            "--max-examples", "25", "--seed", "1", "--no-color",
            "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance,ignored_auth",
            "-H", f"X-API-Key: {KEYS[0]}",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:]
    assert " passed" in done.stdout and "failures" not in done.stdout.split("SUMMARY")[-1]


def test_cors_opens_only_to_the_configured_origin(guarded: ApiServer) -> None:
    preflight = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "x-api-key,content-type",
    }
    allowed = httpx.options(f"{guarded.url}/predict", headers={"origin": ORIGIN, **preflight})
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in allowed.headers["access-control-allow-headers"].lower()
    other = httpx.options(
        f"{guarded.url}/predict", headers={"origin": "https://evil.example", **preflight}
    )
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    answer = httpx.post(
        f"{guarded.url}/predict", json={"text": "Fine."}, headers={"origin": ORIGIN, **key()}
    )
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN


def test_texts_are_hashed_and_described_not_stored(
    guarded: ApiServer, registry: Registry, tmp_path: Path
) -> None:
    texts = ["An utterly delightful film, full of charm!!", "Tedious 2/10 zzzqx blorf."]
    answer = httpx.post(f"{guarded.url}/predict/batch", json={"texts": texts}, headers=key())
    ids = [p["request_id"] for p in answer.json()["predictions"]]
    reader = PredictionReader(f"sqlite:///{registry.workdir / 'predictions.db'}")
    deadline = time.monotonic() + 10
    while (
        len(rows := reader.read().set_index("request_id").reindex(ids).dropna(subset=["label"])) < 2
    ):
        assert time.monotonic() < deadline, "predictions never reached the log"
        time.sleep(0.1)
    assert rows["text"].isna().all()
    assert list(rows["text_sha256"]) == [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    # the same descriptors monitoring computes from a text with the model's own tokenizer
    mlflow.set_tracking_uri(registry.tracking_uri)
    scorer = model_format.read_logged(model_format.download(registry.first.model_uri, tmp_path))
    assert scorer is not None
    expected = TextDescriber.for_model(scorer).describe(texts)
    assert expected["oov_share"].iloc[1] > 0  # a made-up word: the vocabulary was used
    for name in DESCRIPTOR_COLUMNS:
        assert rows[name].tolist() == pytest.approx(expected[name].tolist()), name
    with (registry.workdir / "predictions.db").open("rb") as db:
        assert b"delightful" not in db.read()


def test_no_text_or_secret_reaches_the_logs(registry: Registry, tmp_path: Path) -> None:
    """Everything a client can send that carries a text or a secret, good and bad, then the
    server's whole output (stdout and stderr, INFO and up) is searched for them."""
    server = start_api(
        registry.tracking_uri,
        tmp_path,
        api_keys=",".join(KEYS),
        admin_token=ADMIN_TOKEN,
        max_text_chars="200",
        max_batch_texts="3",
    )
    try:
        text = f"What a film {MARKER}, I loved every minute."
        json_header = {"content-type": "application/json", **key()}
        with httpx.Client(base_url=server.url, headers=key()) as client:
            assert client.post("/predict", json={"text": text}).status_code == 200
            assert client.post("/predict/batch", json={"texts": [text, "ok"]}).status_code == 200
            assert client.post("/invocations", json={"instances": [text]}).status_code == 200
            csv = client.post(
                "/invocations", content=f"text\n{text}\n", headers={"content-type": "text/csv"}
            )
            assert csv.status_code == 200
            refused = [
                client.post("/predict", json={"text": text * 10}),  # too long
                client.post("/predict", json={"text": [text]}),  # wrong type
                client.post("/predict", json={"text": text, "extra": text}),  # extra field
                client.post("/predict", json={"text": f"{text}\u0000"}),  # NUL
                client.post("/predict/batch", json={"texts": [text] * 4}),  # too many
                client.post(
                    "/predict", content=f'{{"text": "{text}"'.encode(), headers=json_header
                ),
                client.post(
                    "/invocations", content=f'{{"rows": ["{text}"]}}'.encode(), headers=json_header
                ),
                client.post("/feedback", json={"request_id": MARKER, "label": "positive"}),
                client.post("/feedback", json={"request_id": MARKER, "label": MARKER}),
                client.post(
                    "/predict", json={"text": text}, headers={"authorization": f"Bearer {MARKER}"}
                ),
                client.post(
                    "/predict",
                    json={"text": text},
                    headers={"authorization": "", "x-api-key": MARKER},
                ),
                client.post("/admin/reload", headers={"authorization": f"Bearer {MARKER}"}),
            ]
            assert all(400 <= r.status_code < 500 for r in refused), [
                r.status_code for r in refused
            ]
            admin = client.post("/admin/reload", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
            assert admin.status_code == 200
    finally:
        code = server.terminate()
    assert code == 0
    output = server.output()
    assert "prediction log store reachable" in output  # the output was captured at INFO
    for secret in (MARKER, "loved every minute", *KEYS, ADMIN_TOKEN):
        assert secret not in output, f"{secret!r} found in the server log:\n{output[-3000:]}"


@pytest.fixture(scope="module")
def impatient(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A one-second request timeout, default size limits."""
    server = start_api(
        registry.tracking_uri, tmp_path_factory.mktemp("impatient"), request_timeout_s="1"
    )
    yield server
    assert server.terminate() == 0


def test_a_slowly_sent_body_gets_408_and_does_not_hold_the_server(impatient: ApiServer) -> None:
    body = b'{"text": "' + b"a" * 80 + b'"}'
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=10) as slow:
        slow.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        answer = b""
        for byte in body:  # one byte every 0.2 s: the whole body would take 18 s
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break  # the server closed the connection
            # meanwhile other clients are served at once
            if byte == body[5]:
                assert httpx.get(f"{impatient.url}/health", timeout=2).status_code == 200
            slow.settimeout(0.2)
            try:
                answer += slow.recv(4096)
            except TimeoutError:
                continue
            if answer:
                break
        slow.settimeout(5)
        while b"\r\n\r\n" in answer and not answer.rstrip().endswith(b"}"):
            answer += slow.recv(4096)
    elapsed = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"request body not received within 1 s" in answer
    assert 0.9 < elapsed < 5
    assert httpx.post(f"{impatient.url}/predict", json={"text": "Lovely."}).status_code == 200


def test_a_request_the_server_cannot_answer_in_time_gets_503(impatient: ApiServer) -> None:
    # 1,000 texts of 20,000 characters: seconds of model work, more than the 1 s allowed
    texts = [f"{i} " + "a good but long film " * 950 for i in range(1000)]
    started = time.monotonic()
    answer = httpx.post(f"{impatient.url}/predict/batch", json={"texts": texts}, timeout=60)
    assert answer.status_code == 503, answer.text[:300]
    assert "not answered within 1 s" in answer.json()["detail"]
    assert time.monotonic() - started < 5
    assert httpx.get(f"{impatient.url}/health", timeout=2).status_code == 200
    # the model thread finishes the abandoned work (scikit-learn cannot be interrupted); then
    # ordinary requests are answered again
    deadline = time.monotonic() + 60
    while (
        httpx.post(f"{impatient.url}/predict", json={"text": "Lovely."}, timeout=5).status_code
        != 200
    ):
        assert time.monotonic() < deadline, "the server never recovered"
        time.sleep(0.5)
    metrics = impatient.scrape()
    assert (
        metrics['emotitrack_http_requests_total{method="POST",route="/predict/batch",status="503"}']
        >= 1
    )
