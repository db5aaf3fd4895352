"""HAProxy (Debian) in front of API replicas on loopback, run from the compose configuration
(``deploy/haproxy/haproxy.cfg``) with only its backend servers, listening ports and runtime API
socket replaced."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from harness import REPO
from harness.processes import HOST, free_port, spawn, stop_group, wait_for_http

CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
_TEMPLATE = re.compile(r"^(\s*)server-template\s+\S+\s+\d+\s+\S+\s+(.*)$", re.MULTILINE)
_DNS_OPTIONS = re.compile(r"\s+(resolvers\s+\S+|init-addr\s+\S+)")


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None
    )
    if found is None:
        raise RuntimeError("haproxy not found; run `make system-deps` (Debian package haproxy)")
    return found


def render_config(
    servers: Sequence[tuple[str, int]],
    port: int,
    stats_port: int,
    admin_socket: Path,
    source: str | None = None,
) -> str:
    """The compose configuration with its ``server-template`` line turned into one ``server``
    line per (name, loopback port), same options but DNS, its binds on loopback ports and its
    runtime API socket at ``admin_socket``."""
    text = CONFIG.read_text() if source is None else source
    found = _TEMPLATE.search(text)
    if found is None:
        raise ValueError(f"no server-template line in {CONFIG}")
    indent, options = found.group(1), _DNS_OPTIONS.sub("", found.group(2)).strip()
    lines = "\n".join(f"{indent}server {name} {HOST}:{p} {options}" for name, p in servers)
    text = text[: found.start()] + lines + text[found.end() :]
    swaps = [
        (r"^(\s*bind\s+):8000\s*$", f"{HOST}:{port}"),
        (r"^(\s*bind\s+):8404\s*$", f"{HOST}:{stats_port}"),
        (r"^(\s*stats socket\s+)\S+", str(admin_socket)),
    ]
    for pattern, value in swaps:
        text, count = re.subn(pattern, _keeping_prefix(value), text, flags=re.MULTILINE)
        if count != 1:
            raise ValueError(f"expected one line matching {pattern!r} in {CONFIG}")
    return text


def _keeping_prefix(value: str) -> Callable[[re.Match[str]], str]:
    return lambda found: found.group(1) + value


def check_config(path: Path) -> str:
    """``haproxy -c -f path``: its output; raises with it when the file is refused."""
    done = subprocess.run(  # noqa: S603 - Debian's haproxy on a file the harness wrote
        [haproxy_binary(), "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"haproxy -c refused {path}:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


class LoadBalancer:
    """HAProxy in the foreground (``-db``) on free loopback ports, its access log (one JSON
    object per request) and warnings in ``workdir/haproxy.log``."""

    def __init__(self, servers: Sequence[tuple[str, int]], workdir: Path) -> None:
        self.port, self.stats_port = free_port(), free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.stats_url = f"http://{HOST}:{self.stats_port}"
        self.config = workdir / "haproxy.cfg"
        self.admin_socket = workdir / "haproxy-admin.sock"
        self.config.write_text(
            render_config(servers, self.port, self.stats_port, self.admin_socket)
        )
        check_config(self.config)
        self.log = workdir / "haproxy.log"
        self.process = spawn([haproxy_binary(), "-db", "-f", str(self.config)], self.log)
        try:
            wait_for_http(f"{self.stats_url}/metrics", self.process, 30, self.log)
        except BaseException:
            stop_group(self.process, grace=5)
            raise

    def _servers(self) -> list[dict[str, str]]:
        text = httpx.get(f"{self.stats_url}/stats;csv", timeout=5).text.lstrip("# ")
        return [
            row
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "api" and row["svname"] not in ("FRONTEND", "BACKEND")
        ]

    def server_states(self) -> dict[str, str]:
        """Each backend server's state (``UP``, ``DOWN``, ``DRAIN``, ``MAINT``...)."""
        return {row["svname"]: row["status"] for row in self._servers()}

    def sessions(self, server: str) -> int:
        """Requests the server holds now (``scur``)."""
        return next(int(row["scur"] or 0) for row in self._servers() if row["svname"] == server)

    def runtime(self, command: str) -> str:
        """One command to HAProxy's runtime API (its admin socket); the answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.admin_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def set_state(self, server: str, state: str) -> None:
        """``ready``, ``drain`` (no new requests; health checks go on) or ``maint``."""
        answer = self.runtime(f"set server api/{server} state {state}").strip()
        if answer:
            raise RuntimeError(f"HAProxy refused `set server api/{server} state {state}`: {answer}")

    def wait_for_states(self, expected: dict[str, str], timeout: float = 30) -> float:
        """Until the named servers are in the given states; how long that took."""
        started = time.monotonic()
        while True:
            states = self.server_states()
            if all(states.get(name, "").startswith(s) for name, s in expected.items()):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"servers {states}, expected {expected}")
            time.sleep(0.05)

    def access_log(self) -> list[dict[str, Any]]:
        """Every request logged so far (the log also holds HAProxy's own warnings)."""
        entries = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith('{"id":'):
                entries.append(json.loads(line))
        return entries

    def stop(self) -> None:
        stop_group(self.process, grace=10)

    def __enter__(self) -> LoadBalancer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
