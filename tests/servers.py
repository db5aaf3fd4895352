"""Real servers for tests: a private PostgreSQL cluster and an MLflow tracking server.

Both listen on free loopback ports and are stopped by the fixture that started them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found; run `make system-deps`")
    return found[-1].parent


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: drop to the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


class PostgresCluster:
    """A throwaway cluster (initdb + pg_ctl) with database ``mlflow``; can be stopped and
    restarted on the same port (outage tests)."""

    def __init__(self) -> None:
        self.bindir = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="emotitrack-pg-"))
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://emotitrack@127.0.0.1:{self.port}/mlflow"

    def _run(self, *cmd: str) -> None:
        command = _as_postgres_user([str(self.bindir / cmd[0]), *cmd[1:]])
        subprocess.run(command, check=True, capture_output=True, text=True)

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "emotitrack", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "emotitrack", "mlflow")

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -h 127.0.0.1 -k {self.root}", "start",
        )  # fmt: skip

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.destroy()


def wait_for_http(
    url: str, process: subprocess.Popen[bytes], timeout: float = 120, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log else ""
            raise RuntimeError(f"server for {url} exited with {process.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} not up after {timeout:.0f} s")


@contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts: Path,
    log: Path,
    app_name: str | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """``mlflow server`` with artifact proxying (clients see ``mlflow-artifacts:/`` URIs);
    ``app_name`` (e.g. ``basic-auth``) and ``env`` as for the server in compose."""
    port = free_port()
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        environment.pop(name, None)  # the server is not a client of itself
    command = [
        sys.executable, "-m", "mlflow", "server",
        *(["--app-name", app_name] if app_name else []),
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", str(artifacts),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            command, env=environment, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/health", process, log=log)  # /health is open even with auth
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


class MlflowServer:
    """``mlflow server`` on a loopback port chosen up front, stopped and started again at will
    (tracking-server outages): clients can be pointed at it before it first answers."""

    def __init__(self, backend_store_uri: str, artifacts: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(artifacts),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        env.pop("MLFLOW_TRACKING_URI", None)
        with self.log.open("ab") as out:  # its own session: stop() reaches its workers too
            self.process = subprocess.Popen(
                self.command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for_http(f"{self.url}/health", self.process, timeout=timeout, log=self.log)

    def stop(self) -> None:
        if self.process is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with suppress(ProcessLookupError):  # a worker may outlive its parent for a moment
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None


class ApiServer:
    """``python -m serving`` (uvicorn) on a free loopback port, with the given environment."""

    def __init__(self, env: dict[str, str], cwd: Path, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"api-{self.port}.log"
        self._out = self.log.open("wb")
        command = [
            sys.executable,
            "-m",
            "serving",
            "--port",
            str(self.port),
            "--workers",
            str(workers),
        ]
        self.process = subprocess.Popen(
            command, env={**os.environ, **env}, cwd=cwd, stdout=self._out, stderr=subprocess.STDOUT
        )
        try:
            wait_for_http(f"{self.url}/health", self.process, timeout=60, log=self.log)
        except BaseException:
            self.process.kill()
            self.process.wait()
            raise

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM and wait: the graceful shutdown users get from their orchestrator."""
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout=timeout)
        self._out.close()
        return code

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def scrape(self) -> dict[str, float]:
        """``/metrics`` as {series: value}."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=10) as response:  # noqa: S310
            text = response.read().decode()
        return {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }


@contextmanager
def pushgateway(workdir: Path) -> Iterator[str]:
    """Debian's ``prometheus-pushgateway`` on a free loopback port."""
    port = free_port()
    log = workdir / "pushgateway.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_for_http(f"{url}/-/ready", process, timeout=30, log=log)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)
