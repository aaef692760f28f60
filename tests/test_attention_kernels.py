"""The engine's own CPU attention kernels (engine/kernels/attention.cc): built by the install, registered for CPU
sessions under ONNX Runtime's operator names, switchable off, and giving ONNX Runtime's results."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from engine.sessions import CPU, RuntimeOptions, attention_kernels_library, create_session
from engine.translator import Translator
from export.graph_builder import MS_DOMAIN, OPSET


def test_the_install_built_the_kernels():
    # setup.py marks the extension optional (an image without a compiler still installs), so a failed build
    # would pass unnoticed but for this.
    assert attention_kernels_library() is not None


def attention_with_bias() -> bytes:
    """A MultiHeadAttention node with a bias input: a form ONNX Runtime's kernel takes and the engine's refuses."""
    vi = helper.make_tensor_value_info
    node = helper.make_node("MultiHeadAttention", ["q", "k", "v", "bias"], ["out"], domain=MS_DOMAIN, num_heads=2)
    graph = helper.make_graph([node], "g", [vi(n, TensorProto.FLOAT, None) for n in ("q", "k", "v", "bias")],
                              [vi("out", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)])
    return model.SerializeToString()


def run_with_bias(options: RuntimeOptions) -> np.ndarray:
    session, _ = create_session(attention_with_bias(), options)
    x = np.ones((1, 3, 8), np.float32)
    return session.run(None, {"q": x, "k": x, "v": x, "bias": np.zeros(24, np.float32)})[0]


def test_a_cpu_session_runs_the_engines_kernels_unless_switched_off():
    # The engine's kernel is the one that ran: it refuses the bias with its own message, and the run fails cleanly
    # (an exception, not a crash). Switched off, ONNX Runtime's kernel runs the same node.
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.RuntimeException, match="translator attention kernel"):
        run_with_bias(RuntimeOptions(providers=(CPU,)))
    assert run_with_bias(RuntimeOptions(providers=(CPU,), attention_kernels=False)).shape == (1, 3, 8)


@pytest.mark.parametrize("beam_size,n_best", [(1, 1), (4, 1), (4, 3)])
def test_translations_are_onnx_runtimes(tiny_packages, beam_size, n_best):
    """The tiny fp32 package (heads of 8: the kernels' generic path) decodes the same tokens with either kernels,
    in a batch whose sentences finish at different steps; scores agree to float rounding."""
    ours = Translator(tiny_packages["fp32"], RuntimeOptions(intra_op_threads=1))
    theirs = Translator(tiny_packages["fp32"], RuntimeOptions(intra_op_threads=1, attention_kernels=False))
    sources = [[5 + (i * 7 + j) % 80 for j in range(3 + 4 * i)] + [3] for i in range(6)]
    options = ours.search_options(beam_size=beam_size, n_best=n_best)
    for mine, reference in zip(ours.translate_ids(sources, options), theirs.translate_ids(sources, options)):
        assert [h.tokens for h in mine.hypotheses] == [h.tokens for h in reference.hypotheses]
        assert np.allclose([h.score for h in mine.hypotheses], [h.score for h in reference.hypotheses], atol=1e-4)
