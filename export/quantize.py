"""Precision variants of the exported fp32 graphs: int8 (CPU), and the check of fp16 graphs (CUDA; built in fp16
by export/graph_builder.py).

int8: dynamic quantization (weights int8 per tensor or per channel, activations quantized at run
time: MatMulInteger, fused by ONNX Runtime into DynamicQuantizeMatMul). `quantize_dynamic` only
quantizes MatMul and Gather in this mode; every projection of both graphs, the vocabulary
projection included, is a MatMul.

fp16: float16 weights and compute with float32 inputs and outputs, so that the service's arrays (caches,
log-probabilities) stay float32 whatever the package precision.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import onnx

log = logging.getLogger(__name__)


def quantize_int8(source: Path, target: Path, per_channel: bool = False, reduce_range: bool = False,
                  nodes: list[str] | None = None, excluded: list[str] | None = None) -> None:
    """fp32 graph → int8 weights (QInt8), dynamic activation quantization; `nodes` / `excluded`: only / all but
    these MatMul nodes (bench.int8_choice mixes scale kinds by quantizing in two passes)."""
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
    onnx.checker.check_model(str(target))


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
