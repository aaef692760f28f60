"""A package's encoder and decoder graphs as a `StepModel`, with caches that are never copied per step.

The decoder graph (export/decoder_graph.py) writes each step's keys/values in place into
fixed-capacity caches [N, H, C, K] and reads beam histories through a cache-indirection table, so
a step costs no cache traffic: reordering beams rewrites int32 indices. Every input and output of a
step lives in a numpy buffer allocated with the batch and wrapped as an OrtValue without a copy (IO
binding): the caches are bound as both the past input and the present output, and a step only writes
this step's tokens into the bound buffers and reads the candidates out of theirs.

All rows write slot `past_length` at a step. Sentences that join a running batch (continuous
batching) start there, with their own positions and a self-attention mask that hides the slots
written before they joined; when the slots run out, or once the slots before the oldest live sentence's
start outnumber those after it, the live rows' history is moved to the front.

The caches are allocated for the batch's step limit but not initialised: memory a step never writes
is never touched, so it costs address space, not resident memory. Copies happen only when the batch
changes: finished sentences leave lazily (their rows keep being computed and ignored until a quarter
of the batch has finished, then the live sentences from past the first n places, n the live count, move into
finished ones' places in the same buffers, and the memory behind them goes back to the operating system), and
joining sentences may need larger buffers.
The encoder runs in slices of at most ENCODER_TOKENS padded tokens (on the CPU; more on a GPU, which wants
large batches), which bounds the largest activations ONNX Runtime's arena ever grows to.

On a GPU (`device`), the caches live in device memory, bound as both input and output by address, and
the cross-attention keys/values are uploaded once per binding. ONNX Runtime copies a host input that GPU
kernels read when it is bound, not at each run (IOBinding::BindInput), so the inputs that change every
step (tokens, positions, cache indirection, past length) are bound again at every step. The CUDA kernel
of DecoderMaskedMultiHeadAttention keeps its key cache in FasterTransformer's layout [N, H, K/x, C, x]
(x = 4 float32 values: 16 bytes), its value cache as [N, H, C, K]: key caches are converted when they
travel between the GPU and the host. The per-step inputs and the candidates are small and stay host
arrays. Finished rows are not compacted on a GPU: computing them costs next to nothing
there, and moving the caches would mean a round trip through the host. Operations that move cache rows
(joining past the buffers' room) bring the caches back to the host first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from engine.host_buffers import (as_ortvalue, bind_host_input, bind_host_output, lazy_zeros, release_rows,
                                 run_bound)
from engine.search import Candidates

CANDIDATE_OUTPUTS = ("top_log_probs", "top_ids", "eos_log_probs")
COMPACT_SHARE = 0.25  # compact once this share of the batch's sentences has finished (measured: README)
REBASE_SLOTS = 8  # continuous batching: least slots before the oldest live sentence's start worth moving (see `keep`)
ENCODER_TOKENS = 512  # padded source tokens per encoder run on the CPU: less arena, no slower (measured: README)
DEVICE_ENCODER_TOKENS = 2048  # the same on a GPU (what the CUDA check ran)
KEY_PACK = 4  # float32 values per 16 bytes: the CUDA attention kernel's key-cache tile (see `key_layout`)


def key_layout(cache: np.ndarray, to_device: bool) -> np.ndarray:
    """A key cache [N, H, C, K] in the CUDA kernel's layout [N, H, K/x, C, x] (to_device), or back: the same
    buffer shape, its values in another order."""
    rows, heads, capacity, size = cache.shape
    if to_device:
        moved = cache.reshape(rows, heads, capacity, size // KEY_PACK, KEY_PACK).transpose(0, 1, 3, 2, 4)
    else:
        moved = cache.reshape(rows, heads, size // KEY_PACK, capacity, KEY_PACK).transpose(0, 1, 3, 2, 4)
    return np.ascontiguousarray(moved).reshape(rows, heads, capacity, size)


@dataclass
class RowBuffers:
    """Per-row inputs and outputs of a step, allocated for every row the batch has room for; steps bind
    prefixes of them."""

    tokens: np.ndarray  # [rows] int64
    positions: np.ndarray  # [rows] int64
    attention_mask: np.ndarray  # [rows · capacity] int32: viewed as [N, T] each step
    log_probs: np.ndarray  # [rows, k] float32
    ids: np.ndarray  # [rows, k] int64
    eos: np.ndarray  # [rows] float32

    @classmethod
    def allocate(cls, rows: int, capacity: int, k: int) -> "RowBuffers":
        return cls(np.zeros(rows, np.int64), np.zeros(rows, np.int64), np.ones(rows * capacity, np.int32),
                   np.empty((rows, k), np.float32), np.empty((rows, k), np.int64), np.empty(rows, np.float32))


@dataclass
class DecodeState:
    """The batch as the decoder sees it: B sentences in the buffers (the first B of those allocated), of which
    `alive` are still searched. Arrays are compacted in place and grow only when sentences join."""

    beam_width: int
    sentences: int  # B: sentences in the decoder's batch, finished or not
    alive: np.ndarray  # [n] int64: the decoder-batch index of each sentence the search still runs
    start: np.ndarray  # [B₀] int64: the slot each sentence's first token was written to
    source_mask: np.ndarray  # [B₀, S] int32, 1 on real tokens
    cross: list[np.ndarray]  # 2L × [B₀, H, S, K]
    caches: list[np.ndarray]  # 2L × [B₀·W, H, C, K]
    indirection: np.ndarray  # [B₀, W, C] int32: updated in place by `reorder`
    past_length: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int32))  # slots written
    device_caches: list[ort.OrtValue] | None = None  # on a GPU: the caches (`caches` is stale while set)
    device_cross: list[ort.OrtValue] = field(default_factory=list)  # on a GPU: the bound cross keys/values
    fresh_caches: bool = True  # the caches hold zeros only (the same in any layout)
    buffers: RowBuffers | None = None
    k: int = 0
    binding: ort.IOBinding | None = None
    in_order: bool = True  # kept by `set_alive`
    settings: tuple[np.ndarray, ...] = ()  # beam_width, top_k and query_shape, as bound
    row_start: np.ndarray | None = None  # [N] the start of each bound row; None when every row starts at 0
    bound: tuple | None = None  # (rows, k) the inputs were last bound for; None: bind again
    beams: np.ndarray = field(init=False)  # [W] int32: 0 … W−1

    def __post_init__(self) -> None:
        self.beams = np.arange(self.beam_width, dtype=np.int32)

    @property
    def length(self) -> int:
        return int(self.past_length[0])

    @property
    def rows(self) -> int:
        return self.sentences * self.beam_width

    @property
    def allocated(self) -> int:
        return len(self.start)

    @property
    def capacity(self) -> int:
        return self.caches[0].shape[2]

    def set_alive(self, alive: np.ndarray, sentences: int | None = None) -> None:
        """The sentences searched (and, if given, the decoder batch's size B); `in_order` is worked out once here
        rather than at every step."""
        self.alive = alive
        if sentences is not None:
            self.sentences = sentences
        # Every sentence in the buffers is searched, in buffer order: rows map to the search's rows one to one.
        self.in_order = len(alive) == self.sentences and bool((alive == np.arange(self.sentences)).all())

    def alive_rows(self) -> np.ndarray:
        return (self.alive[:, None] * self.beam_width + np.arange(self.beam_width)).reshape(-1)


class OnnxStepModel:
    def __init__(self, encoder: ort.InferenceSession, decoder: ort.InferenceSession, pad_id: int,
                 cross_outputs: list[str], cache_inputs: list[str], cache_outputs: list[str],
                 cache_shape: tuple[int, int], max_position: int, run_options: ort.RunOptions | None = None,
                 device: tuple[str, int] | None = None):
        self.encoder, self.decoder = encoder, decoder
        self.pad_id = pad_id
        self.cross_names = cross_outputs  # cross_key_0, cross_value_0, ...: encoder outputs and decoder inputs
        self.cache_inputs, self.cache_outputs = cache_inputs, cache_outputs
        self.heads, self.head_dim = cache_shape
        self.max_position = max_position - 1  # the last row of the decoder's position table

        self.run_options = run_options
        self.device = device  # (ORT device type, id) holding the caches, e.g. ("cuda", 0); None: host memory

    def encode(self, src_ids: np.ndarray) -> list[np.ndarray]:
        """→ every decoder layer's cross-attention keys and values [B, H, S, K], encoded in slices. On the CPU each
        slice writes straight into its rows of the result (IO binding): no per-slice outputs to concatenate. One
        slice runs plainly: binding costs more than it saves there (about 50 µs a sentence at batch 1)."""
        rows = max(1, (ENCODER_TOKENS if self.device is None else DEVICE_ENCODER_TOKENS) // src_ids.shape[1])
        if rows >= len(src_ids):
            return self.encoder.run(self.cross_names, {"input_ids": src_ids}, self.run_options)
        if self.device is not None:
            parts = [self.encoder.run(self.cross_names, {"input_ids": src_ids[i : i + rows]}, self.run_options)
                     for i in range(0, len(src_ids), rows)]
            return [np.concatenate(pieces) for pieces in zip(*parts)]
        src_ids = np.ascontiguousarray(src_ids, np.int64)
        batch, width = src_ids.shape
        cross = [np.empty((batch, self.heads, width, self.head_dim), np.float32) for _ in self.cross_names]
        binding = self.encoder.io_binding()
        for first in range(0, batch, rows):
            bind_host_input(binding, "input_ids", src_ids[first : first + rows])
            for name, array in zip(self.cross_names, cross):  # rows of a C-contiguous array: contiguous
                bind_host_output(binding, name, array[first : first + rows])
            run_bound(self.encoder, binding, self.run_options)
        return cross

    # --- StepModel -----------------------------------------------------------------------------
    def start(self, src_ids: np.ndarray, beam_width: int, max_steps: int) -> DecodeState:
        batch = len(src_ids)
        state = DecodeState(
            beam_width, batch, np.arange(batch), np.zeros(batch, np.int64), (src_ids != self.pad_id).astype(np.int32),
            self.encode(src_ids),
            [lazy_zeros((batch * beam_width, self.heads, max_steps, self.head_dim)) for _ in self.cache_inputs],
            np.zeros((batch, beam_width, max_steps), np.int32))
        return state

    def join(self, state: DecodeState, src_ids: np.ndarray, limits: np.ndarray) -> None:
        """Newcomers take the places of finished sentences first (their rows need no moving: the slots before a
        newcomer's start are masked), then places after the last sentence."""
        added, width = len(src_ids), src_ids.shape[1]
        cross = self.encode(src_ids)
        free = np.setdiff1d(np.arange(state.sentences), state.alive)[:added]
        extra = added - len(free)
        if state.sentences + extra > state.allocated and len(state.alive) < state.sentences:
            self.compact(state)
            free, extra = free[:0], added
        if state.sentences + extra > state.allocated:
            self.grow(state, sentences=max(state.sentences + extra, 2 * state.allocated))
        if width > state.source_mask.shape[1]:
            self.grow(state, source=width)
        if state.length + int(limits.max()) > state.capacity:
            self.rebase(state)
        if state.length + int(limits.max()) > state.capacity:
            self.grow(state, capacity=max(state.length + int(limits.max()), 2 * state.capacity))
        new = np.concatenate([free, np.arange(state.sentences, state.sentences + extra)])
        for array, part in zip(state.cross, cross):
            array[new] = 0  # keys/values of padding stay finite: masked scores must not turn into NaN
            array[new, :, :width] = part
        state.source_mask[new] = 0
        state.source_mask[new, :width] = src_ids != self.pad_id
        state.start[new] = state.length
        state.indirection[new] = 0  # slots before the start are masked, but must name a valid beam
        state.set_alive(np.concatenate([state.alive, new]), state.sentences + extra)
        state.bound = None

    def step(self, state: DecodeState, tokens: np.ndarray, k: int) -> Candidates:
        binding = self.bind(state, k)
        rows, length, buffers = state.rows, state.length, state.buffers
        # Rows of finished sentences keep their last token: computed, never read.
        live = slice(0, rows) if state.in_order else state.alive_rows()
        buffers.tokens[live] = tokens
        mask = buffers.attention_mask[: rows * (length + 1)].reshape(rows, length + 1)  # contiguous: a prefix
        if state.row_start is None:
            buffers.positions[:rows] = length
        else:  # rows that joined later: their own positions, and the slots before they joined hidden (a finished
            # sentence's rows, computed and ignored until their place is taken, stay inside the position table)
            np.minimum(length - state.row_start, self.max_position, out=buffers.positions[:rows])
            np.greater_equal(np.arange(length + 1), state.row_start[:, None], out=mask, casting="unsafe")
        bind_host_input(binding, "self_attention_mask", mask)
        if self.device is not None:  # a host input read on the GPU is copied there when bound, not when run
            for name, array in self.step_inputs(state).items():
                bind_host_input(binding, name, array)
        run_bound(self.decoder, binding, self.run_options)
        state.indirection[:, :, length] = state.beams  # each beam wrote its own slot
        state.past_length[0] += 1
        return Candidates(buffers.log_probs[live], buffers.ids[live], buffers.eos[live])

    def reorder(self, state: DecodeState, parents: np.ndarray) -> None:
        """Beam w of each searched sentence takes the written slots of beam parents[b, w]: rows of the indirection
        table seen as [B₀·W, C] (a view), gathered in one indexing."""
        table = state.indirection.reshape(-1, state.capacity)
        sources = (state.alive[:, None] * state.beam_width + parents).reshape(-1)
        targets = slice(0, state.rows) if state.in_order else state.alive_rows()
        table[targets, : state.length] = table[sources, : state.length]

    def keep(self, state: DecodeState, sentences: np.ndarray) -> None:
        state.set_alive(state.alive[sentences])
        if self.device is not None:
            return
        if len(state.alive) <= (1 - COMPACT_SHARE) * state.sentences:
            self.compact(state)
        # Every row attends over every slot written since the history began (ONNX Runtime's CPU kernel: one dot
        # product per slot, ~20 us per slot at 32 rows): once the slots before the oldest live sentence's start
        # outnumber those after it (only with sentences that joined later), the histories move to the front.
        first = int(state.start[state.alive].min())
        if first >= REBASE_SLOTS and 2 * first >= state.length:
            self.rebase(state)

    # --- moving rows ---------------------------------------------------------------------------
    def compact(self, state: DecodeState) -> None:
        """Move the rows of the live sentences that lie past the first n places (n: live sentences) into the places of
        finished ones, so that later steps compute only the first n: the fewest rows move (the search's order of
        sentences is kept by `alive`, which then need not be ascending)."""
        self.to_host(state)
        alive, length, width, count = state.alive.copy(), state.length, state.beam_width, len(state.alive)
        movers = np.flatnonzero(alive >= count)  # search indices of the live sentences to move
        if len(movers):
            sources, holes = alive[movers], np.setdiff1d(np.arange(count), alive)  # as many holes as movers
            offsets = np.arange(width)
            source_rows, hole_rows = ((places[:, None] * width + offsets).reshape(-1) for places in (sources, holes))
            for cache in state.caches:
                cache[hole_rows, :, :length] = cache[source_rows, :, :length]
            for array in (*state.cross, state.source_mask, state.indirection, state.start):
                array[holes] = array[sources]
            alive[movers] = holes
        for cache in state.caches:
            release_rows(cache, count * width)
        state.set_alive(alive, count)
        state.bound = None

    def rebase(self, state: DecodeState) -> None:
        """Move every row's history to the front of the slots by the oldest live start, so that sentences joining
        later fit (finished sentences' rows are moved too: cheaper than telling them apart)."""
        length, rows, batch = state.length, state.rows, state.sentences
        first = int(state.start[state.alive].min()) if len(state.alive) else length
        if first == 0:
            return
        self.to_host(state)
        for cache in state.caches:
            cache[:rows, :, : length - first] = cache[:rows, :, first:length].copy()
        state.indirection[:batch, :, : length - first] = state.indirection[:batch, :, first:length].copy()
        np.maximum(state.start[:batch] - first, 0, out=state.start[:batch])
        state.past_length[0] = length - first
        state.bound = None

    def grow(self, state: DecodeState, sentences: int | None = None, source: int | None = None,
             capacity: int | None = None) -> None:
        """Larger buffers for more sentences, longer sources or more slots, keeping what is there."""
        sentences, source, capacity = (sentences or state.allocated, source or state.source_mask.shape[1],
                                        capacity or state.capacity)
        batch, width, length = state.sentences, state.beam_width, state.length
        self.to_host(state)

        def moved(old: np.ndarray, shape: tuple[int, ...], used: tuple[slice, ...]) -> np.ndarray:
            new = lazy_zeros(shape, old.dtype)
            new[used] = old[used]
            return new

        rows = slice(0, batch * width)
        state.caches = [moved(c, (sentences * width, self.heads, capacity, self.head_dim), (rows, slice(None), slice(0, length)))
                        for c in state.caches]
        state.cross = [moved(c, (sentences, self.heads, source, self.head_dim), (slice(0, batch), slice(None), slice(0, c.shape[2])))
                       for c in state.cross]
        state.source_mask = moved(state.source_mask, (sentences, source), (slice(0, batch), slice(0, state.source_mask.shape[1])))
        state.indirection = moved(state.indirection, (sentences, width, capacity), (slice(0, batch), slice(None), slice(0, length)))
        state.start = moved(state.start, (sentences,), (slice(0, batch),))
        state.buffers, state.bound = None, None

    @staticmethod
    def step_inputs(state: DecodeState) -> dict[str, np.ndarray]:
        """The inputs whose values change at every step (in place, in the buffers bound)."""
        rows = state.rows
        return {"input_ids": state.buffers.tokens[:rows], "positions": state.buffers.positions[:rows],
                "past_length": state.past_length, "cache_indirection": state.indirection[: state.sentences]}

    def to_host(self, state: DecodeState) -> None:
        """On a GPU: copy the caches back into host arrays before rows move (they are uploaded at the next bind)."""
        if state.device_caches is not None:
            state.caches = [key_layout(value.numpy(), to_device=False) if self.tiled_key(name) else value.numpy().copy()
                            for name, value in zip(self.cache_inputs, state.device_caches)]  # never a view of ORT's memory
            state.fresh_caches = False
            state.device_caches, state.bound = None, None

    # --- binding -------------------------------------------------------------------------------
    def bind(self, state: DecodeState, k: int) -> ort.IOBinding:
        """(Re)bind everything but the attention mask when the batch changed shape since the last step."""
        if state.bound == (state.rows, k):
            return state.binding
        if state.buffers is None or state.k != k:
            state.buffers = RowBuffers.allocate(state.allocated * state.beam_width, state.capacity, k)
            state.k = k
        binding = state.binding = state.binding or self.decoder.io_binding()
        rows, batch, buffers = state.rows, state.sentences, state.buffers
        # Outputs first: `get_outputs` would list them in the order first bound.
        for name, buffer in zip(CANDIDATE_OUTPUTS, (buffers.log_probs, buffers.ids, buffers.eos)):
            binding.bind_ortvalue_output(name, as_ortvalue(buffer[:rows]))
        if self.device is None:
            for input_name, output_name, cache in zip(self.cache_inputs, self.cache_outputs, state.caches):
                value = as_ortvalue(cache[:rows])  # a prefix of a C-contiguous array is contiguous
                binding.bind_ortvalue_input(input_name, value)
                binding.bind_ortvalue_output(output_name, value)
        else:
            self.bind_on_device(state, binding)
        # A binding does not keep its arrays alive: every array bound here is held by the state.
        state.settings = (np.array([state.beam_width], np.int32), np.array([k], np.int64),
                          np.array([batch, state.beam_width, self.heads * self.head_dim], np.int64))
        inputs = {**self.step_inputs(state),
                  "beam_width": state.settings[0], "top_k": state.settings[1], "query_shape": state.settings[2],
                  "source_mask": state.source_mask[:batch],
                  **{name: cross[:batch] for name, cross in zip(self.cross_names, state.cross)}}
        if self.device is not None:  # the cross keys/values are read at every step: uploaded once here
            state.device_cross = [self.upload(cross[:batch]) for cross in state.cross]
            for name, value in zip(self.cross_names, state.device_cross):
                binding.bind_ortvalue_input(name, value)
                del inputs[name]
        for name, array in inputs.items():
            bind_host_input(binding, name, array)
        starts = state.start[:batch]
        state.row_start = np.repeat(starts, state.beam_width) if starts.any() else None
        if state.row_start is None:  # steps then leave the mask alone: clear what rows that joined later wrote there
            buffers.attention_mask.fill(1)
        state.bound = (rows, k)
        return binding

    def bind_on_device(self, state: DecodeState, binding: ort.IOBinding) -> None:
        """Bind the first `rows` rows of each device cache (a prefix of a contiguous buffer) as the past input and
        the present output at the same address, uploading the caches first if they are on the host."""
        if state.device_caches is None:
            state.device_caches = [self.upload(key_layout(cache, to_device=True) if self.tiled_key(name) and not state.fresh_caches
                                               else cache) for name, cache in zip(self.cache_inputs, state.caches)]
        device_type, device_id = self.device
        shape = [state.rows, self.heads, state.capacity, self.head_dim]
        for input_name, output_name, value in zip(self.cache_inputs, self.cache_outputs, state.device_caches):
            binding.bind_input(input_name, device_type, device_id, np.float32, shape, value.data_ptr())
            binding.bind_output(output_name, device_type, device_id, np.float32, shape, value.data_ptr())

    def upload(self, array: np.ndarray) -> ort.OrtValue:
        """A copy of the array in a buffer of its own on `device` (never shared with the host array)."""
        value = ort.OrtValue.ortvalue_from_shape_and_type(array.shape, array.dtype, *self.device)
        value.update_inplace(np.ascontiguousarray(array))
        return value

    def tiled_key(self, cache_name: str) -> bool:
        """Whether this cache is a key cache in the CUDA kernel's tiled layout."""
        return self.device is not None and self.device[0] == "cuda" and cache_name.startswith("key")
