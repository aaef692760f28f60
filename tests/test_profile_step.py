"""`bench.profile_step` on the shipped en→de package: its table splits the whole wall time into each graph's
kernels by operator type, ONNX Runtime around them and the Python between steps."""

from __future__ import annotations

from pathlib import Path

from bench.engines import package_test_set
from bench.profile_step import profile

PACKAGE = Path("models/en-de")


def test_profile_splits_the_wall_time_into_both_graphs_kernels(tmp_path):
    sources, _ = package_test_set(Path("data/en-de/test.tsv"), PACKAGE, 8)
    result = profile(PACKAGE, sources, beam=2, batch=4, threads=1, prefix=str(tmp_path / "profile"))
    parts = {row["part"]: row for row in result["parts"]}
    for graph, operators in (("encoder", ("MultiHeadAttention", "DynamicQuantizeMatMul")),
                             ("decoder", ("DecoderMaskedMultiHeadAttention", "MultiHeadAttention", "TopK"))):
        assert all(parts[f"{graph} {op}"]["calls"] > 0 for op in operators), sorted(parts)
        assert f"{graph}: ORT around kernels" in parts
    assert "Python: search and buffers" in parts and result["steps"] > 0
    kernels = sum(row["share"] for name, row in parts.items() if name.split(" ")[0] in ("encoder", "decoder"))
    assert 0 < kernels < 1  # the kernels are part of the wall time, and Python between steps the rest
    assert abs(sum(row["share"] for row in result["parts"]) - 1) < 0.01
