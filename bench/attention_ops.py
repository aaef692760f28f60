"""The decoder's attention operators alone, at a step's shapes: what each costs, and what the alternatives would.

    python -m bench.attention_ops --out results/attention_ops.json

A beam-4 batch-32 step spends about a fifth of its time in self-attention (profile: `bench.profile_step`)
and a twelfth in cross-attention. This times each operator as `export/decoder_graph.py` uses it, in a
one-node (or few-node) graph on one intra-op thread, with the caches bound in place as the engine binds them:

- self-attention, `com.microsoft.DecoderMaskedMultiHeadAttention` over a cache of `--capacity` slots
  through a cache-indirection table, at several history lengths: its cost per slot of history;
- the same at one beam (greedy search) with the cache-indirection input, as exported, and without it, which
  takes ONNX Runtime's CPU kernel down its other path (checked to agree);
- cross-attention, `com.microsoft.MultiHeadAttention` with the beams as the query axis, against the same
  computed with MatMul, Softmax and MatMul on keys stored transposed (what the graph could use instead).

Inputs are random; only the time is measured, after a check that both cross-attention forms, and both
self-attention paths, agree. `--kernels engine` times the engine's own attention kernels
(engine/kernels/attention.cc) in place of ONNX Runtime's, after checking that their self-attention outputs
agree with ONNX Runtime's on the same inputs.

    python -m bench.attention_ops --kernels engine --out results/attention_ops_engine.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from engine.sessions import attention_kernels_library
from export.graph_builder import FLOAT, INT32, INT64, MS_DOMAIN, OPSET


def int64s(name: str, values: list[int]) -> TensorProto:
    return helper.make_tensor(name, INT64, [len(values)], values)


def float_scalar(name: str, value: float) -> TensorProto:
    return helper.make_tensor(name, FLOAT, [], [value])


def session(nodes: list, inputs: list, outputs: list, initializers: tuple = (),
            engine_kernels: bool = False) -> ort.InferenceSession:
    """A session of these nodes as the export writes them (its opsets), on one thread; with `engine_kernels`, the
    engine's attention kernels run the attention nodes."""
    graph = helper.make_graph(nodes, "attention", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    if engine_kernels:
        library = attention_kernels_library()
        if library is None:
            raise SystemExit("the engine's attention kernels are not built (pip install needs a C++ compiler)")
        options.register_custom_ops_library(str(library))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def micros_per_run(run, repeats: int) -> float:
    run()  # first run: lazy initialisation
    best = float("inf")
    for _ in range(3):  # best of three rounds: the machines are noisy
        started = time.perf_counter()
        for _ in range(repeats):
            run()
        best = min(best, (time.perf_counter() - started) / repeats * 1e6)
    return best


def self_attention(batch: int, beams: int, heads: int, head_dim: int, capacity: int, history: int, repeats: int,
                   rng: np.random.Generator, indirection: bool = True,
                   engine_kernels: bool = False) -> tuple[float, np.ndarray]:
    """µs per DecoderMaskedMultiHeadAttention call: batch·beams rows, `history` slots written before this step;
    and the call's output. Without `indirection` (one beam only) the node has no cache-indirection input, which
    sends ONNX Runtime's CPU kernel down its other path (the one for decoding without beams)."""
    rows, width = batch * beams, heads * head_dim
    vi = helper.make_tensor_value_info
    table = ["indirection"] if indirection else []
    node = helper.make_node("DecoderMaskedMultiHeadAttention",
                            ["q", "k", "v", "mask", "", "key_cache", "value_cache", "past_length", "beam_width",
                             *table],
                            ["out", "key_cache_out", "value_cache_out"], domain=MS_DOMAIN, num_heads=heads,
                            past_present_share_buffer=1, scale=float(1 / np.sqrt(head_dim)))
    cache = [rows, heads, capacity, head_dim]
    sess = session([node], [vi(n, FLOAT, [rows, 1, width]) for n in "qkv"] + [
        vi("mask", INT32, [rows, history + 1]), vi("key_cache", FLOAT, cache), vi("value_cache", FLOAT, cache),
        vi("past_length", INT32, [1]), vi("beam_width", INT32, [1]),
        *[vi(n, INT32, [batch, beams, capacity]) for n in table]],
        [vi("out", FLOAT, [rows, 1, width]), vi("key_cache_out", FLOAT, cache), vi("value_cache_out", FLOAT, cache)],
        engine_kernels=engine_kernels)
    binding = sess.io_binding()
    # A binding does not keep its arrays alive: they stay in `held` while the session runs.
    held = {n: rng.standard_normal((rows, 1, width), dtype=np.float32) for n in "qkv"} | {
        "mask": np.ones((rows, history + 1), np.int32), "past_length": np.array([history], np.int32),
        "beam_width": np.array([beams], np.int32)}
    caches = {name: ort.OrtValue.ortvalue_from_numpy(rng.standard_normal(cache, dtype=np.float32))
              for name in ("key_cache", "value_cache")}  # drawn before the table: the same seed, the same caches
    if indirection:
        held["indirection"] = rng.integers(0, beams, (batch, beams, capacity)).astype(np.int32)
    for name, array in held.items():
        binding.bind_cpu_input(name, array)
    for name, value in caches.items():  # bound as input and output at once, as the engine binds them
        held[name] = value
        binding.bind_ortvalue_input(name, value)
        binding.bind_ortvalue_output(name + "_out", value)
    binding.bind_output("out")
    sess.run_with_iobinding(binding)  # the slot `history` is written now; later runs write the same values again
    output = binding.copy_outputs_to_cpu()[0].copy()
    return micros_per_run(lambda: sess.run_with_iobinding(binding), repeats), output


def greedy_self_attention(batch: int, heads: int, head_dim: int, capacity: int, history: int, repeats: int,
                          seed: int, engine_kernels: bool = False) -> dict[str, float]:
    """One beam: µs per call with the cache-indirection input (what the exported graph has) and without it, on the
    same inputs; raises if the two paths' outputs differ."""
    shape = dict(batch=batch, beams=1, heads=heads, head_dim=head_dim, capacity=capacity, history=history,
                 repeats=repeats, engine_kernels=engine_kernels)
    with_table, out_with = self_attention(**shape, rng=np.random.default_rng(seed))
    without, out_without = self_attention(**shape, rng=np.random.default_rng(seed), indirection=False)
    difference = float(np.abs(out_with - out_without).max())
    if difference > 1e-4:
        raise AssertionError(f"the two self-attention paths disagree by {difference}")
    return {"history": history, "with_indirection_us": round(with_table, 1),
            "without_indirection_us": round(without, 1)}


def cross_attention(batch: int, beams: int, heads: int, head_dim: int, source: int, repeats: int,
                    rng: np.random.Generator, engine_kernels: bool = False) -> dict[str, float]:
    """µs per cross-attention: the MultiHeadAttention node against MatMul · Softmax · MatMul on transposed keys."""
    width, vi = heads * head_dim, helper.make_tensor_value_info
    query, mask = [batch, beams, width], [batch, source]
    operator = session([helper.make_node("MultiHeadAttention", ["query", "key", "value", "", "mask"], ["out"],
                                         domain=MS_DOMAIN, num_heads=heads, scale=float(1 / np.sqrt(head_dim)))],
                       [vi("query", FLOAT, query), vi("key", FLOAT, [batch, heads, source, head_dim]),
                        vi("value", FLOAT, [batch, heads, source, head_dim]), vi("mask", INT32, mask)],
                       [vi("out", FLOAT, query)], engine_kernels=engine_kernels)
    node = helper.make_node
    matmuls = session([
        node("Reshape", ["query", "by_head"], ["q4"]), node("Transpose", ["q4"], ["q"], perm=[0, 2, 1, 3]),  # [B, H, W, K]
        node("MatMul", ["q", "key_t"], ["scores"]), node("Mul", ["scores", "scale"], ["scaled"]),  # [B, H, W, S]
        node("Cast", ["mask"], ["mask_f"], to=FLOAT), node("Sub", ["mask_f", "one"], ["off"]),
        node("Mul", ["off", "large"], ["bias2"]), node("Unsqueeze", ["bias2", "axes12"], ["bias"]),  # [B, 1, 1, S]
        node("Add", ["scaled", "bias"], ["masked"]), node("Softmax", ["masked"], ["probs"], axis=-1),
        node("MatMul", ["probs", "value"], ["o4"]), node("Transpose", ["o4"], ["o"], perm=[0, 2, 1, 3]),
        node("Reshape", ["o", "by_row"], ["out"])],
        [vi("query", FLOAT, query), vi("key_t", FLOAT, [batch, heads, head_dim, source]),
         vi("value", FLOAT, [batch, heads, source, head_dim]), vi("mask", INT32, mask)], [vi("out", FLOAT, query)],
        (int64s("by_head", [batch, beams, heads, head_dim]), int64s("by_row", query), int64s("axes12", [1, 2]),
         float_scalar("one", 1.0), float_scalar("large", 1e4), float_scalar("scale", float(1 / np.sqrt(head_dim)))))
    q = rng.standard_normal(query, dtype=np.float32)
    key, value = (rng.standard_normal((batch, heads, source, head_dim), dtype=np.float32) for _ in range(2))
    padding = np.ones(mask, np.int32)
    padding[::3, source * 3 // 4:] = 0  # every third sentence shorter than the batch's longest
    by_operator = {"query": q, "key": key, "value": value, "mask": padding}
    by_matmul = {"query": q, "key_t": np.ascontiguousarray(key.transpose(0, 1, 3, 2)), "value": value, "mask": padding}
    difference = float(np.abs(operator.run(None, by_operator)[0] - matmuls.run(None, by_matmul)[0]).max())
    if difference > 1e-4:
        raise AssertionError(f"the two cross-attention forms disagree by {difference}")
    return {"multi_head_attention_us": micros_per_run(lambda: operator.run(None, by_operator), repeats),
            "matmul_softmax_matmul_us": micros_per_run(lambda: matmuls.run(None, by_matmul), repeats)}


def kernels_agree(shape: dict, seed: int) -> None:
    """Raise unless the engine's self-attention kernel gives ONNX Runtime's outputs on the same inputs."""
    ours = self_attention(**shape, rng=np.random.default_rng(seed), engine_kernels=True)[1]
    theirs = self_attention(**shape, rng=np.random.default_rng(seed))[1]
    difference = float(np.abs(ours - theirs).max())
    if difference > 1e-4:
        raise AssertionError(f"the engine's self-attention kernel and ONNX Runtime's disagree by {difference}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--beams", type=int, default=4)
    parser.add_argument("--heads", type=int, default=4, help="the shipped models' shape: 4 heads of 64")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--capacity", type=int, default=60, help="cache slots (a batch's output limit)")
    parser.add_argument("--histories", default="5,10,20,40", help="slots written before the step")
    parser.add_argument("--source", type=int, default=26, help="padded source tokens (cross-attention)")
    parser.add_argument("--repeats", type=int, default=300, help="runs per round (best of three rounds)")
    parser.add_argument("--kernels", choices=["onnxruntime", "engine"], default="onnxruntime",
                        help="whose attention kernels run the operators")
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    engine = args.kernels == "engine"
    shape = dict(batch=args.batch, beams=args.beams, heads=args.heads, head_dim=args.head_dim)
    histories = [int(h) for h in args.histories.split(",")]
    if engine:
        for h in histories:
            kernels_agree(shape | dict(capacity=args.capacity, history=h, repeats=1), seed=h)
    self_rows = [{"history": h, "us": round(self_attention(**shape, capacity=args.capacity, history=h,
                                                           repeats=args.repeats, rng=rng, engine_kernels=engine)[0], 1)}
                 for h in histories]
    greedy_rows = [greedy_self_attention(args.batch, args.heads, args.head_dim, args.capacity, h, args.repeats, seed=h,
                                         engine_kernels=engine) for h in histories]
    for row in self_rows:
        row["us_per_slot"] = round(row["us"] / (row["history"] + 1), 1)
    cross = {k: round(v, 1) for k, v in cross_attention(**shape, source=args.source, repeats=args.repeats, rng=rng,
                                                        engine_kernels=engine).items()}
    result = {"shape": shape | {"capacity": args.capacity, "source": args.source}, "threads": 1, "kernels": args.kernels,
              "onnxruntime": ort.__version__, "self_attention": self_rows, "greedy_self_attention": greedy_rows,
              "cross_attention": cross}
    print(f"batch {args.batch} × beam {args.beams}, {args.heads} heads of {args.head_dim}, one thread, {args.kernels}'s kernels")
    print("| history slots | DecoderMaskedMultiHeadAttention µs | µs per slot |\n|---|---|---|")
    for row in self_rows:
        print(f"| {row['history']} | {row['us']} | {row['us_per_slot']} |")
    print(f"one beam, batch {args.batch}: with the cache-indirection input (as exported) and without it (the kernel's "
          "other path)\n| history slots | with µs | without µs |\n|---|---|---|")
    for row in greedy_rows:
        print(f"| {row['history']} | {row['with_indirection_us']} | {row['without_indirection_us']} |")
    print(f"cross-attention over {args.source} source tokens: MultiHeadAttention {cross['multi_head_attention_us']} µs, "
          f"MatMul·Softmax·MatMul {cross['matmul_softmax_matmul_us']} µs")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
