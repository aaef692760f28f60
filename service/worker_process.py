"""An inference worker in a process of its own: a copy of a model package that translates batches outside the server's
interpreter, so that its Python between decoder steps never waits for the GIL the event loop holds, nor the event loop
for it (README, Load benchmark: with two workers as threads of the server, a sixth of the two cores stood idle under
load for want of the GIL).

`WorkerProcess` offers what the batcher calls on a `Translator` (`translate_ids`, `encode_ids`, `warmup`), called from
the one thread of its inference worker. The child is `python -m service.worker_process FD`, talking over a socket pair
in pickled messages (multiprocessing's Connection; no fork of the server's threads, no re-import of its main module):
each call is a message to it, and it answers each decoder step's finished sentences as they end, then the batch's
results and stage times. The thread waits in the socket with the GIL released. A child that dies (killed, out of
memory) fails the batch it ran; the next call starts a new one.

The child ignores SIGINT and SIGTERM: the server drains on them and then closes its workers; a child whose server is
gone finds its socket closed and exits.

After a batch that the server sent while nothing else waited and its other workers were idle (`awake`: a lone client),
the child stays awake for a few milliseconds (TRANSLATOR_WORKER_AWAKE_MS), polling its socket and yielding its CPU to
anything runnable, before it sleeps: on these virtual machines a CPU that went idle between two requests comes back
slower (caches cold), and at one connection the next sentence's encoder and decoder ran about 1.4 ms slower (README,
Load benchmark). Under load the next batch comes anyway, and the CPU is the server's.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

from engine.process_memory import proc_status_bytes
from engine.search import FinishedHook, SearchOptions, SearchResult, StageTimes
from engine.translator import Translator

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 5.0
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s (worker process %(process)d): %(message)s"  # the server's, marked


class WorkerProcessFailed(RuntimeError):
    """The child exited, or a call failed inside it (the message names the error; no traceback crosses over)."""


class WorkerProcess:
    """A model package in a child process, used by one thread at a time."""

    def __init__(self, model: Translator, awake_s: float = 0.0):
        """awake_s: how long the child stays awake after a batch sent `awake` (module docstring)."""
        self.directory, self.options, self.awake_s = model.directory, model.options, awake_s
        self.pair, self.require_parity = (model.source_language, model.target_language), model.require_parity
        self.name = model.name
        self.process: subprocess.Popen | None = None
        self.connection: Connection | None = None
        self.start()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def resident_bytes(self) -> int:
        """The child's resident memory now (Linux /proc; 0 where unknown or while it is not running)."""
        pid = self.pid
        return (proc_status_bytes(pid, "VmRSS") or 0) if pid else 0

    def start(self) -> None:
        """Start the child and wait until its sessions are loaded (a broken package raises here)."""
        ours, theirs = socket.socketpair()
        with ours, theirs:
            self.process = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                            stdin=subprocess.DEVNULL, env=child_environment())
            self.connection = Connection(os.dup(ours.fileno()))  # the child's end closes with it: its exit ends our reads
        self.connection.send((self.directory, self.options, self.pair, self.require_parity, logging.getLogger().getEffectiveLevel(),
                              self.awake_s))
        self.receive()  # "ready"

    def close(self) -> None:
        if self.process is None:
            return
        try:
            self.connection.send(("stop",))
        except OSError:
            pass
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.connection.close()
        self.process, self.connection = None, None

    # --- what the batcher calls ----------------------------------------------------------------
    def translate_ids(self, sources: list[list[int]], options: SearchOptions, times: StageTimes | None = None,
                      on_finished: FinishedHook | None = None, awake: bool = False) -> list[SearchResult]:
        """Translator.translate_ids in the child; `awake`: it stays awake after this batch (module docstring)."""
        encode_s, decode_s, steps, results = self.call(("translate", sources, options, awake), on_finished)
        if times is not None:
            times.encode_seconds += encode_s
            times.decode_seconds += decode_s
            times.steps = steps
        return results

    def encode_ids(self, sources: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.call(("encode", sources))

    def warmup(self, batch_size: int = 8) -> None:
        self.call(("warmup", batch_size))

    # --- the pipe --------------------------------------------------------------------------------
    def call(self, message: tuple, on_finished: FinishedHook | None = None):
        if self.process is None or self.process.poll() is not None:
            self.restart()
        self.connection.send(message)
        failure: Exception | None = None
        while True:
            kind, payload = self.receive()
            if kind == "finished":
                if on_finished is not None and failure is None:
                    try:
                        on_finished(payload)
                    except Exception as error:  # noqa: BLE001 - raised below: the call is read to its end first, so
                        failure = error  # that the next call's messages are its own
            elif kind == "done":
                if failure is not None:
                    raise failure
                return payload

    def receive(self) -> tuple[str, object]:
        process, connection = self.process, self.connection
        if process is None or connection is None:  # closed meanwhile: a drain that ran out of time
            raise WorkerProcessFailed(f"{self.name}: the inference worker process was stopped")
        try:
            kind, payload = connection.recv()
        except (EOFError, OSError):
            try:
                code = process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # its socket broke but it lives on: it cannot be talked to any more
                process.kill()
                code = process.wait()
            self.process = None
            raise WorkerProcessFailed(f"{self.name}: the inference worker process exited (code {code})") from None
        if kind == "error":
            raise WorkerProcessFailed(f"{self.name}: {payload}")
        return kind, payload

    def restart(self) -> None:
        log.warning("%s: starting a new inference worker process in place of one that exited", self.name)
        if self.connection is not None:
            self.connection.close()
        self.process = None
        self.start()


def child_environment() -> dict[str, str]:
    """The server's environment, with this project's root first on the module path (the child imports it as we do,
    whatever the working directory)."""
    root = str(Path(__file__).resolve().parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, path]) if path else root}


def serve(connection: Connection) -> None:
    """The child: load the package the first message names, then answer calls until told to stop or the server goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        directory, options, pair, require_parity, log_level, awake_s = connection.recv()
    except (EOFError, OSError):
        return
    logging.basicConfig(level=log_level, format=LOG_FORMAT)
    try:
        model = Translator(directory, options, pair, require_parity)
    except Exception as error:  # noqa: BLE001 - the server reports it (it loaded the same package already)
        connection.send(("error", f"cannot load {directory}: {type(error).__name__}: {error}"))
        return
    connection.send(("ready", None))
    awake_until = 0.0
    while True:
        try:
            stay_awake(connection, awake_until)
            message = connection.recv()
        except (EOFError, OSError):
            return  # the server is gone
        kind = message[0]
        if kind == "stop":
            return
        try:
            if kind == "translate":
                _, sources, search, awake = message
                times = StageTimes()
                results = model.translate_ids(sources, search, times, lambda ended: connection.send(("finished", ended)))
                answer = (times.encode_seconds, times.decode_seconds, times.steps, results)
                if awake:
                    awake_until = time.perf_counter() + awake_s
            elif kind == "encode":
                answer = model.encode_ids(message[1])
            elif kind == "warmup":
                answer = model.warmup(message[1])
            else:
                raise ValueError(f"unknown call {kind!r}")
        except (EOFError, OSError):
            return
        except Exception as error:  # noqa: BLE001 - the batch fails in the server, which logs it; this child goes on
            connection.send(("error", f"{type(error).__name__}: {error}"))
            continue
        connection.send(("done", answer))


def stay_awake(connection: Connection, until: float) -> None:
    """Poll for the next call until `until` (perf_counter), yielding the CPU to whatever else may run on it."""
    while time.perf_counter() < until and not connection.poll(0):
        os.sched_yield()


if __name__ == "__main__":  # python -m service.worker_process FD: the child, talking over the socket FD
    serve(Connection(int(sys.argv[1])))
