"""The overload and soak runners of docs/reliability.md, short: the real `translator serve` in a
subprocess, the real model, real load. What must hold on any machine is asserted (no connection
errors, no 500s, Retry-After on every refusal, recovery, every soak request answered, a clean exit);
the timing figures (rejection p99, throughput share) depend on an idle machine and are `make soak`'s."""

from __future__ import annotations

import json

import pytest

from bench import overload, soak, soak_plot
from tests.service_support import models_dir  # noqa: F401 - fixture

QUICK_SERVER = ["--env", "TRANSLATOR_DEFAULT_BEAM_SIZE=1", "--env", "TRANSLATOR_INTRA_OP_THREADS=1"]
# Overload must be the model's, not the HTTP layer's: real test sentences at the default beam keep the
# capacity low enough (tens of requests per second) for a shared test machine to offer 4× of it.
MODEL_BOUND_SERVER = ["--env", "TRANSLATOR_INTRA_OP_THREADS=1"]


@pytest.fixture()
def corpus(tmp_path):
    """Sentences to send, so the test does not depend on the data split being there."""
    from tests.tiny_model import generated_pairs

    path = tmp_path / "sentences.txt"
    path.write_text("".join(f"{en}\n" for en, _ in generated_pairs(300, seed=7)))
    return path


def test_overload_is_answered_every_time_and_recovers(models_dir, tmp_path):  # noqa: F811
    args = overload.build_parser().parse_args([
        "--models-dir", str(models_dir), "--duration", "6", "--capacity-s", "4",
        "--recovery-s", "4", "--clients", "16", "--log", str(tmp_path / "server.log"), *MODEL_BOUND_SERVER])
    report = overload.run(args)
    checks = report["checks"]
    print(overload.summary(report))
    for must in ("no connection errors", "no 500s", "every 429/503 has Retry-After", "overload was reached (some rejections)",
                 "clean exit on SIGTERM"):
        assert checks[must]["passed"], (must, checks[must], report["overload"]["failure_examples"])
    assert report["recovery"]["ok"] > 0 and report["recovery_s"] is not None and report["recovery_s"] <= 2.0
    assert report["capacity"]["requests_per_s"] > 0 and report["overload"]["ok"] > 0
    rows = report["overload"]["timeline"]
    assert sum(row["sent"] for row in rows) == report["overload"]["requests"]


def test_soak_answers_every_length_and_records_the_memory_curve(models_dir, corpus, tmp_path):  # noqa: F811
    args = soak.build_parser().parse_args([
        "--models-dir", str(models_dir), "--data", str(corpus), "--requests", "120", "--warmup", "40",
        "--concurrency", "4", "--sample-every", "8", "--log", str(tmp_path / "server.log"), *QUICK_SERVER])
    report = soak.run(args)
    print(soak.summary(report))
    assert report["statuses"] == {"200": 120} and report["exit_status"] in (0, -15)
    assert report["lengths"]["shortest"] == 2 and report["lengths"]["longest"] >= 32  # 1 piece + EOS .. the model's limit
    curve = report["curve"]
    assert [point["requests"] for point in curve] == list(range(0, 121, 8))
    assert all(point["rss_mib"] > 50 for point in curve)
    assert report["memory"]["samples_after_warmup"] == 10 and report["memory"]["growth"] < 0.25

    # The curve drawn from the report, as `python -m bench.soak_plot` draws the soaks of docs/reliability.md.
    (tmp_path / "soak.json").write_text(json.dumps(report))
    assert soak_plot.main([str(tmp_path / "soak.json"), "--out", str(tmp_path / "soak.png")]) == 0
    assert (tmp_path / "soak.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
