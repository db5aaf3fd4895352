"""The alert path on loopback: a real Prometheus evaluating the project's rules, a real
Alertmanager (Debian's ``prometheus-alertmanager``, started through the compose entrypoint that
renders its config) and a webhook receiver that records what Alertmanager delivers.

The deploy files are rendered into a work folder with test timings (scrape and evaluation every
second, ``for:`` and Alertmanager's waits shortened) and loopback addresses (no Docker DNS here);
everything else is the files compose runs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness import REPO
from harness.processes import HOST, Server, free_port

PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
ALERTMANAGER_DIR = REPO / "deploy" / "alertmanager"

Notification = dict[str, Any]  # Alertmanager's webhook body (version 4)


class WebhookReceiver:
    """An HTTP server thread on loopback that keeps every JSON body POSTed to it, in order."""

    def __init__(self) -> None:
        self._notifications: list[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver._notifications.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: the test reads the notifications, not an access log."""

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self._server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def notifications(self) -> list[Notification]:
        with self._lock:
            return list(self._notifications)

    def wait_for(
        self, check: Callable[[Notification], bool], timeout: float, what: str
    ) -> Notification:
        """The first notification ``check`` accepts, polling until ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            for notification in self.notifications():
                if check(notification):
                    return notification
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout:.0f} s: {self.notifications()}")
            time.sleep(0.2)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


def render_rules(target: Path, pending: str, source: Path = PROMETHEUS_DIR / "alerts.yml") -> Path:
    """``alerts.yml`` with every rule's ``for:`` set to ``pending`` (e.g. ``3s``)."""
    rules = yaml.safe_load(source.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = pending
    target.write_text(yaml.safe_dump(rules, sort_keys=False))
    return target


def render_prometheus_config(
    target: Path, rules: Path, alertmanager: str, api_targets: Sequence[str]
) -> Path:
    """``prometheus.yml`` scraping and evaluating every second, the API at ``api_targets``
    (``host:port``; compose finds replicas through Docker's DNS instead) and alerting to
    ``alertmanager`` (``host:port``)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(rules)]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [alertmanager]}]
    for job in config["scrape_configs"]:
        if job["job_name"] == "emotitrack-api":
            job.pop("dns_sd_configs")
            job["static_configs"] = [{"targets": list(api_targets)}]
    config["scrape_configs"] = [
        job for job in config["scrape_configs"] if job["job_name"] == "emotitrack-api"
    ]
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def render_alertmanager_template(target: Path, wait: str = "1s") -> Path:
    """``alertmanager.yml`` (still with its URL placeholder) with every route's waits and
    intervals set to ``wait``, so a firing and its resolution arrive within seconds."""
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    routes = [config["route"]]
    while routes:
        route = routes.pop()
        for key in ("group_wait", "group_interval"):
            if key in route:
                route[key] = wait
        routes.extend(route.get("routes", []))
    target.write_text(yaml.safe_dump(config, sort_keys=False))
    return target


def alertmanager_command(port: int, storage: Path) -> list[str]:
    """The compose entrypoint, with Debian's binary; clustering off (one instance)."""
    return [
        "sh", str(ALERTMANAGER_DIR / "entrypoint.sh"),
        f"--storage.path={storage}", f"--web.listen-address={HOST}:{port}",
        "--cluster.listen-address=",
    ]  # fmt: skip


@contextmanager
def alertmanager(workdir: Path, webhook_url: str, wait: str = "1s") -> Iterator[Server]:
    """Alertmanager on a free loopback port delivering to ``webhook_url``; its config rendered
    by ``deploy/alertmanager/entrypoint.sh`` from the compose template with ``wait`` timings."""
    port = free_port()
    template = render_alertmanager_template(workdir / "alertmanager-template.yml", wait)
    env = {
        "ALERTMANAGER_BIN": "prometheus-alertmanager",
        "ALERTMANAGER_TEMPLATE": str(template),
        "ALERTMANAGER_CONFIG": str(workdir / "alertmanager.yml"),
        "ALERTMANAGER_WEBHOOK_URL": webhook_url,
    }
    command = alertmanager_command(port, workdir / "alertmanager-data")
    with Server(
        command, port, workdir / "alertmanager.log", ready_path="/-/ready", env=env, timeout=30
    ) as server:
        yield server


@contextmanager
def prometheus(workdir: Path, config: Path) -> Iterator[Server]:
    """Prometheus on a free loopback port with ``config`` and its own storage in ``workdir``."""
    port = free_port()
    command = [
        "prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address={HOST}:{port}", f"--web.external-url=http://{HOST}:{port}",
    ]  # fmt: skip
    with Server(
        command, port, workdir / "prometheus.log", ready_path="/-/ready", timeout=60
    ) as server:
        yield server


def query(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """An instant PromQL query's result vector; a query Prometheus rejects raises."""
    answer = httpx.get(f"{prometheus_url}/api/v1/query", params={"query": expr}, timeout=10)
    body = answer.json()
    if body.get("status") != "success":
        raise ValueError(f"{expr}: {body}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result
