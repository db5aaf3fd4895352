"""The API's contract, checked by schemathesis (its current release, the virtualenv's) against a
live server: every phase (examples, coverage, fuzzing, stateful), every check, and warnings
made failures. A failure here means the OpenAPI document and the server disagree: a documented
request refused, an undocumented one accepted, an answer or status the document does not state.

The rules JSON Schema cannot state (a ``dataframe_split`` row has one cell per column; an
inference tensor's ``shape[0]`` is its number of texts) are in the document's descriptions and
taught to schemathesis by ``api_contract_hooks``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness import REPO
from harness.registries import Registry, make_registry
from harness.servers import ApiServer, start_api

pytestmark = pytest.mark.integration
ADMIN_TOKEN = "s3cret"
PHASES = ("Examples", "Coverage", "Fuzzing", "Stateful")


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return make_registry(imdb_sample, tmp_path_factory.mktemp("api-contract"))


@pytest.fixture(scope="module")
def api(registry: Registry) -> Iterator[ApiServer]:
    """Small limits, so that generated requests cross them; admin on, so its route is tested."""
    server = start_api(
        registry.tracking_uri,
        registry.workdir,
        max_text_chars="200",
        max_batch_texts="5",
        max_body_bytes="20000",
        admin_token=ADMIN_TOKEN,
        log_flush_interval_s="0.1",
    )
    httpx.get(f"{server.url}/ready", timeout=30).raise_for_status()  # the model is loaded
    yield server
    assert server.terminate() == 0


def schemathesis_run(api: ApiServer, workdir: Path, seed: int) -> subprocess.CompletedProcess[str]:
    config = workdir / "schemathesis.toml"
    config.write_text("[warnings]\nfail-on = true\n")  # every warning fails the run
    executable = Path(sys.executable).parent / "schemathesis"
    if not executable.is_file():
        pytest.fail(f"schemathesis not installed at {executable}; run `make test`", pytrace=False)
    return subprocess.run(
        [
            str(executable), "--config-file", str(config), "run", f"{api.url}/openapi.json",
            "--phases", "examples,coverage,fuzzing,stateful", "--checks", "all",
            "--max-examples", "25", "--seed", str(seed), "--generation-database", "none",
            "--no-color", "-H", f"Authorization: Bearer {ADMIN_TOKEN}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=workdir,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SCHEMATHESIS_HOOKS": "tests.integration.api_contract_hooks",
        },
    )  # fmt: skip


def test_schemathesis_finds_no_break_in_any_phase(api: ApiServer, tmp_path: Path) -> None:
    done = schemathesis_run(api, tmp_path, seed=1)
    report = done.stdout
    assert done.returncode == 0, report[-8000:] + done.stderr[-2000:]
    summary = report.split("SUMMARY")[-1]
    for phase in PHASES:  # each phase ran and passed (none skipped, none failed)
        assert f"✅ {phase}" in summary, summary
    assert "No issues found" in summary and "Warnings" not in summary, summary
    document = httpx.get(f"{api.url}/openapi.json").json()
    count = len(operations(document))
    assert "/admin/reload" in document["paths"]
    assert f"Tested: {count}" in summary, summary  # every operation, the admin route included
    assert httpx.get(f"{api.url}/ready").status_code == 200


def resolve(expression: str, answer: dict[str, Any]) -> Any:
    """A ``$response.body#/pointer`` runtime expression, evaluated on ``answer``."""
    value: Any = answer
    for part in expression.removeprefix("$response.body#/").split("/"):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def operations(document: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {
        operation["operationId"]: (path, method)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


def test_predictions_link_to_their_feedback(api: ApiServer) -> None:
    """The links the stateful phase chains: a prediction's request id is what /feedback takes."""
    document = httpx.get(f"{api.url}/openapi.json").json()
    calls = {"/predict": {"text": "Loved it!"}, "/predict/batch": {"texts": ["Dull.", "Fine."]}}
    for path, request in calls.items():
        link = document["paths"][path]["post"]["responses"]["200"]["links"]["Feedback"]
        assert operations(document)[link["operationId"]] == ("/feedback", "post")
        answer = httpx.post(api.url + path, json=request).json()
        body = {key: resolve(value, answer) for key, value in link["requestBody"].items()}
        stored = httpx.post(f"{api.url}/feedback", json={**body, "label": "positive"})
        assert stored.status_code == 200, stored.text


def test_v2_links_lead_to_the_served_version(api: ApiServer) -> None:
    """The model's name is documented (an enum of one); its version comes by link, from the
    metadata or an inference answer, and every linked route answers 200."""
    document = httpx.get(f"{api.url}/openapi.json").json()
    metadata_path = "/v2/models/{name}"
    (name,) = document["paths"][metadata_path]["get"]["parameters"][0]["schema"]["enum"]
    tensor = {"name": "text", "shape": [1], "datatype": "BYTES", "data": ["Loved it!"]}
    sources = {
        (metadata_path, "get"): httpx.get(f"{api.url}/v2/models/{name}").json(),
        ("/v2/models/{name}/infer", "post"): httpx.post(
            f"{api.url}/v2/models/{name}/infer", json={"inputs": [tensor]}
        ).json(),
    }
    followed = set()
    for (path, method), answer in sources.items():
        links = document["paths"][path][method]["responses"]["200"]["links"]
        for link in links.values():
            target, target_method = operations(document)[link["operationId"]]
            for parameter, expression in link["parameters"].items():
                target = target.replace(f"{{{parameter}}}", str(resolve(expression, answer)))
            assert target.startswith(f"/v2/models/{name}/versions/1"), target
            response = httpx.request(target_method, api.url + target, json={"inputs": [tensor]})
            assert response.status_code == 200, (target, response.text)
            followed.add(target)
    assert len(followed) == 3  # metadata, readiness and inference of version 1
