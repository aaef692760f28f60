"""Phases 1 and 2 of `tests/deploy/run.py`: the image as built, and one container run as an operator runs it."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.deploy.harness import (ENV, IMAGE, NGINX_IMAGE, PREFIX, PROMETHEUS_IMAGE, PYTHON_BASE, ROOT, USER_ID, Report,
                                   free_port, healthcheck, http_status, image_inspect, image_size_mb, inspect, podman,
                                   translate, wait_for)
from tests.deploy_support import sample_sentences

# === 1. image ========================================================================================

def phase_image(report: Report, args) -> bool:
    if args.skip_build:
        report.note("--skip-build: using the images already built")
    else:
        started = time.time()
        env = {**ENV, "IMAGE": IMAGE, "IMAGE_SOURCE": args.image_source, "PYTHON": sys.executable}
        with open(args.logs / "build.log", "w") as log:
            result = subprocess.run([str(ROOT / "deploy/podman/images.sh"), "all"], stdout=log, stderr=subprocess.STDOUT,
                                    env=env, timeout=1800, check=False)
        seconds = round(time.time() - started, 1)
        report.figure("image", build_s=seconds, image_source=args.image_source)
        if not report.check("image.build", result.returncode == 0, f"deploy/podman/images.sh all in {seconds} s "
                            f"(IMAGE_SOURCE={args.image_source}; log {args.logs / 'build.log'})", seconds=seconds):
            return False
    missing = [image for image in (IMAGE, NGINX_IMAGE, PROMETHEUS_IMAGE) if podman("image", "exists", image).returncode]
    if not report.check("image.exists", not missing, f"missing {missing}" if missing else f"{IMAGE}, {NGINX_IMAGE}, {PROMETHEUS_IMAGE}"):
        return False
    sizes = {image: image_size_mb(image) for image in (IMAGE, PYTHON_BASE, NGINX_IMAGE, PROMETHEUS_IMAGE)}
    report.figure("image", sizes_mb=sizes, revision=(image_inspect(IMAGE).get("Labels") or {}).get("org.opencontainers.image.revision"))
    report.check("image.size", True, ", ".join(f"{image} {size} MB" for image, size in sizes.items()))

    probe = podman("run", "--rm", "--read-only", "--network", "none", IMAGE, "sh", "-c",
                   "id -u; for c in gcc cc c++ g++ clang; do command -v $c; done; echo --; "
                   "python -c 'import importlib.util as u; print(u.find_spec(\"torch\") is not None)'; "
                   "python -c 'import onnxruntime, engine, service, cli; print(onnxruntime.__version__)'; "
                   "python -c 'from engine.sessions import attention_kernels_library as k; print(k())'", timeout=120)
    lines = probe.stdout.split("\n")
    uid, compilers = lines[0].strip(), lines[1:lines.index("--")] if "--" in lines else ["?"]
    after = lines[lines.index("--") + 1:] if "--" in lines else []
    config = image_inspect(IMAGE)
    user = config["Config"].get("User", "")
    report.check("image.runs_as_10001", uid == USER_ID and user.startswith(USER_ID), f"id -u → {uid!r}, USER {user}")
    report.check("image.no_compiler", probe.returncode == 0 and not compilers, f"found {compilers}" if compilers else "no gcc, cc, c++, g++, clang")
    report.check("image.no_torch", after[:1] == ["False"], "torch not importable" if after[:1] == ["False"] else f"{after} {probe.stderr[-300:]}")
    report.check("image.packages_import", len(after) > 1 and bool(after[1]), f"engine, service, cli and onnxruntime {after[1:2]}")
    # The builder stage compiled the engine's attention kernels (deploy/Dockerfile): the runtime has the library, not the compiler.
    kernels = after[2] if len(after) > 2 else ""
    report.check("image.attention_kernels", kernels.endswith(".so"), kernels or probe.stderr[-300:])
    healthcheck_test = config.get("Healthcheck") or config["Config"].get("Healthcheck") or {}
    report.check("image.healthcheck", "/health" in " ".join(healthcheck_test.get("Test", [])), " ".join(healthcheck_test.get("Test", [])))
    return True


# === 2. run ==========================================================================================

def phase_run(report: Report, args) -> None:
    name, port = f"{PREFIX}-run", free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.time()
    podman("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "-p", f"127.0.0.1:{port}:8000", IMAGE, check=True)
    ready = wait_for(lambda: http_status(url + "/ready") == 200, timeout=180, interval=0.1)
    seconds = round(time.time() - started, 2)
    report.figure("run", time_to_ready_s=seconds)
    if not report.check("run.ready", bool(ready), f"/ready 200 after {seconds} s (podman run → ready)", seconds=seconds):
        report.note(podman("logs", "--tail", "30", name).stdout[-2000:])
        return
    bindings = json.loads(inspect(name, "{{json .HostConfig.PortBindings}}"))
    hosts = {binding["HostIp"] for entries in bindings.values() for binding in (entries or [])}
    report.check("run.loopback_only", hosts == {"127.0.0.1"}, f"published on {sorted(hosts)}")
    healthy, status = healthcheck(name)
    report.check("run.healthcheck", healthy and status == "healthy", f"HEALTHCHECK → {status}")

    german = translate(url, "Open the file.")
    report.check("run.translate_en_de", "Datei" in german, f"'Open the file.' → {german!r}")
    english = translate(url, "Öffne die Datei.", "de", "en")
    report.check("run.translate_de_en", "file" in english.lower(), f"'Öffne die Datei.' → {english!r}")

    root = podman("exec", name, "sh", "-c", "touch /app/x").returncode
    tmp = podman("exec", name, "sh", "-c", "touch /tmp/x && rm /tmp/x").returncode
    report.check("run.read_only", root != 0 and tmp == 0 and inspect(name, "{{.HostConfig.ReadonlyRootfs}}") == "true",
                 "/ is read-only, /tmp writable" if root and not tmp else f"touch /app → {root}, /tmp → {tmp}")

    # Logs: the container's own output streams (what `podman logs` / `docker logs` collect), no files.
    log_path = inspect(name, "{{.HostConfig.LogConfig.Path}}")
    logs = podman("logs", name).stdout + podman("logs", name).stderr
    streams = {"stdout": 0, "stderr": 0}
    with contextlib.suppress(OSError):
        for line in Path(log_path).read_text(errors="replace").splitlines():
            parts = line.split(" ", 2)
            if len(parts) > 1 and parts[1] in streams:
                streams[parts[1]] += 1
    wanted = ["Uvicorn running", "ready:", '"POST /translate HTTP/1.1" 200']
    missing = [text for text in wanted if text not in logs]
    report.check("run.logs_on_output", not missing, f"podman logs has start-up, readiness and access lines "
                 f"({streams['stdout']} lines on stdout, {streams['stderr']} on stderr)" if not missing else f"missing {missing}",
                 lines=streams)

    # SIGTERM with requests in flight: every one must be answered, then the process exits 0. Raw sockets, so
    # that "in flight" is exact: each request has been sent whole on an accepted connection, and no answer
    # has arrived yet, when the signal goes.
    # 6 requests of 24 longer sentences: a few seconds of work on one core, well inside what the service
    # admits (a backlog expected to wait over half the request deadline is refused with 503 at once).
    batches = [sample_sentences(144, 60, 200)[i::6] for i in range(6)]
    sockets = [send_request(port, "/v1/translate", {"text": texts, "source": "en", "target": "de"}) for texts in batches]
    time.sleep(0.3)
    in_flight = sum(not answered(sock) for sock in sockets)
    term_at = time.time()
    podman("kill", "--signal", "TERM", name, check=True)
    with ThreadPoolExecutor(len(sockets)) as pool:
        codes = list(pool.map(read_status, sockets))
    answered_s = round(time.time() - term_at, 2)
    exited = wait_for(lambda: inspect(name, "{{.State.Status}}") == "exited", timeout=90)
    stop_s = round(time.time() - term_at, 2)
    exit_code = inspect(name, "{{.State.ExitCode}}")
    after = http_status(url + "/health")
    report.figure("run", sigterm={"requests": len(batches), "sentences_each": len(batches[0]), "in_flight_at_sigterm": in_flight,
                                  "answered_200": codes.count(200), "last_answer_after_s": answered_s, "exit_code": exit_code,
                                  "exited_after_s": stop_s})
    report.check("run.sigterm_drain", in_flight > 0 and codes.count(200) == len(batches) and bool(exited) and exit_code == "0" and after == 0,
                 f"{in_flight} of {len(batches)} requests in flight at SIGTERM, {codes.count(200)} answered 200 "
                 f"(others: {[c for c in codes if c != 200]}) within {answered_s} s; exited {exit_code} after {stop_s} s")


def send_request(port: int, path: str, payload: dict) -> socket.socket:
    body = json.dumps(payload).encode()
    sock = socket.create_connection(("127.0.0.1", port), timeout=120)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
    return sock


def answered(sock: socket.socket) -> bool:
    """Whether any of the answer (or the connection's end) has arrived, without waiting or consuming it."""
    return bool(select.select([sock], [], [], 0)[0])


def read_status(sock: socket.socket) -> int | str:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except OSError as error:
        return type(error).__name__
    finally:
        sock.close()
    if not data.startswith(b"HTTP/"):
        return "no answer"
    return int(data.split(b" ", 2)[1])
