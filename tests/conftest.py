import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Two cores: keep each test process from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A small random model with a SentencePiece tokenizer, saved like a trained checkpoint."""
    from tests.tiny_model import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def tiny_fp32_graphs(tiny_checkpoint, tmp_path_factory) -> Path:
    """The checkpoint's fp32 graphs, exported once (the slow part) and shared by every package test."""
    from export.package import export_graphs
    from model.checkpoint import load_model

    directory = tmp_path_factory.mktemp("fp32_graphs")
    export_graphs(load_model(tiny_checkpoint)[0], directory)
    return directory


@pytest.fixture(scope="session")
def tiny_packages(tiny_checkpoint, tiny_fp32_graphs, tmp_path_factory) -> dict[str, Path]:
    """fp32, int8 and fp16 packages of the tiny model, parity-checked against PyTorch on its test split (fp32:
    identical greedy outputs and log-probabilities; int8 and fp16: BLEU within 0.5)."""
    from tests.tiny_model import checked_packages

    return checked_packages(tiny_checkpoint, lambda precision: tmp_path_factory.mktemp(f"package_{precision}"),
                            ("fp32", "int8", "fp16"), fp32_dir=tiny_fp32_graphs)


@pytest.fixture(scope="session")
def tiny_int8_row_scales(tiny_checkpoint, tiny_fp32_graphs, tmp_path_factory) -> Path:
    """An int8 package of the tiny model with a scale per row (`python -m export --row-scales`), without its
    parity report (tests/test_export.py checks parity)."""
    from export.package import build_package

    out = tmp_path_factory.mktemp("int8_row_scales")
    build_package(tiny_checkpoint, out, "int8", max_source_tokens=64, per_channel=True, row_scales=True,
                  fp32_dir=tiny_fp32_graphs)
    return out
