"""The Dockerfiles and .dockerignore, parsed (no Docker engine runs here; `make test-deploy` builds the images
with podman), and the container's health probe script against a stub server."""

from __future__ import annotations

import ast
import http.server
import importlib.metadata
import io
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement

from tests.deploy_support import DEPLOY, ROOT, USER_ID, compose, http_stub
from tests.service_support import free_port

DOCKERFILES = {"cpu": DEPLOY / "Dockerfile", "cuda": DEPLOY / "Dockerfile.cuda"}
# COPY sources that are build outputs rather than repository files (the README says how to make them).
BUILD_OUTPUTS = ("build/models-fp16",)


# === Dockerfiles =====================================================================================

def parse(dockerfile: Path) -> list[dict]:
    return [i for i in DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes())).structure if i["instruction"] != "COMMENT"]


def stages(dockerfile: Path) -> list[list[dict]]:
    found: list[list[dict]] = []
    for instruction in parse(dockerfile):
        if instruction["instruction"] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def runtime_stage(dockerfile: Path) -> list[dict]:
    return stages(dockerfile)[-1]


def instruction_arguments(instruction: dict) -> list[str]:
    """Arguments without --flags, from shell or JSON (exec) form."""
    value = instruction["value"].strip()
    words = json.loads(value) if value.startswith("[") else shlex.split(value)
    return [word for word in words if not word.startswith("--")]


def copy_sources(dockerfile: Path) -> list[str]:
    """Sources of every COPY/ADD from the build context (not --from another stage or image)."""
    return [source.rstrip("/") for instruction in parse(dockerfile) if instruction["instruction"] in ("COPY", "ADD")
            and "--from=" not in instruction["value"] for source in instruction_arguments(instruction)[:-1]]


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    """(is an exception, pattern) per line of .dockerignore, as BuildKit reads them: paths relative to the
    context, `*`/`?` within one path segment, `**` across segments, `!` lets a path back in."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip().strip("/")
        regex, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex, i = regex + pattern[i:end + 1], end + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((exception, re.compile(regex + "$")))
    return rules


def in_build_context(path: str, rules=None) -> bool:
    """Whether the file at `path` (relative to the repository root) reaches the Docker daemon: the last
    rule matching the path or one of its parent directories decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for exception, regex in rules or dockerignore_rules():
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not exception
    return not excluded


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_every_copy_source_is_in_the_build_context(variant):
    rules = dockerignore_rules()
    for source in copy_sources(DOCKERFILES[variant]):
        path = ROOT / source
        if source in BUILD_OUTPUTS and not path.exists():
            # Made before `docker build` by the documented command: check that it would be let in.
            assert in_build_context(f"{source}/en-de/package.json", rules), f".dockerignore keeps {source} out"
            assert f"--out {source}/" in (ROOT / "README.md").read_text(), f"the README must say how to make {source}"
            continue
        assert path.exists(), f"{DOCKERFILES[variant].name} copies {source}, which does not exist: the image cannot be built"
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        sent = [f for f in files if in_build_context(f.relative_to(ROOT).as_posix(), rules)]
        assert sent, f".dockerignore keeps every file of {source} out of the build context"
        if source in ("models", *BUILD_OUTPUTS):  # each package must arrive whole
            for manifest in path.glob("*/package.json"):
                package = json.loads(manifest.read_text())
                missing = [name for name in [manifest.name, *package["files"]]
                           if not in_build_context((manifest.parent / name).relative_to(ROOT).as_posix(), rules)]
                assert not missing, f"{manifest.parent}: {missing} kept out of the build context"
                if source in BUILD_OUTPUTS:
                    assert package["precision"] == "fp16", f"{manifest.parent} is not an fp16 package"


def test_dockerignore_keeps_bulk_and_state_out():
    rules = dockerignore_rules()
    for path in (".venv/bin/python", "data/en-de/train.tsv", "checkpoints/en-de/model.safetensors",
                 "checkpoints/en-de/resume/optimizer.safetensors", "logs/train.log", "build/packages/en-de-fp32/encoder.onnx",
                 "results/tmp/x.json", ".pytest_cache/v/cache/lastfailed", "service/__pycache__/app.cpython-311.pyc",
                 "models/.en-de.staging/encoder.onnx", ".git/HEAD", "tests/test_deploy_images.py"):
        assert not in_build_context(path, rules), f"{path} would be sent to the Docker daemon"
    for path in ("pyproject.toml", "service/app.py", "models/en-de/encoder.onnx", "build/models-fp16/en-de/decoder.onnx"):
        assert in_build_context(path, rules), f"{path} would be missing from the build context"


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_runtime_stage_runs_as_non_root_with_a_healthcheck(variant):
    stage = runtime_stage(DOCKERFILES[variant])
    users = [i["value"].split(":")[0].strip() for i in stage if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime stage must end as a non-root user"
    assert users[-1] == str(USER_ID), "a numeric USER, so that Kubernetes' runAsNonRoot can verify it"
    [healthcheck] = [i for i in stage if i["instruction"] == "HEALTHCHECK"]
    assert "/health" in healthcheck["value"] and not healthcheck["value"].upper().startswith("NONE")
    assert "8000" in [i["value"] for i in stage if i["instruction"] == "EXPOSE"]
    environment = " ".join(i["value"] for i in stage if i["instruction"] == "ENV")
    assert "HOST=0.0.0.0" in environment and "TRANSLATOR_MODELS_DIR=/app/models" in environment
    [command] = [i for i in stage if i["instruction"] == "CMD"]
    assert instruction_arguments(command) == ["translator", "serve"]


@pytest.mark.parametrize("variant", sorted(DOCKERFILES))
def test_runtime_stage_installs_no_torch_and_no_compiler(variant):
    stage = runtime_stage(DOCKERFILES[variant])
    for instruction in stage:
        if instruction["instruction"] == "RUN":
            assert not re.search(r"\btorch\b|pip\s+install|\bgcc\b|\bg\+\+|build-essential|\bclang\b|-dev\b",
                                 instruction["value"]), instruction["value"]
    # What the runtime stage gets instead: the builder's virtualenv, built from pyproject's serving
    # dependencies, which hold no torch (deploy/build-venv.sh also fails the build if torch shows up).
    dependencies = [Requirement(r).name for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    assert "torch" not in dependencies
    assert "find_spec('torch')" in (DEPLOY / "build-venv.sh").read_text()


def test_images_are_built_from_the_intended_bases():
    builder, runtime = DockerfileParser(fileobj=io.BytesIO(DOCKERFILES["cpu"].read_bytes())).parent_images
    # The builder compiles the attention kernels (the full image has g++); the runtime is the slim one, the same
    # Python 3.11 at the same path.
    assert builder == "python:3.11-bookworm" and runtime == "python:3.11-slim-bookworm"
    cuda = DockerfileParser(fileobj=io.BytesIO(DOCKERFILES["cuda"].read_bytes())).parent_images
    assert re.match(r"nvidia/cuda:[\d.]+-cudnn-runtime-", cuda[-1]), "the CUDA runtime (not devel) image with cuDNN"
    arguments = {i["value"].split("=")[0]: i["value"].split("=", 1)[1] for i in parse(DOCKERFILES["cuda"]) if i["instruction"] == "ARG" and "=" in i["value"]}
    assert re.fullmatch(r"onnxruntime-gpu==[\d.]+", arguments["ONNXRUNTIME_GPU"])


def test_the_image_installs_every_module_the_service_imports():
    """The image installs pyproject's dependencies and nothing else: a module that engine/ or service/ imports
    from a distribution outside them works in the dev virtualenv but breaks the image at start-up. (cli/ is
    in the image too, but imports the training and export packages lazily, for its other commands.)"""
    def normalise(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pending = [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]
    closure: set[str] = set()
    while pending:
        requirement = pending.pop()
        if normalise(requirement.name) in closure or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
            continue
        closure.add(normalise(requirement.name))
        pending += [Requirement(r) for r in importlib.metadata.requires(requirement.name) or []]

    providers = importlib.metadata.packages_distributions()
    missing = {}
    in_image = {path.rstrip("/") for path in copy_sources(DOCKERFILES["cpu"])}
    assert {"engine", "service", "cli"} <= in_image, "the image must carry the engine, the server and the command line"
    for source in [*(ROOT / "engine").rglob("*.py"), *(ROOT / "service").rglob("*.py")]:
        for node in ast.walk(ast.parse(source.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for module in (name.split(".")[0] for name in names):
                if module in sys.stdlib_module_names or module in in_image:
                    continue
                distributions = {normalise(d) for d in providers.get(module, [module])}
                if not distributions & closure:
                    missing[module] = f"{source.relative_to(ROOT)} (distribution {', '.join(sorted(distributions))})"
    assert not missing, f"imported by the service but not among pyproject.toml's dependencies: {missing}"


def test_compose_healthcheck_runs_the_script_the_images_carry():
    script = compose()["services"]["translator"]["healthcheck"]["test"][2]
    for dockerfile in DOCKERFILES.values():
        copies = [instruction_arguments(i) for i in runtime_stage(dockerfile) if i["instruction"] == "COPY"]
        assert ["deploy/healthcheck.py", script] in copies, f"{dockerfile.name} does not put the probe at {script}"


# === the container health probe =======================================================================

class Status(http.server.BaseHTTPRequestHandler):
    """/ready answers 503 (still warming up), everything else 200."""

    def do_GET(self) -> None:
        self.send_response(503 if self.path == "/ready" else 200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def probe(path: str, port: int) -> int:
    env = {"PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, str(DEPLOY / "healthcheck.py"), path], env=env, capture_output=True, timeout=30, check=False).returncode


def test_healthcheck_script_exits_0_only_on_200():
    with http_stub(Status) as port:
        assert probe("/health", port) == 0
        assert probe("/ready", port) == 1
    assert probe("/health", free_port()) == 1  # nothing listening
