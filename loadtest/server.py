"""`translator serve` in a subprocess on a free 127.0.0.1 port, configured only through TRANSLATOR_*
variables: the tuner starts one per batching setting, bench.http_load one per server variant.

A subprocess rather than an in-process app because what is tuned is the real thing: its own event
loop, its own inference thread, and a resident set size we can read from /proc without the load
generator's memory mixed in."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from engine.process_memory import proc_status_bytes

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the server's inference worker processes), from /proc; [pid] where /proc is not there."""
    tree, index = [pid], 0
    while index < len(tree):
        try:
            tasks = list(Path(f"/proc/{tree[index]}/task").iterdir())
        except OSError:
            tasks = []
        for task in tasks:
            try:
                tree += [int(child) for child in (task / "children").read_text().split()]
            except (OSError, ValueError):
                pass
        index += 1
    return tree


def tree_status_bytes(pid: int, field: str) -> int | None:
    """proc_status_bytes summed over the process and its descendants (for VmHWM: the sum of each one's peak, which
    bounds the peak of the sum from above)."""
    values = [value for value in (proc_status_bytes(p, field) for p in process_tree(pid)) if value is not None]
    return sum(values) if values else None


class LocalServer:
    """One `python -m cli.main serve` process; use as a context manager (SIGTERM on exit). `cpus`: a CPU list
    for taskset (e.g. "0" or "0,1") to pin the server, away from a load generator or another job."""

    def __init__(self, models_dir: Path, environment: dict[str, str], log: Path, cpus: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.environment = dict(environment)
        # TRANSLATOR_HOST/PORT outrank HOST/PORT, so set those: a caller's shell may define either.
        env = {**os.environ, "TRANSLATOR_LOG_LEVEL": "warning", **environment,
               "TRANSLATOR_MODELS_DIR": str(models_dir), "TRANSLATOR_HOST": "127.0.0.1", "TRANSLATOR_PORT": str(self.port)}
        log.parent.mkdir(parents=True, exist_ok=True)
        self.log = log.open("w")
        pin = ["taskset", "-c", cpus] if cpus else []
        self.process = subprocess.Popen(pin + [sys.executable, "-m", "cli.main", "serve"], cwd=ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> "LocalServer":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                if httpx.get(self.url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready after {timeout:g} s:\n{self.log_tail()}")

    def log_text(self) -> str:
        """The server's log so far (or all of it, once stopped)."""
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def rss_bytes(self) -> int | None:
        """Resident memory now: the server and its worker processes."""
        return tree_status_bytes(self.process.pid, "VmRSS")

    def peak_rss_bytes(self) -> int | None:
        """Peak resident memory: the server's and its worker processes', summed."""
        return tree_status_bytes(self.process.pid, "VmHWM")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (graceful: in-flight requests are answered), then SIGKILL if it hangs."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait()
        finally:
            self.log.close()

    def __enter__(self) -> "LocalServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
