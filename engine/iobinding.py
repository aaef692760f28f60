"""A StepModel whose caches never leave the device: ONNX Runtime IO binding.

On CUDA, feeding numpy arrays would copy every cache host → device → host at every step. Here
the encoder outputs and the decoder's present keys/values stay on the device as OrtValues and
feed the next step directly; only the log-probabilities [N, V] come to the host, where the
search picks tokens. Reordering beams and dropping finished rows is a Gather on the device, run
by a one-node ONNX graph on the same provider.

Tested on the CPU provider (device "cpu"), where it must give the same results as
`OnnxStepModel`; the CUDA device path is the same code with device "cuda", untested without a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from engine.package import PackageManifest
from engine.sessions import RuntimeOptions, create_session, run_options


@dataclass
class BoundState:
    source_padding_mask: ort.OrtValue  # [N, S] bool
    cross: list[ort.OrtValue]  # 2L × [N, H, S, K]
    past: list[ort.OrtValue]  # 2L × [N, H, P, K]


# One-node ONNX graphs: Gather(data, rows, axis=0) → kept, for float32 and bool data of any shape. Embedded
# as serialized bytes because serving does not install the `onnx` package; tests/test_runtime.py rebuilds
# them with onnx.helper and checks that they are these bytes.
GATHER_ROWS_GRAPHS = {
    np.dtype(np.float32): bytes.fromhex(
        "0808120a7472616e736c61746f723a670a270a04646174610a04726f777312046b65707422064761746865722a0b0a046178"
        "69731800a00102120b6761746865725f726f77735a0c0a046461746112040a0208015a130a04726f7773120b0a0908071205"
        "0a0312014d620c0a046b65707412040a02080142040a001012"),
    np.dtype(np.bool_): bytes.fromhex(
        "0808120a7472616e736c61746f723a670a270a04646174610a04726f777312046b65707422064761746865722a0b0a046178"
        "69731800a00102120b6761746865725f726f77735a0c0a046461746112040a0208095a130a04726f7773120b0a0908071205"
        "0a0312014d620c0a046b65707412040a02080942040a001012"),
}
ELEMENT_DTYPES = {"tensor(float)": np.dtype(np.float32), "tensor(bool)": np.dtype(np.bool_)}


class BoundStepModel:
    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession, manifest: PackageManifest,
                 options: RuntimeOptions, device: str):
        self.encoder, self.decoder = encoder, decoder
        self.device, self.device_id = device, options.device_id
        self.pad_id = manifest.special_ids.pad
        dims = manifest.model
        self.heads, self.head_dim, self.n_cache = dims.n_heads, dims.head_dim, 2 * dims.n_decoder_layers
        self.cross_outputs = manifest.graphs.encoder.outputs[1:]  # memory stays unbound: never copied out
        self.decoder_inputs = manifest.graphs.decoder.inputs
        self.decoder_outputs = manifest.graphs.decoder.outputs
        provider = decoder.get_providers()[0]
        self.run_options = run_options(options, provider)
        self.gather = {dtype: create_session(graph, options)[0] for dtype, graph in GATHER_ROWS_GRAPHS.items()}

    def on_device(self, array: np.ndarray) -> ort.OrtValue:
        return ort.OrtValue.ortvalue_from_numpy(array, self.device, self.device_id)

    def run(self, session: ort.InferenceSession, inputs: dict[str, np.ndarray | ort.OrtValue], outputs: list[str],
            to_host: tuple[str, ...] = ()) -> list[ort.OrtValue]:
        binding = session.io_binding()
        for name, value in inputs.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, value)  # small host arrays (token ids, rows) are copied over
        for name in outputs:
            binding.bind_output(name, "cpu" if name in to_host else self.device, self.device_id)
        session.run_with_iobinding(binding, self.run_options)
        return list(binding.get_outputs())

    def encode(self, src_ids: np.ndarray) -> BoundState:
        cross = self.run(self.encoder, {"input_ids": src_ids}, self.cross_outputs)
        empty = np.zeros((src_ids.shape[0], self.heads, 0, self.head_dim), dtype=np.float32)  # P = 0
        return BoundState(self.on_device(src_ids == self.pad_id), cross, [self.on_device(empty) for _ in range(self.n_cache)])

    def step(self, state: BoundState, tokens: np.ndarray) -> tuple[np.ndarray, BoundState]:
        values = [tokens[:, None], state.source_padding_mask, *state.cross, *state.past]
        log_probs, *present = self.run(
            self.decoder, dict(zip(self.decoder_inputs, values)), self.decoder_outputs, to_host=("log_probs",)
        )
        return log_probs.numpy(), BoundState(state.source_padding_mask, state.cross, present)

    def keep_rows(self, value: ort.OrtValue, rows: np.ndarray) -> ort.OrtValue:
        session = self.gather[ELEMENT_DTYPES[value.data_type()]]
        return self.run(session, {"data": value, "rows": rows}, ["kept"])[0]

    def select(self, state: BoundState, rows: np.ndarray, sources_changed: bool) -> BoundState:
        past = [self.keep_rows(t, rows) for t in state.past]
        if not sources_changed:
            return BoundState(state.source_padding_mask, state.cross, past)
        cross = [self.keep_rows(t, rows) for t in state.cross]
        return BoundState(self.keep_rows(state.source_padding_mask, rows), cross, past)
