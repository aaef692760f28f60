"""ONNX Runtime inference for one model package: translation and sentence embeddings.

`Translator` wraps one package: its sessions, tokenizer, limits and a lock. It decodes through
`engine.step_model.OnnxStepModel` with the search of `engine.search`, the very search the PyTorch
reference is evaluated with.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.package import PackageError, load_package
from engine.process_memory import return_freed_memory
from engine.search import (Decoding, FinishedHook, SearchOptions, SearchResult, StageTimes, length_sorted_batches, pad_batch,
                           search)
from engine.sessions import CPU, CUDA, ProviderUnavailable, RuntimeOptions, create_session, run_options
from engine.step_model import OnnxStepModel
from engine.tokenization import load_tokenization

log = logging.getLogger(__name__)


class SessionsReleased(RuntimeError):
    """Inference asked of a Translator whose sessions were released (Translator.release_sessions)."""


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
        self.options, self.require_parity = options, require_parity
        graphs = self.manifest.graphs
        self.encoder_session, self.provider = self.open_graph(graphs.encoder.file, options)
        self.decoder_session, decoder_provider = self.open_graph(graphs.decoder.file, options)
        if decoder_provider != self.provider:
            raise RuntimeError(f"{self.name}: encoder runs on {self.provider} but decoder on {decoder_provider}")
        self.check_graphs()
        self.check_parity_provider()
        self.run_options = run_options(options, self.provider)
        self.step_model = self.make_step_model()
        self.tokenization = load_tokenization(self.directory, self.manifest)  # checks it against package.json
        self.lock = threading.Lock()
        log.warning(  # WARNING so that it shows at every log level: which hardware translates matters
            "model package %s (%s) runs on %s, %s intra-op threads",
            self.name, self.precision, self.provider, options.intra_op_threads or "default",
        )

    def release_sessions(self) -> None:
        """Drop this copy's ONNX Runtime sessions and hand their memory back to the system (about 18 MiB a shipped
        int8 model): the server's own copy when worker processes translate, which it uses for its manifest, tokenizer
        and limits only. Loading them first checked the package where the server can refuse to start; translating
        on this copy afterwards raises SessionsReleased."""
        with self.lock:
            self.encoder_session = self.decoder_session = self.step_model = None
        gc.collect()  # the sessions may sit in a reference cycle; the collector frees them before the heap is trimmed
        return_freed_memory()

    def require_sessions(self) -> None:
        if self.step_model is None:
            raise SessionsReleased(f"model {self.name}: this copy's sessions were released (worker processes translate); "
                                   "translate on a copy()")

    def copy(self) -> "Translator":
        """The same package in sessions of its own, so that a second batch runs on it beside one of this one (the
        service's inference workers). It costs another copy of the weights and another arena: about 20 MiB loaded for
        a shipped int8 model."""
        return Translator(self.directory, self.options, (self.source_language, self.target_language), self.require_parity)

    def open_graph(self, file: str, options: RuntimeOptions):
        """A session for one of the package's graphs; a graph ONNX Runtime cannot load is a PackageError."""
        try:
            return create_session(self.directory / file, options)
        except ProviderUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - ORT's load errors have no common base class
            reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            raise PackageError(f"{self.directory}: ONNX Runtime cannot load {file}: {reason}") from error

    def make_step_model(self) -> OnnxStepModel:
        graphs, dims = self.manifest.graphs, self.manifest.model
        caches = 2 * dims.n_decoder_layers
        return OnnxStepModel(
            self.encoder_session, self.decoder_session, self.manifest.special_ids.pad,
            cross_outputs=graphs.encoder.outputs[1:],  # cross_key_0, cross_value_0, ... (not memory)
            cache_inputs=graphs.decoder.inputs[-caches:], cache_outputs=graphs.decoder.outputs[-caches:],
            cache_shape=(dims.n_heads, dims.head_dim), max_position=self.manifest.limits.max_positions,
            run_options=self.run_options,
            device=("cuda", self.options.device_id) if self.provider == CUDA else None,
        )

    def check_parity_provider(self) -> None:
        """A package's parity with PyTorch holds for the provider it was checked on (older packages: the CPU).
        Another provider runs other kernels: the fp16 package failed parity on CUDA (README, Deploy)."""
        parity = self.manifest.parity or {}
        checked_on = parity.get("provider", CPU)
        if parity and checked_on != self.provider:
            log.warning("model package %s: its parity with PyTorch was checked on %s, not on %s, which runs it; check it "
                        "there: python -m export --checkpoint CHECKPOINT --out %s --precision %s --device %s", self.name,
                        checked_on, self.provider, self.directory, self.precision, "cuda" if self.provider == CUDA else "cpu")

    def check_graphs(self) -> None:
        """The ONNX files must have the inputs and outputs package.json names (the step model feeds by name)."""
        for session, spec in ((self.encoder_session, self.manifest.graphs.encoder),
                              (self.decoder_session, self.manifest.graphs.decoder)):
            inputs, outputs = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
            if inputs != spec.inputs or outputs != spec.outputs:
                raise PackageError(f"{self.name}: {spec.file} has inputs {inputs} and outputs {outputs}; "
                                   f"package.json says {spec.inputs} and {spec.outputs}")

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
        return [self.tokenization.encode(text) for text in texts]  # one call per text: engine/tokenization.py

    def detokenize(self, ids: list[list[int]], sources: list[str] | None = None) -> list[str]:
        """Output ids → texts. Given each row's source text, a token the vocabulary lacked (UNK: an emoji, an arrow, a
        symbol) comes back as the span of the source it stood for; without, it reads as SentencePiece renders it."""
        if sources is None:
            return [self.tokenization.decode(row) for row in ids]
        unk = self.manifest.special_ids.unk
        return [self.tokenization.decode(row, self.tokenization.unknowns(source) if unk in row else None)
                for row, source in zip(ids, sources, strict=True)]

    def search_options(self, beam_size: int = 1, n_best: int = 1, max_length: int | None = None, **extra) -> SearchOptions:
        ids = self.manifest.special_ids
        extra.setdefault("length_penalty", self.manifest.decoding.length_penalty)
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
    def capped(self, options: SearchOptions) -> SearchOptions:
        limit = self.manifest.limits.max_positions  # the decoder's position table ends here
        return dataclasses.replace(options, max_length=limit) if options.max_length > limit else options

    def translate_ids(self, sources: list[list[int]], options: SearchOptions, times: StageTimes | None = None,
                      on_finished: FinishedHook | None = None) -> list[SearchResult]:
        """Decode one batch, padded as given (the batcher decides what goes together). `times`, when given,
        receives the encoder and decoder-loop durations; `on_finished`, each step's finished sentences as they end
        (called in this thread, holding the model's lock: it must not wait)."""
        self.check_sources(sources)
        batch = pad_batch(sources, self.manifest.special_ids.pad)
        with self.lock:
            self.require_sessions()
            return search(self.step_model, batch, self.manifest.special_ids.pad, self.capped(options), times, on_finished)

    def translate_in_batches(self, sources: list[list[int]], options: SearchOptions, batch_size: int = 32,
                             on_batch: Callable[[int], None] | None = None) -> list[SearchResult]:
        """Many sentences, offline (parity, benchmarks, back-translation) → each one's result, in input order, decoded
        in batches of similar length (less padding); `on_batch` hears how many sentences each batch held."""
        results: list[SearchResult | None] = [None] * len(sources)
        for batch in length_sorted_batches(sources, batch_size):
            for i, result in zip(batch, self.translate_ids([sources[i] for i in batch], options)):
                results[i] = result
            if on_batch is not None:
                on_batch(len(batch))
        return results  # type: ignore[return-value]

    # --- continuous batching: the caller steps a running Decoding, holding `lock` around each call ---------
    def decoding(self, options: SearchOptions) -> Decoding:
        """An empty running batch for sentences searched with `options`."""
        self.require_sessions()
        return Decoding(self.step_model, self.capped(options))

    def join(self, decoding: Decoding, sources: list[list[int]], tags: list) -> None:
        """Add sentences to a running batch; they start at its next step."""
        self.check_sources(sources)
        decoding.join(pad_batch(sources, self.manifest.special_ids.pad), tags, self.manifest.special_ids.pad)

    def translate(self, texts: list[str], beam_size: int = 1, n_best: int = 1, max_length: int | None = None
                  ) -> list[list[Translation]]:
        """Texts → for each, its n best translations, best first."""
        results = self.translate_ids(self.tokenize(texts), self.search_options(beam_size, n_best, max_length))
        return [
            [Translation(text, h.score, h.tokens)
             for h, text in zip(r.hypotheses, self.detokenize([h.tokens for h in r.hypotheses], [source] * len(r.hypotheses)))]
            for r, source in zip(results, texts)
        ]

    def encode_ids(self, sources: list[list[int]]) -> tuple[np.ndarray, list[np.ndarray]]:
        """→ sentence embeddings [B, D] (mean of the encoder states over real tokens, L2-normalised)
        and each sentence's token states [length, D]."""
        self.check_sources(sources)
        batch = pad_batch(sources, self.manifest.special_ids.pad)
        with self.lock:
            self.require_sessions()
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
