"""The real server's scoring child: it scores once up, its loss under load fails no request, it
follows a promotion, and it never outlives the server."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from harness.processes import wait_until
from harness.registries import SMALL
from harness.servers import ApiServer
from harness.traffic import Traffic
from training.registry import promote
from training.settings import TrainingSettings
from training.train import TrainingResult, train

pytestmark = pytest.mark.integration


def scoring_children(server: ApiServer) -> list[int]:
    """PIDs of the server's spawned children that run ``spawn_main`` (not the resource tracker)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if parent == server.process.pid and "spawn_main" in command:
            found.append(int(proc.name))
    return found


def scoring_place(server: ApiServer) -> str:
    return str(httpx.get(f"{server.url}/ready", timeout=10).json()["scoring"])


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.timeout(180)
def test_killing_the_scoring_child_under_load_fails_no_request(
    promoted: TrainingResult, api_factory: Callable[..., ApiServer]
) -> None:
    server = api_factory()
    wait_until(lambda: scoring_place(server) == "process", 60, "the scoring child")
    [child] = scoring_children(server)
    assert server.scrape()["emotitrack_scoring_process_up"] == 1

    with Traffic(server.url, clients=4) as traffic:
        wait_until(lambda: traffic.total > 200, 30, "traffic")
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: not alive(child), 10, "the child to die")
        wait_until(
            lambda: scoring_place(server) == "process" and scoring_children(server) != [child],
            60,
            "a new scoring child",
        )
        before = traffic.total
        wait_until(lambda: traffic.total > before + 100, 30, "traffic on the new child")

    assert set(traffic.statuses) == {200}, traffic.statuses
    assert "scoring process for version 1 lost" in server.output()
    [replacement] = scoring_children(server)
    assert server.terminate() == 0
    assert not alive(replacement)


@pytest.mark.timeout(240)
def test_a_promotion_moves_scoring_to_the_new_versions_child(
    promoted: TrainingResult, settings: TrainingSettings, api_factory: Callable[..., ApiServer]
) -> None:
    server = api_factory(admin_token="t0ken")
    wait_until(lambda: scoring_place(server) == "process", 60, "the scoring child")
    [first] = scoring_children(server)
    second = train(settings, SMALL)
    promote(settings, second.version, reason="scoring child test")
    reload = httpx.post(
        f"{server.url}/admin/reload", headers={"Authorization": "Bearer t0ken"}, timeout=60
    )
    assert reload.json()["outcome"] == "loaded"
    wait_until(lambda: not alive(first), 30, "the old version's child to stop")
    wait_until(lambda: scoring_place(server) == "process", 60, "the new version's child")
    answer = httpx.post(f"{server.url}/predict", json={"text": "a fine film"}, timeout=10)
    assert answer.json()["model_version"] == second.version
    assert f"scoring process for version {second.version} up" in server.output()


def test_scoring_in_process_when_the_child_is_switched_off(
    promoted: TrainingResult, api_factory: Callable[..., ApiServer]
) -> None:
    server = api_factory(scoring_process="false")
    answer = httpx.post(f"{server.url}/predict", json={"text": "a fine film"}, timeout=10)
    assert answer.status_code == 200
    assert scoring_place(server) == "in-process"
    assert scoring_children(server) == []
    assert server.scrape()["emotitrack_scoring_process_up"] == 0
