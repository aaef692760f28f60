"""Precision variants of the exported fp32 graphs: int8 (CPU), and the check of fp16 graphs (CUDA; built in fp16
by export/graph_builder.py).

int8: dynamic quantization (weights int8 per tensor or per channel, activations quantized at run
time: MatMulInteger, fused by ONNX Runtime into DynamicQuantizeMatMul). `quantize_dynamic` only
quantizes MatMul and Gather in this mode; every projection of both graphs, the vocabulary
projection included, is a MatMul. Its activations get one scale for the whole batch, so a sentence's
output can depend on what it is batched with; `row_scales` gives every row its own (`scale_rows`).

fp16: float16 weights and compute with float32 inputs and outputs, so that the service's arrays (caches,
log-probabilities) stay float32 whatever the package precision.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

log = logging.getLogger(__name__)


def quantize_int8(source: Path, target: Path, per_channel: bool = False, reduce_range: bool = False,
                  nodes: list[str] | None = None, excluded: list[str] | None = None, row_scales: bool = False) -> None:
    """fp32 graph → int8 weights (QInt8), dynamic activation quantization (`row_scales`: one scale per row);
    `nodes` / `excluded`: only / all but these MatMul nodes (bench.int8_choice mixes scale kinds by quantizing
    in two passes)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # Symbolic shape inference for the transformer graph, then ORT's basic optimisations (folds the
        # constant subgraphs the quantizer would otherwise miss).
        # ORT's basic optimisations (constant folding); its symbolic shape inference does not know the contrib
        # attention ops, and the graphs declare their shapes already.
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if nodes is not None:
            nodes = quantizer_names(nodes, prepared)
        if excluded is not None:
            excluded = quantizer_names(excluded, prepared)
        quantize_dynamic(
            str(prepared),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_quantize=nodes,
            nodes_to_exclude=excluded,
            # Activations × activations (attention) stay float; a contrib op's outputs have no inferred type.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    if row_scales:
        scale_rows(target)
    onnx.checker.check_model(str(target))


def scale_rows(path: Path) -> None:
    """Quantize every activation with a scale per row instead of one per tensor, in place: each
    DynamicQuantizeLinear (asymmetric, one scale for the whole batch) becomes max |x| / 127 per row around zero
    point 128, as CTranslate2 does, so that no sentence's output depends on the others in its batch. uint8
    around 128, not int8 around 0: ONNX Runtime's u8 × s8 products are fast and its s8 × s8 ones about 13 times
    slower here (a 128 × 2,048 × 256 product with its quantization: 5.2 against 0.41 ms). Each product the
    quantizer wrote (MatMulInteger → Cast → Mul by "x scale × weight scales") becomes one MatMulIntegerToFloat
    with the weight scales, then a Mul by the row's scale."""
    model = onnx.load(str(path))
    producer = {output: node for node in model.graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = {"row_scale_axes": np.array([-1], np.int64), "row_scale_floor": np.array(1e-8, np.float32),
                 "row_scale_step": np.array(1 / 127, np.float32), "row_zero_point": np.array(128, np.float32),
                 "row_zero_point_uint8": np.array(128, np.uint8), "row_scale_one": np.array(1.0, np.float32)}
    replaced: dict[str, list[onnx.NodeProto]] = {}  # node name → what stands in its place (nothing: removed)
    for node in model.graph.node:
        if node.op_type != "DynamicQuantizeLinear":
            continue
        x, quantized, p = node.input[0], node.output[0], node.name
        row_scale = f"{p}_row_scale"  # [..., 1]
        replaced[node.name] = [
            helper.make_node("Abs", [x], [f"{p}_abs"]),
            helper.make_node("ReduceMax", [f"{p}_abs", "row_scale_axes"], [f"{p}_max"], keepdims=1),
            helper.make_node("Max", [f"{p}_max", "row_scale_floor"], [f"{p}_max_floor"]),  # a row of zeros
            helper.make_node("Mul", [f"{p}_max_floor", "row_scale_step"], [row_scale]),
            helper.make_node("Div", [x, row_scale], [f"{p}_scaled"]),
            helper.make_node("Round", [f"{p}_scaled"], [f"{p}_rounded"]),
            helper.make_node("Add", [f"{p}_rounded", "row_zero_point"], [f"{p}_shifted"]),
            helper.make_node("Cast", [f"{p}_shifted"], [quantized], to=TensorProto.UINT8)]
        for product in consumers[quantized]:
            (cast,) = consumers[product.output[0]]
            (rescale,) = consumers[cast.output[0]]
            both_scales = producer[next(name for name in rescale.input if name != cast.output[0])]
            weight_scales = next(name for name in both_scales.input if name != node.output[1])
            output = rescale.output[0]
            replaced[product.name] = [
                helper.make_node("MatMulIntegerToFloat", [quantized, product.input[1], "row_scale_one", weight_scales,
                                                          "row_zero_point_uint8", product.input[3]],
                                 [f"{output}_unscaled"], name=f"{product.name}_to_float", domain="com.microsoft"),
                helper.make_node("Mul", [f"{output}_unscaled", row_scale], [output], name=f"{product.name}_row_scale")]
            replaced.update({cast.name: [], rescale.name: [], both_scales.name: []})
    nodes = [new for node in model.graph.node for new in replaced.get(node.name, [node])]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    onnx.save(model, str(path))


def quantizer_names(names: list[str], prepared: Path) -> list[str]:
    """MatMul names of the exported graph → the names the quantizer sees. The pre-processing fuses a MatMul and
    the Add after it into a Gemm named "<MatMul>/MatMulAddFusion", which the quantizer splits back into a MatMul
    named "<that>_MatMul" (the vocabulary projection and its bias); a name that matches nothing is an error, not
    a selection that silently leaves everything as it was."""
    seen = {n.name: n.op_type for n in onnx.load(str(prepared)).graph.node}
    resolved = []
    for name in names:
        if seen.get(name) == "MatMul":
            resolved.append(name)
        elif seen.get(f"{name}/MatMulAddFusion") == "Gemm":
            resolved.append(f"{name}/MatMulAddFusion_MatMul")
        else:
            raise ValueError(f"no MatMul {name!r} to select for quantization in {prepared.name}")
    return resolved


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
