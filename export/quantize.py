"""Precision variants of the exported fp32 graphs: int8 (CPU) and fp16 (CUDA), and graph optimisation.

int8: dynamic quantization (weights int8 per tensor or per channel, activations quantized at run
time: MatMulInteger). `quantize_dynamic` only quantizes MatMul and Gather in this mode; the
output projection, the largest matrix of a decoder step, is exported as a Gemm (F.linear with
the tied embedding), so `gemm_to_matmul` first rewrites it as MatMul + Add on a transposed copy.

fp16: `onnxruntime.transformers.float16` with float32 inputs/outputs kept, so that the service's
arrays (caches, log-probabilities) stay float32 whatever the package precision.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)


def gemm_to_matmul(model: onnx.ModelProto) -> int:
    """Rewrite Gemm(A, W, C) whose W is an initializer as MatMul(A, Wᵀ or W) + Add(C), in place. → count."""
    graph = model.graph
    initializers = {t.name: t for t in graph.initializer}
    rewritten = 0
    for index, node in reversed(list(enumerate(graph.node))):
        if node.op_type != "Gemm" or node.input[1] not in initializers:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0:
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attrs.get("transB", 0):
            weight = np.ascontiguousarray(weight.T)  # [D, V]: the tied embedding, transposed for MatMul
        weight_name = f"{node.input[1]}_for_matmul"
        graph.initializer.append(numpy_helper.from_array(weight, weight_name))
        product = f"{node.output[0]}_matmul"
        nodes = [helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_MatMul")]
        if len(node.input) > 2 and node.input[2]:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_Add"))
        else:
            nodes[0].output[0] = node.output[0]
        del graph.node[index]
        for offset, new in enumerate(nodes):
            graph.node.insert(index + offset, new)
        rewritten += 1
    return rewritten


def quantize_int8(source: Path, target: Path, per_channel: bool = False, reduce_range: bool = False) -> None:
    """fp32 graph → int8 weights (QInt8), dynamic activation quantization."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        rewritten = Path(scratch) / "matmul.onnx"
        model = onnx.load(str(source))
        log.info("%s: %d Gemm rewritten as MatMul for quantization", source.name, gemm_to_matmul(model))
        onnx.save(model, str(rewritten))
        prepared = Path(scratch) / "prepared.onnx"
        # Symbolic shape inference for the transformer graph, then ORT's basic optimisations (folds the
        # constant subgraphs the quantizer would otherwise miss).
        quant_pre_process(str(rewritten), str(prepared), skip_symbolic_shape=False)
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            op_types_to_quantize=["MatMul", "Gather"],
            extra_options={"MatMulConstBOnly": True},  # activations × activations (attention) stay float
        )
    onnx.checker.check_model(str(target))


def convert_fp16(source: Path, target: Path) -> None:
    """fp32 graph → fp16 weights and compute, float32 inputs/outputs (keep_io_types)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True))
    model.topological_sort()  # the converter appends its input casts after their consumers
    onnx.save(model.model, str(target))
    check_fp16(target)


def check_fp16(path: Path) -> None:
    """Structural check of an fp16 graph: valid ONNX, float32 I/O, no float32 weight left behind."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    float32_weights = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and t.dims]
    if float32_weights:
        raise AssertionError(f"{path.name}: float32 weights left after fp16 conversion: {float32_weights[:5]}")
    for value in [*model.graph.input, *model.graph.output]:
        if value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16:
            raise AssertionError(f"{path.name}: {value.name} is float16; inputs/outputs must stay float32")


def optimize_transformer(source: Path, target: Path, n_heads: int, d_model: int) -> None:
    """ONNX Runtime's transformer optimizer (LayerNorm/SkipLayerNorm/attention fusions), model type bart."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(str(source), model_type="bart", num_heads=n_heads, hidden_size=d_model, opt_level=1)
    optimized.save_model_to_file(str(target))
