"""Child processes: loopback ports, servers in their own session, waiting, what they use."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import TracebackType

import httpx

HOST = "127.0.0.1"  # every server the harness starts listens on loopback only


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, chars: int = 3000) -> str:
    with suppress(OSError):
        return path.read_text(errors="replace")[-chars:]
    return ""


def wait_until(
    check: Callable[[], bool], timeout: float = 30, what: str = "condition", interval: float = 0.2
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_for_http(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float = 120,
    log: Path | None = None,
    interval: float = 0.3,
) -> None:
    """Until ``url`` answers 200; fails at once (with the log's end) if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"server for {url} exited with {process.returncode}\n{tail(log) if log else ''}"
            )
        with suppress(httpx.HTTPError):  # not listening yet
            if httpx.get(url, timeout=2, follow_redirects=True).status_code == 200:
                return
        time.sleep(interval)
    raise TimeoutError(f"{url} not up after {timeout:.0f} s" + (f"; log {log}" if log else ""))


def spawn(
    command: Sequence[str],
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str | None] | None = None,
) -> subprocess.Popen[bytes]:
    """``command`` in its own session, so that a signal to its group reaches every worker it
    forks; output appended to ``log``. ``env`` goes over this process's environment (``None``
    removes a variable), with this interpreter's folder first on PATH as in an activated
    virtualenv (``mlflow models serve`` runs ``uvicorn`` from PATH)."""
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    merged: dict[str, str | None] = {**os.environ, "PATH": path, **(env or {})}
    environment = {name: value for name, value in merged.items() if value is not None}
    with log.open("ab") as out:
        return subprocess.Popen(  # noqa: S603 - the harness's own commands
            list(command),
            cwd=cwd,
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_group(process: subprocess.Popen[bytes], grace: float = 30.0) -> None:
    """SIGTERM the process's group, SIGKILL it after ``grace`` seconds; no member is left."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with suppress(ProcessLookupError, PermissionError):  # a worker may outlive its leader
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


class Server:
    """A server process (its own session) on a loopback port, ready once ``ready_path``
    answers 200; ``ready_s`` is how long that took from the start."""

    def __init__(
        self,
        command: Sequence[str],
        port: int,
        log: Path,
        *,
        ready_path: str = "/health",
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = 120.0,
        interval: float = 0.1,
    ) -> None:
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.log = log
        started = time.perf_counter()
        self.process = spawn(command, log, cwd, env)
        try:
            wait_for_http(self.url + ready_path, self.process, timeout, log, interval)
        except BaseException:
            stop_group(self.process, grace=5)
            raise
        self.ready_s = time.perf_counter() - started

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the server alone, as an orchestrator sends it; its exit code. What it
        started must end by itself (tests check that), so the group is not signalled."""
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL to the whole group: the server and every worker, with no chance to flush."""
        with suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def stop(self, grace: float = 30.0) -> None:
        stop_group(self.process, grace)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it, read from ``/proc``."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            # the command name may hold spaces and parentheses: split after the last ')'
            parents[int(stat.parent.name)] = int(text[text.rindex(")") + 2 :].split()[1])
    tree, frontier = [root], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        tree.extend(children)
        frontier = children
    return tree


def rss_mib(root: int) -> float:
    """Resident memory of ``root`` and all its descendants (VmRSS, MiB)."""
    total_kib = 0
    for pid in process_tree(root):
        with suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
    return total_kib / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (``/proc/PID/stat``), threads included."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb() -> float:
    """This process's peak resident set size. Linux's VmHWM belongs to the address space that
    exec created; ``ru_maxrss`` would also count the parent's size at fork time."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
