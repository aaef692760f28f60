"""Container health probe: `python healthcheck.py [PATH]` → exit 0 when GET http://127.0.0.1:$PORT/PATH
answers 200, 1 otherwise (default PATH: /health).

The images carry no curl or wget (python:3.11-slim ships neither, and installing one only for this
would add a package to patch), so Docker's HEALTHCHECK and compose run this with the image's Python.
Standard library only: the probe must not import the service, which is slow and, if broken, would
make every probe hang instead of fail.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def main(argv: list[str]) -> int:
    path = argv[1] if len(argv) > 1 else "/health"
    # The same precedence as service/config.py: TRANSLATOR_PORT, then PORT, then 8000.
    port = os.environ.get("TRANSLATOR_PORT") or os.environ.get("PORT") or "8000"
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=float(os.environ.get("HEALTHCHECK_TIMEOUT_S", "3"))) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:  # HTTPError (a 503 from /ready) is a URLError
        print(f"{url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
