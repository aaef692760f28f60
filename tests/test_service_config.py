"""Settings from the environment, their validation, and their documentation."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from cli.main import DELEGATED, build_parser
from service.config import Settings
from tests.service_support import ROOT, models_dir, translators  # noqa: F401 - fixtures


def test_environment_lists_and_platform_port(monkeypatch):
    monkeypatch.setenv("PORT", "9123")
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("TRANSLATOR_LENGTH_BUCKETS", "16, 32,64")
    monkeypatch.setenv("TRANSLATOR_PROVIDERS", '["CUDAExecutionProvider", "CPUExecutionProvider"]')
    monkeypatch.setenv("TRANSLATOR_API_KEYS", "key-one,key-two")
    settings = Settings()
    assert (settings.port, settings.host) == (9123, "0.0.0.0")
    assert settings.length_buckets == (16, 32, 64)
    assert settings.providers == ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert [key.get_secret_value() for key in settings.api_keys] == ["key-one", "key-two"]
    assert "key-" not in repr(settings) and "key-" not in str(settings.api_keys)  # SecretStr: never in a log line
    monkeypatch.setenv("TRANSLATOR_PORT", "9124")  # the specific name wins
    assert Settings().port == 9124
    assert Settings(port=9000).port == 9000  # command-line flags win over both


@pytest.mark.parametrize("values, message", [
    ({"length_buckets": (32, 16)}, "strictly increasing"),
    ({"max_texts_per_request": 100, "queue_limit": 50}, "a full request could never be queued"),
    ({"default_beam_size": 9, "max_beam_size": 8}, "default_beam_size exceeds"),
    ({"max_alternatives": 8, "max_beam_size": 8}, "alternatives come from the beam"),
    ({"max_batch_sentences": 0}, "greater than or equal to 1"),
    ({"shrink_arena": True, "cpu_mem_arena": False}, "shrink_arena needs cpu_mem_arena"),
    ({"scheduler": "continuous", "inference_workers": 2}, "continuous one decodes in one thread"),
    ({"scheduler": "continuous", "inference_worker_kind": "process"}, "continuous one decodes in the server"),
    ({"max_length_ratio": float("inf")}, "finite number"),  # an infinite ratio gave every output a limit of 1 token
    ({"max_length_ratio": 1e19}, "less than or equal to 100"),
    ({"shutdown_timeout_s": float("inf")}, "finite number"),  # crashed the start with an OverflowError
    ({"max_wait_ms": 5000, "request_deadline_s": 2}, "half the request deadline"),  # every lone request timed out
    ({"shutdown_timeout_s": 1, "request_deadline_s": 30}, "shorter than request_deadline_s"),
    ({"api_keys": ("",)}, "empty key"),  # dropped silently: an open service
])
def test_inconsistent_settings_are_refused(values, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_every_setting_is_described_and_documented():
    documentation = (ROOT / "README.md").read_text()
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert f"`TRANSLATOR_{name.upper()}`" in documentation, f"{name} is missing from the README"


def test_cli_serves_and_delegates_without_importing_the_training_side():
    parser = build_parser()
    args = parser.parse_args(["serve", "--port", "8001", "--models-dir", "somewhere"])
    assert (args.port, str(args.models_dir), args.handler.__name__) == (8001, "somewhere", "serve")
    assert set(DELEGATED) == {"data", "train", "average", "evaluate", "card", "export", "import", "load", "tune"}


def test_worker_and_thread_defaults_leave_the_event_loop_a_cpu(tmp_path, monkeypatch):
    import service.config as config

    affinity = len(os.sched_getaffinity(0))
    quota = tmp_path / "cpu.max"
    quota.write_text("max 100000\n")  # no quota: the affinity counts
    assert config.usable_cpus(quota) == affinity
    quota.write_text("150000 100000\n")  # 1.5 CPUs of quota: 2 usable, at most the affinity
    assert config.usable_cpus(quota) == min(affinity, 2)
    assert config.usable_cpus(tmp_path / "missing") == affinity

    def defaults(cpus: int, **values) -> tuple[int, int]:
        monkeypatch.setattr(config, "usable_cpus", lambda: cpus)
        settings = Settings(**values)
        return settings.workers(), settings.onnx_threads()

    assert defaults(2) == (2, 1)  # a worker per CPU, each one thread
    assert defaults(4) == (4, 1)
    assert defaults(16) == (4, 3)  # at most 4 copies; the CPUs less the event loop's one shared among them
    assert defaults(1) == (1, 1)  # never none
    assert defaults(4, scheduler="continuous") == (1, 3)  # it decodes in one thread
    assert defaults(4, providers=("CUDAExecutionProvider",)) == (1, 3)  # one GPU
    assert defaults(4, inference_workers=2) == (2, 1)
    assert defaults(4, inference_workers=2, intra_op_threads=2) == (2, 2)
    assert Settings(intra_op_threads=0).onnx_threads() == 0


def test_inference_workers_are_processes_with_the_batch_scheduler_on_the_cpu():
    assert Settings().worker_processes()
    assert not Settings(scheduler="continuous").worker_processes()  # it decodes in the server
    assert not Settings(providers=("CUDAExecutionProvider",)).worker_processes()  # one GPU, one process on it
    assert not Settings(inference_worker_kind="thread").worker_processes()
    assert Settings(inference_worker_kind="process", providers=("CUDAExecutionProvider",)).worker_processes()


@pytest.mark.parametrize("arena, shrink", [(False, False), (True, True)])
def test_arena_settings_reach_onnx_runtime_and_translate_alike(models_dir, translators, arena, shrink):  # noqa: F811
    from engine.translator import Translator

    options = Settings(intra_op_threads=1, cpu_mem_arena=arena, shrink_arena=shrink).runtime_options()
    assert (options.enable_cpu_mem_arena, options.shrink_arena_after_run) == (arena, shrink)
    texts = ["Open the file.", "Click OK to close the window and save the document."]
    different = Translator(models_dir / "en-de", options).translate(texts, beam_size=2)
    default = translators["en-de"].translate(texts, beam_size=2)
    assert [[t.tokens for t in n_best] for n_best in different] == [[t.tokens for t in n_best] for n_best in default]
