"""ONNX Runtime inference for one model package: translation and sentence embeddings.

`OnnxStepModel` drives the package's two graphs through the `StepModel` protocol of
`engine.search`, so ORT decodes with the very search the PyTorch reference is evaluated
with. Caches live in numpy arrays between steps on the CPU; with IO binding (the default on
CUDA) they stay on the device as OrtValues and only the log-probabilities come back to the
host (`engine.iobinding`). `Translator` wraps one package: tokenizer, limits, a lock.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm

from engine.search import SearchOptions, SearchResult, pad_batch, search
from engine.package import PackageError, PackageManifest, load_package
from engine.sessions import CUDA, ProviderUnavailable, RuntimeOptions, create_session, run_options

log = logging.getLogger(__name__)


@dataclass
class OnnxState:
    source_padding_mask: np.ndarray  # [N, S] bool, True on padding
    cross: list[np.ndarray]  # 2L × [N, H, S, K]: key_0, value_0, key_1, ...
    past: list[np.ndarray]  # 2L × [N, H, P, K]


class OnnxStepModel:
    """The package's encoder and decoder graphs as a StepModel, caches in numpy."""

    def __init__(self, encoder, decoder, manifest: PackageManifest, run_options=None):
        self.encoder, self.decoder = encoder, decoder
        self.pad_id = manifest.special_ids.pad
        dims = manifest.model
        self.cache_shape = (dims.n_heads, dims.head_dim)
        self.n_cache = 2 * dims.n_decoder_layers
        self.cross_outputs = manifest.graphs.encoder.outputs[1:]  # cross_key_0, cross_value_0, ... (not memory)
        self.decoder_inputs = manifest.graphs.decoder.inputs  # input_ids, source_padding_mask, cross..., past...
        self.decoder_outputs = manifest.graphs.decoder.outputs  # log_probs, present...
        self.run_options = run_options

    def encode(self, src_ids: np.ndarray) -> OnnxState:
        cross = self.encoder.run(self.cross_outputs, {"input_ids": src_ids}, self.run_options)
        batch = src_ids.shape[0]
        empty = np.zeros((batch, self.cache_shape[0], 0, self.cache_shape[1]), dtype=np.float32)  # P = 0
        return OnnxState(src_ids == self.pad_id, cross, [empty] * self.n_cache)

    def step(self, state: OnnxState, tokens: np.ndarray) -> tuple[np.ndarray, OnnxState]:
        values = [tokens[:, None], state.source_padding_mask, *state.cross, *state.past]
        log_probs, *present = self.decoder.run(self.decoder_outputs, dict(zip(self.decoder_inputs, values)), self.run_options)
        return log_probs, OnnxState(state.source_padding_mask, state.cross, present)

    def select(self, state: OnnxState, rows: np.ndarray, sources_changed: bool) -> OnnxState:
        past = [np.take(t, rows, axis=0) for t in state.past]
        if not sources_changed:
            return OnnxState(state.source_padding_mask, state.cross, past)
        cross = [np.take(t, rows, axis=0) for t in state.cross]
        return OnnxState(np.take(state.source_padding_mask, rows, axis=0), cross, past)


@dataclass
class Translation:
    text: str
    score: float
    tokens: list[int]


class Translator:
    """One model package on ONNX Runtime. Thread-safe: one call at a time runs, the others wait;
    ORT releases the GIL while it computes, so the event loop stays responsive."""

    def __init__(self, directory: Path | str, options: RuntimeOptions = RuntimeOptions(),
                 expect_pair: tuple[str, str] | None = None, require_parity: bool = True):
        self.directory = Path(directory)
        self.manifest = load_package(self.directory, expect_pair, require_parity=require_parity)
        self.options = options
        graphs = self.manifest.graphs
        self.encoder_session, self.provider = self.open_graph(graphs.encoder.file, options)
        self.decoder_session, decoder_provider = self.open_graph(graphs.decoder.file, options)
        if decoder_provider != self.provider:
            raise RuntimeError(f"{self.name}: encoder runs on {self.provider} but decoder on {decoder_provider}")
        self.check_graphs()
        self.run_options = run_options(options, self.provider)
        self.io_binding = options.io_binding if options.io_binding is not None else self.provider == CUDA
        self.step_model = self.make_step_model()
        self.tokenizer = spm.SentencePieceProcessor(model_file=str(self.directory / self.manifest.tokenizer))
        self.check_tokenizer()
        self.lock = threading.Lock()
        log.warning(  # WARNING so that it shows at every log level: which hardware translates matters
            "model package %s (%s) runs on %s, io binding %s, %s intra-op threads",
            self.name, self.precision, self.provider, "on" if self.io_binding else "off", options.intra_op_threads or "default",
        )

    def open_graph(self, file: str, options: RuntimeOptions):
        """A session for one of the package's graphs; a graph ONNX Runtime cannot load is a PackageError."""
        try:
            return create_session(self.directory / file, options)
        except ProviderUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - ORT's load errors have no common base class
            reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            raise PackageError(f"{self.directory}: ONNX Runtime cannot load {file}: {reason}") from error

    def make_step_model(self):
        if self.io_binding:
            from engine.iobinding import BoundStepModel  # the CUDA path; also runs (and is tested) on CPU

            device = "cuda" if self.provider == CUDA else "cpu"
            return BoundStepModel(self.encoder_session, self.decoder_session, self.manifest, self.options, device)
        return OnnxStepModel(self.encoder_session, self.decoder_session, self.manifest, self.run_options)

    def check_graphs(self) -> None:
        """The ONNX files must have the inputs and outputs package.json names (the step model feeds by name)."""
        for session, spec in ((self.encoder_session, self.manifest.graphs.encoder),
                              (self.decoder_session, self.manifest.graphs.decoder)):
            inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
            if inputs != spec.inputs or outputs != spec.outputs:
                raise PackageError(f"{self.name}: {spec.file} has inputs {inputs} and outputs {outputs}; "
                                   f"package.json says {spec.inputs} and {spec.outputs}")

    def check_tokenizer(self) -> None:
        ids, sp = self.manifest.special_ids, self.tokenizer
        if sp.get_piece_size() != self.manifest.model.vocab_size:
            raise PackageError(f"{self.name}: tokenizer has {sp.get_piece_size()} pieces, model {self.manifest.model.vocab_size}")
        if (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) != (ids.pad, ids.unk, ids.bos, ids.eos):
            raise PackageError(f"{self.name}: tokenizer special ids differ from package.json")

    # --- what the package says ---------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def source_language(self) -> str:
        return self.manifest.source_language

    @property
    def target_language(self) -> str:
        return self.manifest.target_language

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def max_source_tokens(self) -> int:
        return self.manifest.limits.max_source_tokens

    # --- text ↔ ids ----------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Source ids with EOS appended, as the model was trained. Not truncated: see max_source_tokens."""
        # One call per text: given a list, sentencepiece starts a thread pool on every call (~80 µs for
        # one sentence against ~4 µs; milliseconds when the cores are busy), and this runs in the event loop.
        eos = self.manifest.special_ids.eos
        return [self.tokenizer.encode(text, out_type=int) + [eos] for text in texts]

    def detokenize(self, ids: list[list[int]]) -> list[str]:
        return [self.tokenizer.decode(list(map(int, row))) for row in ids]  # one call per row: see tokenize

    def search_options(self, beam_size: int = 1, n_best: int = 1, max_length: int | None = None, **extra) -> SearchOptions:
        ids = self.manifest.special_ids
        options = SearchOptions(bos_id=ids.bos, eos_id=ids.eos, beam_size=beam_size, n_best=n_best, **extra)
        return dataclasses.replace(options, max_length=min(max_length or options.max_length, self.manifest.limits.max_positions))

    def check_sources(self, sources: list[list[int]]) -> None:
        if not sources:
            raise ValueError("no sentences to process")
        vocab = self.manifest.model.vocab_size
        for i, ids in enumerate(sources):
            if not ids:
                raise ValueError(f"sentence {i} has no tokens")
            if len(ids) > self.max_source_tokens:
                raise ValueError(f"sentence {i} has {len(ids)} tokens; this model takes at most {self.max_source_tokens}")
            if min(ids) < 0 or max(ids) >= vocab:
                raise ValueError(f"sentence {i} has token ids outside the vocabulary (0..{vocab - 1})")

    # --- inference -----------------------------------------------------------------------------
    def translate_ids(self, sources: list[list[int]], options: SearchOptions) -> list[SearchResult]:
        """Decode one batch, padded as given (the batcher decides what goes together)."""
        self.check_sources(sources)
        limit = self.manifest.limits.max_positions  # the decoder's position table ends here
        if options.max_length > limit:
            options = dataclasses.replace(options, max_length=limit)
        batch = pad_batch(sources, self.manifest.special_ids.pad)
        with self.lock:
            return search(self.step_model, batch, self.manifest.special_ids.pad, options)

    def translate(self, texts: list[str], beam_size: int = 1, n_best: int = 1, max_length: int | None = None
                  ) -> list[list[Translation]]:
        """Texts → for each, its n best translations, best first."""
        results = self.translate_ids(self.tokenize(texts), self.search_options(beam_size, n_best, max_length))
        return [
            [Translation(text, h.score, h.tokens) for h, text in zip(r.hypotheses, self.detokenize([h.tokens for h in r.hypotheses]))]
            for r in results
        ]

    def encode_ids(self, sources: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """→ sentence embeddings [B, D] (mean of the encoder states over real tokens, L2-normalised)
        and each sentence's token states [length, D]."""
        self.check_sources(sources)
        batch = pad_batch(sources, self.manifest.special_ids.pad)
        with self.lock:
            (memory,) = self.encoder_session.run(["memory"], {"input_ids": batch}, self.run_options)  # [B, S, D]
        real = (batch != self.manifest.special_ids.pad)[:, :, None]  # [B, S, 1]
        mean = (memory * real).sum(axis=1) / real.sum(axis=1)  # [B, D]
        embeddings = mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
        return embeddings.astype(np.float32), [memory[i, : len(s)] for i, s in enumerate(sources)]

    def warmup(self, batch_size: int = 8) -> None:
        """Run once at the longest source and a full batch, so that the first request pays neither for
        lazy initialisation nor for growing the memory arena to its working size."""
        ids = self.manifest.special_ids
        longest = [[ids.unk] * (self.max_source_tokens - 1) + [ids.eos]]
        short = [[ids.unk] * 8 + [ids.eos]] * batch_size
        options = self.search_options(max_length=4)
        self.translate_ids(longest, options)
        self.translate_ids(short, options)
        self.encode_ids(short)
