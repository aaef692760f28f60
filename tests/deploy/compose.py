"""Phase 3 of `tests/deploy/run.py`: docker-compose.yml with podman-compose, three replicas behind nginx,
Prometheus, every dashboard query, and a replica killed under load."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from tests.deploy.harness import (ENV, PREFIX, ROOT, SCRAPE_INTERVAL, VENV_BIN, WINDOW, Load, Prometheus, Report, container_ip,
                                   free_port, healthcheck, inspect, iso, podman, translate, wait_for)
from tests.deploy_support import (PROMETHEUS, adapter_rules, adapter_to_promql, alert_rules, dashboard_targets, every_route,
                                  grafana_to_promql, sample_sentences, signal_query)

# === 3. compose ======================================================================================

def compose_command() -> list[str] | None:
    found = shutil.which("podman-compose", path=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    return [found] if found else None


def phase_compose(report: Report, args) -> None:
    command = compose_command()
    if not command:
        report.check("compose.tool", False, "podman-compose not found (make test-deploy installs it)")
        return
    version = subprocess.run([*command, "--version"], capture_output=True, text=True, env=ENV).stdout
    found = re.search(r"podman-compose version (\d+)\.(\d+)", version)
    if not report.check("compose.tool", bool(found) and (int(found[1]), int(found[2])) >= (1, 1), version.splitlines()[0] if version else "?"):
        report.note("podman-compose before 1.1 (Debian 12 ships 1.0.3) cannot read docker-compose.yml: no profiles, no --scale, "
                    "no env_file `required:`")
        return
    lb_port, prometheus_port = free_port(), free_port()
    lb, api = f"http://127.0.0.1:{lb_port}", Prometheus(f"http://127.0.0.1:{prometheus_port}")
    # The shipped Prometheus configuration and rules, with 1 s intervals (a restart takes seconds).
    config_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-prometheus-"))
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval=SCRAPE_INTERVAL, evaluation_interval=SCRAPE_INTERVAL)
    (config_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for rule_file in config["rule_files"]:
        shutil.copy(PROMETHEUS / rule_file, config_dir / rule_file)
    config_dir.chmod(0o755)
    for path in config_dir.iterdir():
        path.chmod(0o644)
    override = config_dir / "compose.test.yml"
    override.write_text(yaml.safe_dump({"services": {"prometheus": {"volumes": [f"{config_dir}:/etc/prometheus:ro"]}}}))
    files = ["-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "deploy/podman/compose.podman.yml"), "-f", str(override)]
    for extra in args.compose_override:  # a variant to try (or a control: the checks must catch what it breaks)
        files += ["-f", str(Path(extra).resolve())]
    env = {**ENV, "LB_PORT": f"127.0.0.1:{lb_port}", "PROMETHEUS_PORT": str(prometheus_port)}
    up = [*command, "-p", PREFIX, *files, "up", "-d", "--no-build", "--scale", f"translator={args.replicas}", "translator", "nginx", "prometheus"]
    report.note("$ " + " ".join(up).replace(str(ROOT) + "/", ""))
    started = time.time()
    result = subprocess.run(up, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    (args.logs / "compose-up.log").write_text(result.stdout + result.stderr)
    try:
        if not report.check("compose.up", result.returncode == 0, f"exit {result.returncode} (log {args.logs / 'compose-up.log'})"):
            return
        replicas = [f"{PREFIX}_translator_{n}" for n in range(1, args.replicas + 1)]
        healthy = wait_for(lambda: all(healthcheck(name)[0] for name in replicas), timeout=180, interval=0.5)
        seconds = round(time.time() - started, 1)
        report.figure("compose", replicas=args.replicas, time_to_all_ready_s=seconds)
        if not report.check("compose.replicas_ready", bool(healthy), f"{args.replicas} replicas' readiness healthcheck passes {seconds} s after `up`"):
            return
        others = {service: bool(wait_for(lambda s=service: healthcheck(f"{PREFIX}_{s}_1")[0], 30)) for service in ("nginx", "prometheus")}
        report.check("compose.nginx_prometheus_healthy", all(others.values()),
                     ", ".join(f"{service} {'healthy' if ok else 'unhealthy'}" for service, ok in others.items()))
        published = {}
        for name in [*replicas, f"{PREFIX}_nginx_1", f"{PREFIX}_prometheus_1"]:
            bindings = json.loads(inspect(name, "{{json .HostConfig.PortBindings}}") or "{}") or {}
            published[name] = sorted({b["HostIp"] for entries in bindings.values() for b in (entries or [])})
        report.check("compose.loopback_only", all(hosts in ([], ["127.0.0.1"]) for hosts in published.values()),
                     "published: " + ", ".join(f"{n.removeprefix(PREFIX + '_')} {h or 'none'}" for n, h in published.items()))

        german = translate(lb, "Open the file.")
        report.check("compose.translate_through_nginx", "Datei" in german, f"'Open the file.' → {german!r}")

        # Prometheus: one target per replica, all up; the rules loaded and evaluating.
        ips = {name: container_ip(name) for name in replicas}
        up_targets = wait_for(lambda: (lambda ts: ts if len(ts) == args.replicas and all(t["health"] == "up" for t in ts) else None)(api.targets("translator")), 60)
        targets = api.targets("translator")
        report.check("compose.prometheus_targets_up", bool(up_targets),
                     ", ".join(f"{t['labels']['instance']} {t['health']}" for t in targets) or "no targets")
        expected_rules = {rule["alert"] for rule in alert_rules()}

        def rules_evaluated():
            rules = [r for g in api.get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
            return rules if rules and not any(r["lastEvaluation"].startswith("0001") for r in rules) else None

        rules = wait_for(rules_evaluated, 30) or []
        unhealthy = [r["name"] for r in rules if r["health"] != "ok"]
        report.check("compose.alert_rules_loaded", {r["name"] for r in rules} == expected_rules and not unhealthy,
                     f"{len(rules)} rules loaded, unhealthy {unhealthy}" if rules else "no rules")

        # Requests spread over the replicas: each replica's own counter, as Prometheus scraped it.
        counter = 'sum by (instance) (translator_request_duration_seconds_count{job="translator", route="/translate"})'
        before = api.vector(counter)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda text: translate(lb, text), sample_sentences(60)))
        time.sleep(3)  # a few scrapes
        after = api.vector(counter)
        spread = {instance: int(after.get(instance, 0) - before.get(instance, 0)) for instance in after}
        report.figure("compose", spread_60_requests=spread)
        report.check("compose.requests_spread", len(answers) == 60 and len(spread) == args.replicas and all(v > 0 for v in spread.values()),
                     f"60 requests through nginx → per replica {spread}")

        # File translation through the load balancer: the upload and the download may reach different
        # replicas, so the store must be shared, and the download URL must carry the balancer's address.
        trips = []
        for n in range(2 * args.replicas):
            upload = httpx.post(lb + "/translate_file", data={"source": "en", "target": "de"}, timeout=60,
                                files={"file": (f"note-{n}.txt", b"Open the file.\nSave the document.\n", "text/plain")})
            link = upload.json().get("translatedFileUrl", "") if upload.status_code == 200 else ""
            download = httpx.get(link, timeout=30) if link.startswith(lb + "/") else None
            trips.append((upload.status_code, link.removeprefix(lb)[:40] or upload.text[:80],
                          download.status_code if download is not None else None,
                          download is not None and download.status_code == 200 and "Datei" in download.text))
        report.check("compose.file_translation_across_replicas", all(trip[3] for trip in trips),
                     f"{sum(trip[3] for trip in trips)} of {len(trips)} uploads downloaded through nginx"
                     + ("" if all(trip[3] for trip in trips) else f": {[trip for trip in trips if not trip[3]]}"))

        # A streamed answer through nginx: each text's event as soon as it is translated, not all at the end.
        stream_check(report, lb)

        # The dashboard, the alerts and the adapter rules against this Prometheus, after traffic on every route.
        problems = every_route(lb)
        time.sleep(5)
        problems += every_route(lb)
        time.sleep(5)
        report.check("compose.traffic_every_route", not problems, f"problems {problems}" if problems else "every route answered as expected, twice")
        queries = [(f"panel {title!r} {target['refId']}", grafana_to_promql(target["expr"], WINDOW)) for title, target in dashboard_targets()]
        queries += [(f"alert {rule['alert']}", signal_query(rule["expr"])) for rule in alert_rules()]
        queries += [(f"adapter {rule['name']['as']}", adapter_to_promql(rule, 'job="translator"', "instance")) for rule in adapter_rules()]
        failed = {where: problem for where, expr in queries if (problem := api.returns_data(expr))}
        report.figure("compose", promql_queries=len(queries), promql_failed=failed)
        report.check("compose.dashboard_alert_adapter_queries", not failed,
                     f"{len(queries)} PromQL expressions return data" + (f"; failed: {failed}" if failed else ""))

        failover(report, args, lb, api, replicas, ips)
    finally:
        logs = {name: podman("logs", name) for name in podman("ps", "-a", "--format", "{{.Names}}",
                "--filter", f"label=io.podman.compose.project={PREFIX}").stdout.split()}
        (args.logs / "compose-logs.txt").write_text("".join(f"=== {n}\n{r.stdout}{r.stderr}\n" for n, r in logs.items()))
        shutil.rmtree(config_dir, ignore_errors=True)


def stream_check(report: Report, lb: str) -> None:
    """POST /v1/translate with "stream": true, a short text and four long ones (40 sentences each): the first
    event must reach the client well before the last, or nginx is holding the stream back. The short text
    comes first: the batch scheduler serves the group of the sentence that has waited longest first, so
    its one sentence is answered by the first batch, whatever the model's speed (last, it could share the
    last batch with the long texts' sentences, and every event would arrive at once)."""
    sentences = sample_sentences(160, 60, 110)
    long_texts = [" ".join(sentences[i::4]) for i in range(4)]
    payload = {"text": ["Click OK.", *long_texts], "source": "en", "target": "de", "stream": True}
    started, events = time.monotonic(), []
    with httpx.stream("POST", lb + "/v1/translate", json=payload, timeout=120) as answer:
        kind = answer.headers.get("content-type", "")
        for line in answer.iter_lines():
            if line.startswith("event:"):
                events.append((line.split(":", 1)[1].strip(), round(time.monotonic() - started, 3)))
            elif line.startswith("data:") and events and events[-1][0] == "translation":
                events[-1] = (f"translation {json.loads(line[5:]).get('index')}", events[-1][1])
    names = [name for name, _ in events]
    first, done = (events[0][1], events[-1][1]) if events else (0, 0)
    report.figure("compose", stream_events=events)
    report.check("compose.stream_through_nginx", answer.status_code == 200 and kind.startswith("text/event-stream")
                 and sorted(names) == ["done", *(f"translation {i}" for i in range(5))] and names[-1] == "done"
                 and done - first >= 0.3,
                 f"{answer.status_code} {kind.split(';')[0]}: " + ", ".join(f"{name} at {t} s" for name, t in events))


def failover(report: Report, args, lb: str, api: Prometheus, replicas: list[str], ips: dict[str, str]) -> None:
    victim = replicas[1]
    instance = f"{ips[victim]}:8000"
    restarts_before = int(inspect(victim, "{{.RestartCount}}"))
    pid = int(inspect(victim, "{{.State.Pid}}"))
    report.note(f"failover: {args.clients} clients for {args.failover_seconds} s; SIGKILL to {victim} ({instance}, pid {pid}) "
                f"after {args.kill_after} s")
    with Load(lb, args.clients) as load:
        time.sleep(args.kill_after)
        killed_at = time.time()
        os.kill(pid, signal.SIGKILL)  # a crash: the restart policy applies (a `podman stop` would not restart)
        time.sleep(max(0.0, args.failover_seconds - args.kill_after))
    summary = load.summary()
    back = wait_for(lambda: int(inspect(victim, "{{.RestartCount}}")) > restarts_before and healthcheck(victim)[0], timeout=120, interval=0.5)
    restarted_at = inspect(victim, "{{.State.StartedAt}}")
    new_instance = f"{container_ip(victim)}:8000"
    # Prometheus: `up` of that replica, every second from before the kill until it has been up again for a few scrapes.
    wait_for(lambda: api.vector(f'up{{job="translator", instance="{new_instance}"}}').get(new_instance) == 1, 60)
    time.sleep(3)
    end = time.time()
    series = api.get("/api/v1/query_range", query='up{job="translator"}', start=killed_at - 10, end=end, step=1)["data"]["result"]
    samples = sorted((float(t), v) for s in series if s["metric"]["instance"] in (instance, new_instance) for t, v in s["values"])
    down = next((t for t, v in samples if t >= killed_at and v == "0"), None)
    up_again = next((t for t, v in samples if down and t > down and v == "1"), None)
    others_down = [s["metric"]["instance"] for s in series if s["metric"]["instance"] not in (instance, new_instance)
                   and any(v == "0" for _, v in s["values"])]
    during = [r for r in load.results if killed_at <= r[0] <= (up_again or end)]
    # What nginx did with the requests that met the dead replica (its error log names the upstream address):
    # each was passed to the next replica, so the client saw an answer.
    nginx_log = podman("logs", "--since", str(int(killed_at) - 1), f"{PREFIX}_nginx_1")
    met = [line for line in (nginx_log.stdout + nginx_log.stderr).splitlines() if f'upstream: "http://{ips[victim]}:8000' in line]
    retried = {"while connecting": sum("while connecting to upstream" in line for line in met),
               "in flight (reset or closed)": sum("while reading response header" in line for line in met)}
    other_errors = [line for line in met if "while connecting to upstream" not in line and "while reading response header" not in line]
    failed_requests = [{"sent_after_kill_s": round(sent - killed_at, 3), "seconds": round(seconds, 3), "outcome": str(outcome)}
                       for sent, seconds, outcome in load.results if outcome != 200]
    figures = {
        **summary, "clients": args.clients, "duration_s": args.failover_seconds, "killed": victim, "instance": instance,
        "instance_after_restart": new_instance, "restart_count": int(inspect(victim, "{{.RestartCount}}")),
        "restarted_at": restarted_at,
        "killed_at": iso(killed_at), "prometheus_down_at": iso(down), "prometheus_up_again_at": iso(up_again),
        "prometheus_down_after_kill_s": round(down - killed_at, 1) if down else None,
        "prometheus_up_after_kill_s": round(up_again - killed_at, 1) if up_again else None,
        "prometheus_down_for_s": round(up_again - down, 1) if down and up_again else None,
        "requests_while_down": len(during), "nginx_passed_to_next_replica": retried,
        "nginx_other_upstream_errors": other_errors[:10], "failed_requests": failed_requests[:20],
        "up_series": "".join("1" if v == "1" else "0" for _, v in samples),
    }
    report.figure("failover", **figures)
    report.check("failover.no_failed_requests", summary["requests"] > 0 and summary["failed"] == 0,
                 f"{summary['requests']} requests, {summary['failed']} failed {summary['failures'] or ''}; "
                 f"p50 {summary['latency_p50_ms']} ms, p99 {summary['latency_p99_ms']} ms, max {summary['latency_max_ms']} ms; "
                 f"{len(during)} sent while it was down; nginx passed to the next replica: {retried}")
    report.check("failover.restarted_by_policy", bool(back), f"restart count {restarts_before} → {figures['restart_count']}, "
                 f"ready again (restart policy {inspect(victim, '{{.HostConfig.RestartPolicy.Name}}')})")
    report.check("failover.prometheus_down_then_up", bool(down and up_again) and not others_down,
                 f"up{{instance={instance!r}}} 0 at +{figures['prometheus_down_after_kill_s']} s, 1 again at "
                 f"+{figures['prometheus_up_after_kill_s']} s after the kill ({figures['up_series']}); other replicas down: {others_down or 'none'}")
