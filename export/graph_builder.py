"""Writing ONNX graphs node by node from a model's weights: the shared pieces of export/encoder_graph.py
and export/decoder_graph.py.

Weights arrive as plain numpy arrays (`Linear`, `Norm`), whatever framework trained them, so the same
builders serve our own checkpoints and imported ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
OPSET = 18
EXPORTER = "export.graph_builder: ONNX written from the weights"
FLOAT, INT32, INT64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64


def save(graph: onnx.ModelProto, path: Path) -> None:
    """One self-contained .onnx file (our models are far below protobuf's 2 GB limit), checked first."""
    onnx.checker.check_model(graph, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(path))


def versions() -> dict[str, str | int]:
    """What a package's graphs were written with, for its manifest (torch where installed: the trainer)."""
    installed = {}
    for name in ("torch", "onnx", "onnxruntime"):
        try:
            installed[name] = version(name)
        except PackageNotFoundError:  # an importer needs no torch
            pass
    return {**installed, "opset": OPSET, "exporter": EXPORTER}


@dataclass
class Linear:
    weight: np.ndarray  # [in, out]: x @ weight + bias
    bias: np.ndarray | None = None


@dataclass
class Norm:
    weight: np.ndarray
    bias: np.ndarray


class GraphBuilder:
    """Collects nodes and initializers with unique names. `half`: weights and activations in float16, except
    around the attention ops (their CPU kernels are float32, and they update the float32 caches in place)."""

    def __init__(self, half: bool = False):
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.count = 0
        self.half = half
        self.weight_dtype = np.float16 if half else np.float32

    def to_float32(self, x: str) -> str:
        return self.op("Cast", [x], to=FLOAT) if self.half else x

    def to_compute(self, x: str) -> str:
        return self.op("Cast", [x], to=TensorProto.FLOAT16) if self.half else x

    def name(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def constant(self, array: np.ndarray, hint: str) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, outputs: list[str] | int = 1,
           domain: str = "", **attributes) -> str | list[str]:
        names = outputs if isinstance(outputs, list) else [self.name(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.name(op_type), domain=domain or None,
                                           **attributes))
        return names[0] if len(names) == 1 else names

    def weight(self, array: np.ndarray, hint: str) -> str:
        return self.constant(array.astype(self.weight_dtype), hint)

    def linear(self, x: str, linear: Linear, hint: str) -> str:
        y = self.op("MatMul", [x, self.weight(linear.weight, f"{hint}_weight")], hint)
        if linear.bias is None:
            return y
        return self.op("Add", [y, self.weight(linear.bias, f"{hint}_bias")], hint)

    def norm(self, x: str, norm: Norm, eps: float, hint: str) -> str:
        return self.op("LayerNormalization", [x, self.weight(norm.weight, f"{hint}_weight"),
                                              self.weight(norm.bias, f"{hint}_bias")], hint, axis=-1, epsilon=eps)

    def activation(self, x: str, kind: str) -> str:
        if kind == "relu":
            return self.op("Relu", [x])
        if kind == "gelu":
            return self.op("Gelu", [x], domain=MS_DOMAIN)
        if kind == "swish":  # x · sigmoid(x)
            return self.op("Mul", [x, self.op("Sigmoid", [x])])
        raise ValueError(f"unsupported activation {kind!r}")


def residual_block(g: GraphBuilder, x: str, norm: Norm, eps: float, pre_norm: bool, body) -> str:
    """Pre-norm: x + body(LN(x)); post-norm: LN(x + body(x))."""
    if pre_norm:
        return g.op("Add", [x, body(g.norm(x, norm, eps, "norm"))])
    return g.norm(g.op("Add", [x, body(x)]), norm, eps, "norm")


def make_model(builder: GraphBuilder, name: str, inputs: list, outputs: list) -> onnx.ModelProto:
    graph = helper.make_graph(builder.nodes, name, inputs, outputs, builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="translator-export")
    model.ir_version = 9
    return model
