"""`translator tune` against real servers on 127.0.0.1, on short budgets: the sweep's report and plots, and
the recommended env file configuring a real server (the load generator itself: tests/test_loadtest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest
from dotenv import dotenv_values
from matplotlib.image import imread

from service.config import Settings
from loadtest.corpus import SentencePicker, WordCounter, parse_mix, texts_of_length
from tests.service_support import ROOT, ServerProcess, models_dir  # noqa: F401 - models_dir is a fixture
from tests.test_loadtest import TEST_SPLIT, sentences, server  # noqa: F401 - fixtures: the same real server and sentences
from tuning import tune as tune_command
from tuning.lengths import LengthPoint, advise
from tuning.report import TuningRun
from tuning.sweep import DEFAULT_BUCKETS, BatchingSetting, LoadLevel, SweepGrid, SweepPoint, gain_over_defaults, pareto_frontier, recommend


def point(tokens_per_s: float, p95: float, errors: int = 0, setting: BatchingSetting | None = None) -> SweepPoint:
    from loadtest.load import Latency

    latency = Latency(p50_ms=p95 / 2, p90_ms=p95, p95_ms=p95, p99_ms=p95, mean_ms=p95 / 2, max_ms=p95)
    return SweepPoint(setting=setting, level=LoadLevel(concurrency=1), requests=10, ok=10 - errors, rejected=0,
                      errors=errors, requests_per_s=1.0, target_tokens_per_s=tokens_per_s, latency=latency, server=None)


def test_frontier_and_recommendation():
    points = [point(100, 50), point(300, 200), point(250, 300), point(400, 900), point(900, 100, errors=1)]
    assert pareto_frontier(points) == [0, 1, 3]  # 2 is beaten by 1; 4 had an error
    within = recommend(points, p95_target_ms=250)
    assert within.point == 1 and within.met_target
    missed = recommend(points, p95_target_ms=10)
    assert missed.point == 0 and not missed.met_target and "no point met" in missed.reason


def test_gain_is_measured_against_the_services_defaults():
    defaults, bigger = BatchingSetting(), BatchingSetting(max_batch_sentences=64)
    assert Settings().batch_token_budget == defaults.batch_token_budget and Settings().max_wait_ms == defaults.max_wait_ms
    assert Settings().max_batch_sentences == defaults.max_batch_sentences and Settings().length_buckets == DEFAULT_BUCKETS
    assert Settings().scheduler == defaults.scheduler  # the tuner's baseline is what the service runs by default
    assert Settings().inference_workers == defaults.inference_workers
    assert "(defaults)" in defaults.label() and "(defaults)" not in bigger.label()
    one = {"scheduler": ["batch"], "max_wait_ms": [0]}
    assert SweepGrid(max_batch_sentences=[64], **one).settings() == [defaults, bigger]  # the baseline first
    assert SweepGrid(max_batch_sentences=[32, 64], **one).settings() == [defaults, bigger]  # not twice
    assert SweepGrid(max_batch_sentences=[64], with_defaults=False, **one).settings() == [bigger]
    # Both schedulers; the batch scheduler's knobs do not multiply the continuous settings.
    both = SweepGrid(max_batch_sentences=[64], max_wait_ms=[2, 10]).settings()
    assert [(s.scheduler, s.max_wait_ms) for s in both] == [("batch", 0), ("continuous", 0), ("batch", 2), ("batch", 10)]
    # Inference workers: an axis of the batch scheduler only; the continuous one runs one (the service's -1).
    workers = SweepGrid(max_batch_sentences=[32], max_wait_ms=[0], inference_workers=[-1, 1]).settings()
    assert [(s.scheduler, s.inference_workers) for s in workers] == [("continuous", -1), ("batch", -1), ("batch", 1)]
    assert workers[2].environment()["TRANSLATOR_INFERENCE_WORKERS"] == "1" and "1 worker" in workers[2].label()
    assert Settings().inference_worker_kind == defaults.inference_worker_kind
    kinds = SweepGrid(scheduler=["continuous", "batch"], max_batch_sentences=[32], max_wait_ms=[0],
                      inference_worker_kind=["auto", "thread"]).settings()  # the continuous scheduler: its own kind
    assert [(s.scheduler, s.inference_worker_kind) for s in kinds] == [("continuous", "auto"), ("batch", "auto"), ("batch", "thread")]
    assert kinds[2].environment()["TRANSLATOR_INFERENCE_WORKER_KIND"] == "thread" and "worker threads" in kinds[2].label()
    # The defaults at their fastest within 300 ms: 200 tokens/s (400 is too slow); the recommendation 300.
    points = [point(100, 50, setting=defaults), point(200, 250, setting=defaults), point(400, 900, setting=defaults),
              point(300, 280, setting=bigger)]
    gain = gain_over_defaults(points, recommend(points, p95_target_ms=300), 300)
    assert gain.defaults_point == 1 and gain.ratio == pytest.approx(1.5) and "+50%" in gain.text
    assert gain_over_defaults(points[3:], recommend(points[3:], 300), 300).ratio is None  # defaults not measured
    slow_defaults = [point(200, 900, setting=defaults), points[3]]
    assert "at no load level" in gain_over_defaults(slow_defaults, recommend(slow_defaults, 300), 300).text


def test_length_advice_interpolates_the_target_crossing():
    def at(tokens: int, p95: float) -> LengthPoint:
        return LengthPoint(tokens=tokens, mean_source_tokens=tokens, mean_chars=4 * tokens, requests=5, ok=5, failed=0,
                           p50_ms=p95 / 2, p95_ms=p95, rss_bytes=None, peak_rss_bytes=None)

    corpus_tokens = list(range(4, 60))
    advice = advise([at(16, 100), at(32, 200), at(64, 400)], corpus_tokens, [4 * n for n in corpus_tokens], p95_target_ms=300)
    assert advice.met_target and advice.max_tokens == 48  # 300 ms is half way from 32 (200 ms) to 64 (400 ms)
    assert advice.max_text_chars == 48 * 4  # every corpus sentence has 4 characters per token
    assert advice.length_buckets[-1] == 48 and list(advice.length_buckets) == sorted(set(advice.length_buckets))
    assert not advise([at(16, 500)], corpus_tokens, [4 * n for n in corpus_tokens], p95_target_ms=300).met_target


def test_texts_of_a_length_and_the_length_mix(sentences):
    texts = texts_of_length(sentences, WordCounter(), 10, variants=4)
    assert len(texts) == 4 and all(len(t.split()) + 1 == 10 for t in texts)
    counts = WordCounter().count(sentences)
    picker = SentencePicker.by_mix(sentences, counts, parse_mix("1-5:1,30-:0"))
    assert all(len(picker.pick().split()) + 1 <= 5 for _ in range(50))
    with pytest.raises(ValueError, match="no corpus sentence"):
        SentencePicker.by_mix(sentences, counts, parse_mix("900-:1"))


def assert_png(path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 200 and float(np.std(image)) > 0.01  # drawn on, not blank


def test_tune_recommends_settings_that_configure_a_real_server(models_dir, tmp_path):  # noqa: F811
    out = tmp_path / "tuning"
    status = tune_command.main([
        "--models-dir", str(models_dir), "--data", str(TEST_SPLIT), "--out", str(out), "--p95-ms", "20000",
        "--scheduler", "batch", "--max-batch-sentences", "1,32", "--max-wait-ms", "0", "--concurrency", "4",
        "--seconds", "2", "--warmup", "0.5",
        "--lengths", "8,32", "--length-seconds", "1.5", "--threads", "1", "--beam-size", "1", "--no-progress",
        "--note", "test run"])
    assert status == 0
    run = TuningRun.model_validate_json((out / "tuning.json").read_text())
    assert [p.setting.max_batch_sentences for p in run.points] == [1, 32]  # 32 and 0 ms: the defaults, measured once
    for p in run.points:  # the generator's counts, as each server saw them; the generator's own ceiling, measured once
        assert p.ok > 0 and p.server.translate_responses == {"200": p.ok}
        assert p.client.ceiling == run.points[0].client.ceiling and p.client.limited is False
    assert run.points[0].server.mean_batch_size == 1.0  # batching off is off
    chosen = run.points[run.recommendation.point]
    assert run.recommendation.met_target and run.frontier
    assert run.gain.defaults_point == 1
    assert run.gain.ratio == pytest.approx(chosen.target_tokens_per_s / run.points[1].target_tokens_per_s, rel=1e-6)
    assert run.verification is not None and run.verification.ok > 0 and run.verification.errors == 0
    for name in ("frontier.png", "batching.png", "lengths.png"):
        assert_png(out / name)
    report = (out / "report.md").read_text()
    assert "No point came within 80% of it: the server set the pace." in report
    assert "test run" in report and run.gain.text in report and "![throughput vs p95 latency](frontier.png)" in report and "## Sequence length" in report

    env_file = out / "recommended.env"
    settings = Settings(_env_file=env_file)
    assert settings.max_batch_sentences == chosen.setting.max_batch_sentences
    assert settings.max_wait_ms == chosen.setting.max_wait_ms
    assert settings.length_buckets == run.lengths.advice.length_buckets  # buckets were not swept: the length study's
    assert settings.max_text_chars == run.lengths.advice.max_text_chars <= 32 * 8
    environment = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
    assert set(environment) == {"TRANSLATOR_SCHEDULER", "TRANSLATOR_BATCH_TOKEN_BUDGET", "TRANSLATOR_MAX_BATCH_SENTENCES", "TRANSLATOR_MAX_WAIT_MS",
                                "TRANSLATOR_LENGTH_BUCKETS", "TRANSLATOR_INFERENCE_WORKERS", "TRANSLATOR_INFERENCE_WORKER_KIND",
                                "TRANSLATOR_MAX_TEXT_CHARS"}
    assert settings.inference_workers == chosen.setting.inference_workers
    assert settings.inference_worker_kind == chosen.setting.inference_worker_kind
    with ServerProcess(models_dir, tmp_path / "recommended.log", **environment) as recommended:
        recommended.wait_ready()
        body = {"source": "en", "target": "de"}
        assert httpx.post(recommended.url + "/v1/translate", json=body | {"text": "Open the file."}).status_code == 200
        too_long = "word " * settings.max_text_chars
        answer = httpx.post(recommended.url + "/v1/translate", json=body | {"text": too_long})
        assert answer.status_code == 400 and f"the limit is {settings.max_text_chars}" in answer.text


def test_tune_against_a_url_sweeps_load_levels_only(server, tmp_path):
    out = tmp_path / "tuning"
    generator = "wrk" if shutil.which("wrk") else "python"  # the sweep on wrk where it is installed
    assert tune_command.main(["--url", server.url, "--data", str(TEST_SPLIT), "--out", str(out), "--concurrency", "1,2",
                              "--seconds", "1", "--warmup", "0", "--lengths", "8", "--length-seconds", "1",
                              "--no-progress", "--generator", generator, "--ceiling-seconds", "0.5"]) == 0
    run = TuningRun.model_validate_json((out / "tuning.json").read_text())
    assert run.mode == "url" and [p.level.concurrency for p in run.points] == [1, 2] and run.gain is None
    assert all(p.client.generator.startswith(generator.replace("python", "aiohttp")) for p in run.points)
    assert all(p.server.generated_tokens and p.client.ceiling for p in run.points)
    assert_png(out / "lengths.png")
    assert all(p.setting is None and p.ok > 0 for p in run.points) and run.verification is None
    assert "Only load levels were swept" in (out / "report.md").read_text()
    # The server's batching stays as it is; the length study still advises the input limit and bucket edges.
    advised = dotenv_values(out / "recommended.env")
    assert advised == {"TRANSLATOR_MAX_TEXT_CHARS": str(run.lengths.advice.max_text_chars),
                       "TRANSLATOR_LENGTH_BUCKETS": ",".join(map(str, run.lengths.advice.length_buckets))}


def test_cli_delegates_and_tuning_never_imports_torch():
    code = ("import sys; from cli.main import DELEGATED; import tuning.tune, loadtest.load, tuning.plots; "
            "assert DELEGATED['load'] == 'loadtest.load' and DELEGATED['tune'] == 'tuning.tune'; "
            "assert 'torch' not in sys.modules, 'tuning imported torch'")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    help_text = subprocess.run([sys.executable, "-m", "cli.main", "tune", "--help"], cwd=ROOT, check=True,
                               capture_output=True, text=True).stdout
    assert "--p95-ms" in help_text and "--length-buckets" in help_text


def test_wrk_takes_closed_loops_only(capsys):
    with pytest.raises(SystemExit):
        tune_command.parse_args(["--generator", "wrk", "--rate", "2,5"])
    assert "closed loops only" in capsys.readouterr().err


def test_quick_budget_gives_way_to_explicit_options():
    quick = tune_command.parse_args(["--quick", "--seconds", "9", "--concurrency", "2"])
    assert quick.seconds == 9 and quick.concurrency == [2] and quick.max_batch_sentences == tune_command.QUICK["max_batch_sentences"]
    assert quick.lengths == tune_command.QUICK["lengths"] and "quick run" in quick.note
    full = tune_command.parse_args([])
    assert full.seconds == SweepGrid().seconds_per_point and full.concurrency == SweepGrid().concurrency and full.note is None
