"""Writes this machine's pip index settings into a directory, for `podman build -v DIR/pip.conf:/etc/pip.conf:ro`.

    python3 deploy/podman/pip_conf.py DIR      → DIR/pip.conf (and DIR/ca.pem when pip is given a CA bundle)

The repository names no package index: the image build reads what pip on this machine is configured
with (`pip config list`: the global, user and site files and PIP_* variables, later ones winning as in
pip), and hands the builder only the keys that say where the index is and how to reach it. Keys that
name paths on this machine (find-links, constraint, ...) would not exist inside the build and are left
out; the CA bundle pip is told to trust is copied next to the file and referred to at /etc/pip-ca.pem.
Nothing here is baked into the image: the builder stage sees the files through a read-only mount.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

# Where the index is and how to reach it; nothing else.
KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "default-timeout", "retries", "proxy")
CERT_IN_BUILD = "/etc/pip-ca.pem"
# pip's precedence, lowest first: a later variant overrides an earlier one.
ORDER = ("global", "user", "site", ":env:")


def settings() -> dict[str, str]:
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True).stdout
    found: dict[str, dict[str, str]] = {}
    for line in listing.splitlines():
        if "=" not in line:
            continue
        name, value = line.split("=", 1)
        variant, _, key = name.partition(".")
        try:
            found.setdefault(key, {})[variant] = ast.literal_eval(value)
        except (SyntaxError, ValueError):
            continue
    chosen = {}
    for key, variants in found.items():
        for variant in reversed(ORDER):
            if variant in variants:
                chosen[key] = variants[variant]
                break
    return chosen


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    chosen = settings()
    lines = ["[global]"]
    for key in KEYS:
        if key in chosen:
            value = " ".join(chosen[key].split())  # multi-line values (several URLs) as one line
            lines.append(f"{key} = {value}")
    cert = chosen.get("cert")
    if cert and Path(cert).is_file():
        shutil.copyfile(cert, out / "ca.pem")
        lines.append(f"cert = {CERT_IN_BUILD}")
    else:
        # An empty file, so that the mount in images.sh always has a source; pip does not read it.
        (out / "ca.pem").write_text("")
    (out / "pip.conf").write_text("\n".join(lines) + "\n")
    (out / "pip.conf").chmod(0o644)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
