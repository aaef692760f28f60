"""`bench.attention_ops`: the decoder's attention operators timed alone, at a step's shapes, on ONNX Runtime."""

from __future__ import annotations

import json

from bench.attention_ops import main


def test_times_each_operator_and_checks_the_cross_attention_forms_agree(tmp_path, capsys):
    out = tmp_path / "attention.json"
    main(["--batch", "3", "--beams", "2", "--capacity", "12", "--histories", "1,6", "--source", "5", "--repeats", "3",
          "--out", str(out)])
    result = json.loads(out.read_text())
    assert [row["history"] for row in result["self_attention"]] == [1, 6]
    assert all(row["us"] > 0 and row["us_per_slot"] > 0 for row in result["self_attention"])
    # one beam: both kernel paths ran on the same inputs and agreed (else it raises)
    assert [row["history"] for row in result["greedy_self_attention"]] == [1, 6]
    assert all(row["with_indirection_us"] > 0 and row["without_indirection_us"] > 0
               for row in result["greedy_self_attention"])
    assert result["cross_attention"]["multi_head_attention_us"] > 0  # both forms ran and agreed (else it raises)
    assert result["cross_attention"]["matmul_softmax_matmul_us"] > 0
    assert "| 6 |" in capsys.readouterr().out


def test_the_engines_kernels_agree_with_onnx_runtimes_at_the_shipped_head_size(tmp_path):
    # 4 heads of 64, as shipped: the kernels' vector path. main raises unless the engine's self-attention outputs
    # match ONNX Runtime's on the same inputs, and the cross-attention form check compares its MultiHeadAttention
    # with MatMul · Softmax · MatMul.
    out = tmp_path / "attention.json"
    main(["--kernels", "engine", "--batch", "3", "--beams", "4", "--heads", "4", "--head-dim", "64", "--capacity", "12",
          "--histories", "1,7", "--source", "9", "--repeats", "2", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["kernels"] == "engine" and result["cross_attention"]["multi_head_attention_us"] > 0
