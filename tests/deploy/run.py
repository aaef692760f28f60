"""The containers for real, with podman on this machine (`make test-deploy`, README.md "Deploy"):

1. image    `deploy/podman/images.sh all`: the translator image (deploy/Dockerfile on a Debian base) and the
            nginx and Prometheus images; sizes; from the built image: no torch, no compiler, uid 10001,
            a HEALTHCHECK.
2. run      the image as an operator runs it: --read-only, --tmpfs /tmp, published on 127.0.0.1 only;
            time to ready, the HEALTHCHECK, translations both ways, logs on the container's output, and
            SIGTERM while requests are in flight (every one answered, exit 0).
3. compose  docker-compose.yml with podman-compose: three replicas behind nginx, Prometheus scraping each
            through the shipped configuration (scrape interval 1 s instead of 15 s, so that a replica's few
            seconds down show), alert rules loaded; requests spread over the replicas; every Grafana
            panel's, alert's and adapter rule's PromQL returns data from this Prometheus; under load, one
            replica is killed (SIGKILL): no client request may fail, the restart policy brings it back,
            and Prometheus' `up` shows it down and up again.
4. kube     `podman kube play` of the rendered deploy/k8s/base on a podman network made for the test: the
            pod starts from the image, its probes' HTTP GETs answer as the kubelet would see them, the
            security context and resources hold.

The phases live beside this file: `single.py` (image, run), `compose.py` and `kube.py`; `harness.py` holds
what they share (the report, podman, a client load, a Prometheus client).

Every check prints PASS or FAIL with its figures; results/deploy/report.json gets them all. Exit status 1
when any check fails, or when podman cannot run containers here (0 then with DEPLOY_TEST_OPTIONAL=1).
Traffic goes only to 127.0.0.1 and to containers on podman networks this run created; everything it
started (containers, pods, networks, volumes) is removed at the end, also after a failure.

    .venv/bin/python -m tests.deploy.run [--phases image,run,compose,kube] [--skip-build] [--image-source HEAD]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# (imported after the path is set, for `python tests/deploy/run.py`)
from tests.deploy.compose import phase_compose  # noqa: E402
from tests.deploy.harness import ENV, IMAGE, PYTHON_BASE, Report, cleanup, podman, podman_env  # noqa: E402
from tests.deploy.kube import phase_kube  # noqa: E402
from tests.deploy.single import phase_image, phase_run  # noqa: E402


def preflight(report: Report) -> str | None:
    """Why podman cannot run containers here, or None."""
    if not shutil.which("podman"):
        return "podman is not installed (make test-deploy installs it with apt-get where it can)"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", timeout=60)
    if info.returncode:
        return f"`podman info` failed: {info.stderr.strip()[-500:]}"
    image = next((i for i in (IMAGE, PYTHON_BASE) if podman("image", "exists", i).returncode == 0), None)
    if image:
        smoke = podman("run", "--rm", "--network", "none", "--entrypoint", "true", image, timeout=120)
        if smoke.returncode:
            return f"podman cannot start a container: {smoke.stderr.strip()[-500:]}"
    report.figure("machine", oci_runtime=info.stdout.strip(), containers_conf=ENV.get("CONTAINERS_CONF"))
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phases", default="image,run,compose,kube")
    parser.add_argument("--skip-build", action="store_true", help="use the images already built")
    parser.add_argument("--image-source", default=os.environ.get("IMAGE_SOURCE", "HEAD"),
                        help="worktree, or a git revision whose files the image is built from (default HEAD)")
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--clients", type=int, default=4, help="failover: concurrent clients")
    parser.add_argument("--failover-seconds", type=float, default=30)
    parser.add_argument("--kill-after", type=float, default=8)
    parser.add_argument("--compose-override", action="append", default=[], metavar="FILE",
                        help="a further compose file merged over the stack (absolute paths inside it)")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "deploy", help="where report.json goes")
    parser.add_argument("--logs", type=Path, default=ROOT / "results" / "tmp" / "deploy",
                        help="the build's and the containers' logs (not committed: pip's log names this machine's index)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.logs.mkdir(parents=True, exist_ok=True)
    report = Report(args.out / "report.json")
    optional = os.environ.get("DEPLOY_TEST_OPTIONAL") == "1"
    ENV.update(podman_env() if shutil.which("podman") else os.environ)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the clean-up below runs

    problem = preflight(report)
    if problem:
        banner = "=" * 100
        print(f"{banner}\nPODMAN CANNOT RUN CONTAINERS ON THIS MACHINE: {problem}\n"
              f"The container tests did not run.{' (DEPLOY_TEST_OPTIONAL=1: not an error)' if optional else ''}\n{banner}", flush=True)
        report.write("not run", problem)
        return 0 if optional else 1

    phases = [phase.strip() for phase in args.phases.split(",") if phase.strip()]
    status = "failed"
    try:
        cleanup()
        if "image" in phases:
            print("--- image", flush=True)
            try:
                built = phase_image(report, args)
            except Exception as error:
                built = report.check("image.completed", False, f"{type(error).__name__}: {error}")
            if not built:
                raise RuntimeError("no image to test")
        for phase, run in (("run", phase_run), ("compose", phase_compose), ("kube", phase_kube)):
            if phase in phases:
                print(f"--- {phase}", flush=True)
                try:
                    run(report, args)
                except Exception as error:  # a broken phase fails its check and lets the others run
                    report.check(f"{phase}.completed", False, f"{type(error).__name__}: {error}")
                finally:
                    cleanup()
        status = "passed" if not report.failed else "failed"
    except RuntimeError as error:
        report.check("run.completed", False, str(error))
    finally:
        cleanup()
        report.write(status)
    print(f"\n{len(report.checks) - len(report.failed)} of {len(report.checks)} checks passed in "
          f"{time.time() - report.started:.0f} s; report: {report.path.relative_to(ROOT) if report.path.is_relative_to(ROOT) else report.path}")
    if report.failed:
        print("FAILED: " + ", ".join(report.failed))
    return 0 if not report.failed else 1


if __name__ == "__main__":
    sys.exit(main())
