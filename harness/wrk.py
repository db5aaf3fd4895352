"""Load from ``wrk`` (Debian): fixed connections rotating through pre-built request bodies, one
machine-readable summary per run."""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every thread loads the pre-built bodies (one JSON document per line) and rotates through them
# from its own offset; done() prints one machine-readable line.
SCRIPT = r"""
local prepared = {}
local counter = 0
local threads_made = 0

function setup(thread)
  threads_made = threads_made + 1
  thread:set("thread_index", threads_made)
end

function init(args)
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1]) do
    prepared[#prepared + 1] = wrk.format("POST", args[2], headers, line)
  end
  counter = (thread_index or 0) * 7919
end

function request()
  counter = counter + 1
  return prepared[(counter % #prepared) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


@dataclass
class Trial:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    status_errors: int
    socket_errors: int


def write_script(folder: Path) -> Path:
    path = folder / "wrk.lua"
    path.write_text(SCRIPT)
    return path


def write_bodies(path: Path, bodies: list[Any]) -> Path:
    # json.dumps escapes newlines inside reviews: one document per line for the Lua reader.
    path.write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in bodies))
    return path


def run_wrk(
    script: Path,
    url: str,
    bodies: Path,
    path: str,
    connections: int,
    seconds: int,
    threads: int = 1,
    timeout_s: float = 30.0,
) -> Trial:
    """``seconds`` of load on ``url + path`` from ``connections`` connections (``threads``
    wrk threads at most, one per connection)."""
    command = [
        "wrk", "-t", str(min(threads, connections)), "-c", str(connections), "-d", f"{seconds}s",
        "--timeout", f"{timeout_s:g}s", "-s", str(script), url, "--", str(bodies), path,
    ]  # fmt: skip
    done = subprocess.run(  # noqa: S603 - wrk, only ever against the harness's loopback servers
        command, capture_output=True, text=True, check=False, timeout=seconds + 120
    )
    line = next((s for s in done.stdout.splitlines() if s.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    r = json.loads(line.removeprefix("BENCH_JSON "))
    elapsed = r["duration_us"] / 1e6
    return Trial(
        requests=r["requests"],
        seconds=elapsed,
        rps=r["requests"] / elapsed if elapsed else 0.0,
        p50_ms=r["p50_us"] / 1000,
        p90_ms=r["p90_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        max_ms=r["max_us"] / 1000,
        status_errors=r["status"],
        socket_errors=r["connect"] + r["read"] + r["write"] + r["timeout"],
    )
