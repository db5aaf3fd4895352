"""An alert travels the whole on-call path: a real Prometheus scrapes a real API and evaluates
the project's alerts.yml, a real Alertmanager (configured by the compose entrypoint) delivers the
notification to a webhook on loopback, and the resolution follows once the API is back.

Test timings, in rendered copies of the deploy files (harness/alerting.py): scrape and rule
evaluation every second, every rule's ``for:`` 3 s, Alertmanager's group waits 1 s."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from harness.alerting import (
    Notification,
    alertmanager,
    prometheus,
    query,
    render_prometheus_config,
    render_rules,
    webhook_receiver,
)
from harness.processes import HOST, Server, free_port, wait_until
from harness.servers import api_command, api_environment

pytestmark = pytest.mark.integration
BUDGET_S = 90


def require(*tools: str) -> None:
    for name in tools:
        if shutil.which(name) is None:
            pytest.fail(f"{name} is not installed: run `make system-deps`", pytrace=False)


def timestamp(text: str) -> datetime:
    """Alertmanager's RFC 3339 time (nanoseconds, ``Z``) as an aware datetime."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00"))


def api_down(notification: Notification, status: str, after: datetime) -> bool:
    """A notification of ``status`` carrying EmotiTrackAPIDown that started after ``after``."""
    return notification["status"] == status and any(
        alert["labels"]["alertname"] == "EmotiTrackAPIDown"
        and alert["status"] == status
        and timestamp(alert["startsAt"]) > after
        for alert in notification["alerts"]
    )


def test_the_api_down_alert_is_delivered_and_then_resolved(tmp_path: Path) -> None:
    require("prometheus", "prometheus-alertmanager", "amtool")
    began = time.monotonic()
    # An empty registry: the API answers /metrics without a model, which is all `up` needs.
    env = api_environment(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, poll_interval_s="300")
    port = free_port()

    def start_api(name: str) -> Server:
        return Server(api_command(port), port, tmp_path / f"{name}.log", cwd=tmp_path, env=env)

    api = start_api("api-before")
    try:
        with webhook_receiver() as receiver, alertmanager(tmp_path, receiver.url) as manager:
            # the config Alertmanager runs is what the entrypoint rendered from the compose file
            checked = subprocess.run(
                ["amtool", "check-config", str(tmp_path / "alertmanager.yml")],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert checked.returncode == 0, checked.stdout + checked.stderr
            assert receiver.url in (tmp_path / "alertmanager.yml").read_text()

            config = render_prometheus_config(
                tmp_path / "prometheus.yml",
                render_rules(tmp_path / "alerts.yml", pending="3s"),
                alertmanager=manager.url.removeprefix("http://"),
                api_targets=[f"{HOST}:{port}"],
            )
            with prometheus(tmp_path, config) as server:
                wait_until(
                    lambda: bool(query(server.url, 'up{job="emotitrack-api"} == 1')),
                    timeout=30, what="Prometheus to scrape the API",
                )  # fmt: skip
                # before the first scrape nothing is `up`: with a 3 s `for:` the alert may fire and
                # resolve at start; only an alert that starts after the API stops counts below
                wait_until(
                    lambda: not query(server.url, 'ALERTS{alertname="EmotiTrackAPIDown"}'),
                    timeout=30, what="a quiet start",
                )  # fmt: skip

                stopped_at = datetime.now(UTC)
                api.stop()
                firing = receiver.wait_for(
                    lambda n: api_down(n, "firing", stopped_at), timeout=45, what="firing alert"
                )
                alert = next(
                    a for a in firing["alerts"] if a["labels"]["alertname"] == "EmotiTrackAPIDown"
                )
                assert firing["receiver"] == "webhook"
                assert alert["labels"]["severity"] == "page"
                assert alert["annotations"]["runbook_url"] == "docs/runbook.md#emotitrackapidown"
                assert alert["generatorURL"].startswith(server.url)  # links back to the rule

                api = start_api("api-after")  # the cause goes away: the same address answers
                resolved = receiver.wait_for(
                    lambda n: api_down(n, "resolved", stopped_at), timeout=45, what="resolution"
                )
                ended = next(
                    a for a in resolved["alerts"] if a["labels"]["alertname"] == "EmotiTrackAPIDown"
                )
                assert ended["startsAt"] == alert["startsAt"]  # the same alert, now over
                assert timestamp(ended["endsAt"]) > timestamp(alert["startsAt"])
    finally:
        api.stop()
    assert time.monotonic() - began < BUDGET_S
