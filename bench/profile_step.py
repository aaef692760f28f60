"""Where one decoder step spends its time: ONNX Runtime's profiler over a package's decoder graph.

    python -m bench.profile_step --package models/en-de --batch 32 --src-len 30 --past-len 20

Feeds the decoder random caches of the given shape (the time of a step does not depend on their
values), runs it `--steps` times and prints the time per step by operator type and the slowest nodes.
Profiling adds a little overhead per node; compare shares, not absolute times, with the benchmark.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engine.package import load_package


def decoder_feeds(manifest, batch: int, src_len: int, past_len: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    dims = manifest.model
    feeds = {
        "input_ids": rng.integers(4, dims.vocab_size, (batch, 1)),
        "source_padding_mask": np.zeros((batch, src_len), dtype=bool),
    }
    for name in manifest.graphs.decoder.inputs[2:]:
        length = src_len if name.startswith("cross_") else past_len
        feeds[name] = rng.standard_normal((batch, dims.n_heads, length, dims.head_dim), dtype=np.float32)
    return feeds


def profile(package: Path, batch: int, src_len: int, past_len: int, steps: int, threads: int) -> dict:
    manifest = load_package(package)
    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(scratch) / "step")
        session = ort.InferenceSession(str(package / manifest.graphs.decoder.file), options, providers=["CPUExecutionProvider"])
        feeds = decoder_feeds(manifest, batch, src_len, past_len)
        session.run(None, feeds)  # first run: allocations, not steady state
        for _ in range(steps):
            session.run(None, feeds)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    by_type, by_node = collections.Counter(), collections.Counter()
    for event in kernels:
        by_type[event["args"]["op_name"]] += event["dur"]
        by_node[event["name"].removesuffix("_kernel_time")] += event["dur"]
    runs = steps + 1
    total = sum(by_type.values()) / runs
    return {
        "package": str(package), "precision": manifest.precision, "batch": batch, "src_len": src_len,
        "past_len": past_len, "threads": threads, "kernel_us_per_step": round(total, 1),
        "by_op_type": [{"op": op, "us": round(us / runs, 1), "share": round(us / runs / total, 3)} for op, us in by_type.most_common()],
        "slowest_nodes": [{"node": node, "us": round(us / runs, 1)} for node, us in by_node.most_common(8)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=Path("models/en-de"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--src-len", type=int, default=30)
    parser.add_argument("--past-len", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the profile here")
    args = parser.parse_args(argv)
    result = profile(args.package, args.batch, args.src_len, args.past_len, args.steps, args.threads)
    print(f"{result['precision']} decoder step, batch {args.batch}, source {args.src_len}, past {args.past_len}, "
          f"{args.threads} thread(s): {result['kernel_us_per_step'] / 1000:.2f} ms in kernels")
    for row in result["by_op_type"][:12]:
        print(f"  {row['op']:26s} {row['us']:9.1f} us  {100 * row['share']:5.1f}%")
    print("slowest nodes:")
    for row in result["slowest_nodes"]:
        print(f"  {row['node']:50s} {row['us']:9.1f} us")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
