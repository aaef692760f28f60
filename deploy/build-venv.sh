#!/bin/sh
# Builds the serving virtual environment in the builder stage of deploy/Dockerfile and
# deploy/Dockerfile.cuda, in two steps so that Docker caches the slow one:
#
#   build-venv.sh deps   the [project] dependencies of pyproject.toml, pinned by requirements/constraints.txt
#                        (its layer is rebuilt only when one of those two files changes)
#   build-venv.sh app    the translator package itself (engine/, service/ and cli/ are what the build context holds), no dependencies
#
# Run from the directory holding pyproject.toml. Environment:
#   VENV         an existing virtual environment with pip (default /opt/venv)
#   ONNXRUNTIME  a requirement that replaces pyproject's onnxruntime pin: the CUDA image passes
#                onnxruntime-gpu==...; both distributions install the `onnxruntime` module, so only one may be present.
set -eu

VENV=${VENV:-/opt/venv}
PYTHON="$VENV/bin/python"

pip() {
    "$PYTHON" -m pip --no-cache-dir --disable-pip-version-check "$@"
}

case "${1:-}" in
deps)
    # pyproject.toml stays the one list of serving dependencies: read it instead of repeating it here.
    "$PYTHON" - > /tmp/requirements.txt <<'PY'
import os
import re
import tomllib

replacement = os.environ.get("ONNXRUNTIME")
for requirement in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
    print(replacement if replacement and name.lower() == "onnxruntime" else requirement)
PY
    pip install -c requirements/constraints.txt -r /tmp/requirements.txt
    ;;
app)
    pip install --no-deps .
    # torch is 2 GB and only needed for training: if anything pulled it in, fail the build here.
    if "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)"; then
        echo "torch is installed in $VENV: the serving image must not carry it" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: $0 deps|app" >&2
    exit 2
    ;;
esac
