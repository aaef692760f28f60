"""A trivial HTTP server for measuring a load generator's own ceiling: every request is answered at once
with a fixed 200 answer shaped like the service's /v1/translate answer (so a generator that reads the
answer does the same work as against the real service). No model, no framework: asyncio protocol
callbacks on uvloop, a few microseconds per request, so what limits the rate is the generator.

    python -m loadtest.stub --port 8765            # serve until interrupted (prints the URL when listening)

`StubServer` runs it in a subprocess for the length of a `with` block (the ceiling must not share the
generator's process or event loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

import httpx

from loadtest.server import ROOT, free_port

# What one answered /v1/translate request looks like (one sentence of the test set, its counts).
ANSWER = json.dumps({"model": "en-de", "translations": [{
    "text": "Klicken Sie auf OK, um die Änderungen zu speichern.", "alternatives": [], "score": -0.21,
    "source_tokens": 12, "target_tokens": 14, "sentences": 1}]}, ensure_ascii=False).encode()
RESPONSE = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(ANSWER)) + ANSWER
HEAD_END = b"\r\n\r\n"


class Answering(asyncio.Protocol):
    """HTTP/1.1 keep-alive: reads each request's head and Content-Length body, answers RESPONSE."""

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(HEAD_END)) >= 0:
            head = self.buffer[:end].lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                length = int(head[at + 15:].split(b"\r\n", 1)[0])
            whole = end + len(HEAD_END) + length
            if len(self.buffer) < whole:
                return
            self.buffer = self.buffer[whole:]
            self.transport.write(RESPONSE)


async def serve(port: int) -> None:
    server = await asyncio.get_running_loop().create_server(Answering, "127.0.0.1", port, backlog=1024)
    print(f"http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


class StubServer:
    """`python -m loadtest.stub` on a free port, for the length of a `with` block."""

    def __init__(self, cpus: str | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "loadtest.stub", "--port", str(self.port)]
        self.process = subprocess.Popen((["taskset", "-c", cpus] if cpus else []) + command, cwd=ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def __enter__(self) -> "StubServer":
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"stub server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                httpx.get(self.url + "/", timeout=1)
                return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.process.kill()
        raise RuntimeError("stub server did not start in 30 s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        self.process.wait(10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.stub", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    import uvloop

    try:
        uvloop.run(serve(args.port))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
