"""A real ``python -m bastion serve`` process on loopback, for tests that need HTTP, signals and kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

# two tenants; keys with one scope each for the auth matrix
KEYS = {
    "alice": "alice-key-0123456789abcdef",      # tenant acme: generate + jobs
    "bob": "bob-key-0123456789abcdef0",          # tenant globex: generate + jobs
    "gen_only": "gen-only-key-0123456789ab",     # tenant acme: generate
    "jobs_only": "jobs-only-key-0123456789a",    # tenant acme: jobs
    "admin": "admin-key-0123456789abcdef",       # tenant ops: admin
}
KEY_SPEC = ";".join([
    f"{KEYS['alice']}:acme:alice:generate,jobs", f"{KEYS['bob']}:globex:bob:generate,jobs",
    f"{KEYS['gen_only']}:acme:gen:generate", f"{KEYS['jobs_only']}:acme:jobs:jobs",
    f"{KEYS['admin']}:ops:root:admin",
])


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``bastion serve`` in a child process; ``url`` once ``/ready`` answers 200."""

    def __init__(self, tmp: Path, *args: str, keys: str | None = KEY_SPEC, job_store: Path | None = None,
                 port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"server-{self.port}.log"
        self.job_store = job_store or tmp / "jobs.db"
        cmd = [sys.executable, "-m", "bastion", "serve", "--port", str(self.port), "--job-store", str(self.job_store),
               "--num-threads", "1", "--kv-cache-memory-mb", "64", *args]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if keys:
            env["BASTION_API_KEYS"] = keys
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout: float = 120.0) -> ServerProcess:
        """Block until ``/ready`` says 200 (raise with the server's log if it dies or takes too long)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()}")

    def log(self) -> str:
        """What the server wrote so far."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server."""
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        """SIGKILL: no cleanup of any kind runs."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; SIGKILL if it does not stop in time. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log.close()
        return self.proc.returncode


def headers(who: str) -> dict[str, str]:
    """The Authorization header of one of ``KEYS``."""
    return {"Authorization": f"Bearer {KEYS[who]}"}


def metric(url: str, name: str) -> float:
    """The sum of one Prometheus family's samples named exactly ``name`` on ``url``/metrics."""
    total, found = 0.0, False
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    if not found:
        raise KeyError(f"metric {name} not exposed")
    return total


def poll(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """True as soon as ``condition()`` holds, False if it still does not after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
