"""Real servers on free loopback ports: a private PostgreSQL cluster, the MLflow tracking server,
our API (``python -m serving``), MLflow's own scoring server, Prometheus' pushgateway."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from harness.processes import HOST, Server, free_port, process_tree

# A tracking server is not a client of itself: these would point it at another server.
_CLIENT_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


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
    """A throwaway cluster (initdb + pg_ctl) with database ``mlflow``; it can be stopped and
    started again on the same port, or frozen (outage tests)."""

    def __init__(self) -> None:
        self.bindir = postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="emotitrack-pg-"))
        self.root.chmod(0o755)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://emotitrack@{HOST}:{self.port}/mlflow"

    def _run(self, *cmd: str) -> None:
        command = _as_postgres_user([str(self.bindir / cmd[0]), *cmd[1:]])
        subprocess.run(command, check=True, capture_output=True, text=True)  # noqa: S603

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "emotitrack", "--auth=trust", "-E", "UTF8")
        self.start()
        self._run("createdb", "-h", HOST, "-p", str(self.port), "-U", "emotitrack", "mlflow")

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -h {HOST} -k {self.root}", "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Connections are refused until ``start``."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def freeze(self) -> None:
        """SIGSTOP the postmaster and its backends: connections hang, as with a stuck server or
        a silent network path, until ``thaw``."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        with suppress(OSError, ValueError, IndexError):
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
            for pid in process_tree(postmaster):
                with suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def destroy(self) -> None:
        self.thaw()  # a frozen cluster would not stop
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


class MlflowServer:
    """``mlflow server`` with artifact proxying (clients see ``mlflow-artifacts:/`` URIs), on a
    port chosen up front: clients can be pointed at it before it first answers, and it can be
    stopped and started again (tracking-server outages). ``app_name`` (e.g. ``basic-auth``) and
    ``env`` as for the server in compose."""

    def __init__(
        self,
        backend_store_uri: str,
        artifacts: Path,
        log: Path,
        app_name: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = log
        self.command = [
            sys.executable, "-m", "mlflow", "server",
            *(["--app-name", app_name] if app_name else []),
            "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(artifacts),
            "--host", HOST, "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        self.env: dict[str, str | None] = {
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            **(env or {}),
            **dict.fromkeys(_CLIENT_VARIABLES),
        }
        self.server: Server | None = None

    def start(self, timeout: float = 120) -> None:
        # /health answers without credentials even under basic-auth
        self.server = Server(
            self.command, self.port, self.log, cwd=self.log.parent, env=self.env, timeout=timeout
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts: Path,
    log: Path,
    app_name: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """A running :class:`MlflowServer`'s URL, stopped on exit."""
    server = MlflowServer(backend_store_uri, artifacts, log, app_name, env)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def api_command(port: int, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "serving", "--port", str(port), "--workers", str(workers)]


def mlflow_models_serve_command(model_uri: str, port: int, workers: int = 1) -> list[str]:
    """MLflow's own scoring server on the same model: the peer the serving benchmark runs."""
    return [
        sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
        "--env-manager", "local", "--host", HOST, "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


class ApiServer(Server):
    """Our API (``python -m serving``, uvicorn) on a free loopback port, with ``env`` over this
    process's environment; ready when ``ready_path`` answers (``/health``: even with no model)."""

    def __init__(
        self,
        env: Mapping[str, str],
        cwd: Path,
        workers: int = 1,
        *,
        ready_path: str = "/health",
        name: str = "api",
        timeout: float = 60,
    ) -> None:
        port = free_port()
        log = cwd / f"{name}-{port}.log"
        command = api_command(port, workers)
        super().__init__(
            command, port, log, ready_path=ready_path, cwd=cwd, env=env, timeout=timeout
        )

    def scrape(self) -> dict[str, float]:
        return scrape_metrics(self.url)


def api_environment(tracking_uri: str, workdir: Path, **settings: str) -> dict[str, str]:
    """The API's environment on a registry: its prediction log (SQLite) and spill folder in
    ``workdir``; ``settings`` as ``EMOTITRACK_<NAME>`` (``poll_interval_s="1"``)."""
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "EMOTITRACK_PREDICTION_LOG_URL": f"sqlite:///{workdir / 'predictions.db'}",
        "EMOTITRACK_SPILL_DIR": str(workdir / "spill"),
        **{f"EMOTITRACK_{name.upper()}": value for name, value in settings.items()},
    }


def start_api(
    tracking_uri: str,
    workdir: Path,
    workers: int = 1,
    extra_env: Mapping[str, str] | None = None,
    **settings: str,
) -> ApiServer:
    """An :class:`ApiServer` on ``tracking_uri`` whose registry poller stays quiet unless
    ``poll_interval_s`` says otherwise (tests reload on purpose)."""
    settings.setdefault("poll_interval_s", "300")
    env = {**(extra_env or {}), **api_environment(tracking_uri, workdir, **settings)}
    return ApiServer(env, workdir, workers=workers)


def scrape_metrics(url: str) -> dict[str, float]:
    """``/metrics`` as {series: value}, ``*_created`` series left out."""
    text = httpx.get(f"{url}/metrics", timeout=10, follow_redirects=True).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            if not series.split("{")[0].endswith("_created"):
                samples[series] = float(value)
    return samples


@contextmanager
def pushgateway(workdir: Path) -> Iterator[str]:
    """Debian's ``prometheus-pushgateway`` on a free loopback port."""
    port = free_port()
    command = ["prometheus-pushgateway", f"--web.listen-address={HOST}:{port}"]
    with Server(
        command, port, workdir / "pushgateway.log", ready_path="/-/ready", timeout=30
    ) as server:
        yield server.url
