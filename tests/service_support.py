"""Real servers for the service tests: `translator serve` in a subprocess, or uvicorn in a thread
serving already loaded models (so a test can hold a model's lock and decide when inference runs)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from service.app import create_app, load_translators
from service.config import Settings
from engine.translator import Translator
from loadtest.server import LocalServer, free_port  # noqa: F401 - free_port: the tests' too

ROOT = Path(__file__).resolve().parent.parent
STOPPED_BY_SIGTERM = (0, -signal.SIGTERM)
SHIPPED_MODELS = ROOT / "models"
SHIPPED = (SHIPPED_MODELS / "en-de" / "package.json").is_file()
needs_shipped_model = pytest.mark.skipif(not SHIPPED, reason="models/en-de is not there yet: known translations need the real model")
FAST = {"TRANSLATOR_DEFAULT_BEAM_SIZE": "1", "TRANSLATOR_INTRA_OP_THREADS": "1"}  # tests share two cores


@pytest.fixture(scope="session")
def models_dir(request, tmp_path_factory) -> Path:
    """The shipped models, or, until they exist, the tiny test model packaged as en-de."""
    if SHIPPED:
        return SHIPPED_MODELS
    tiny = request.getfixturevalue("tiny_packages")["int8"]
    directory = tmp_path_factory.mktemp("models")
    shutil.copytree(tiny, directory / "en-de")
    return directory


@pytest.fixture(scope="session")
def translators(models_dir) -> dict[str, Translator]:
    """Loaded once for every in-process server of the session."""
    return load_translators(Settings(models_dir=models_dir, intra_op_threads=1))


def wait_until(condition, timeout: float = 30.0, interval: float = 0.02, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if condition():
                return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (Linux): field 3 (state) first."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def running(pid: int) -> bool:
    """The process exists and has not exited (an exited child that nobody has reaped yet, a zombie, has)."""
    try:
        return stat_fields(pid)[0] != "Z"
    except OSError:
        return False


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def metric(text: str, name: str, **labels: str) -> float:
    """A sample's value from a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


class ServerProcess(LocalServer):
    """`python -m cli.main serve` (loadtest.server.LocalServer) as the tests run it: one ONNX Runtime
    thread, greedy by default, the service's info-level log."""

    def __init__(self, models_dir: Path, log: Path, **environment: str):
        super().__init__(models_dir, {"OMP_NUM_THREADS": "1", "TRANSLATOR_LOG_LEVEL": "info", **FAST, **environment}, log)

    def output(self) -> str:
        return self.log_text()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM → the exit status. uvicorn re-raises the signal once it has shut down gracefully,
        so a clean stop reads as -SIGTERM (exit status 143 in a shell), like any process ended by it."""
        return self.stop(timeout)


class ThreadServer:
    """uvicorn in a thread of the test process, serving `create_app(settings, translators)`."""

    def __init__(self, settings: Settings, translators: dict[str, Translator]):
        self.app = create_app(settings, translators)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    timeout_graceful_shutdown=5))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "ThreadServer":
        self.thread.start()
        wait_until(lambda: self.server.started, what="uvicorn to start")
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def metrics(self) -> str:
        return httpx.get(self.url + "/metrics").text


def settings_for(models_dir: Path, **overrides) -> Settings:
    """Settings of an in-process test server. Its inference worker is a thread running the fixture's model, so that a test
    can stand it still by holding the model's lock (inference_paused); worker processes: tests/test_worker_process.py
    and the servers started as processes (ServerProcess), which run the defaults."""
    return Settings(**{"models_dir": models_dir, "default_beam_size": 1, "intra_op_threads": 1, "inference_workers": 1,
                       "inference_worker_kind": "thread", **overrides})


@contextlib.contextmanager
def serving(models_dir: Path, translators: dict[str, Translator], wait_ready: bool = True, **overrides) -> Iterator[ThreadServer]:
    with ThreadServer(settings_for(models_dir, **overrides), translators) as server:
        if wait_ready:
            wait_until(lambda: httpx.get(server.url + "/ready").status_code == 200, what="/ready")
        yield server


@contextlib.contextmanager
def inference_paused(translator: Translator) -> Iterator[None]:
    """Hold the model's lock: a batch that reaches the model waits, so later sentences stay queued."""
    translator.lock.acquire()
    try:
        yield
    finally:
        translator.lock.release()
