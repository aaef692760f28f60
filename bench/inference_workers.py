"""Do copies of a model in threads of one process add throughput? What TRANSLATOR_INFERENCE_WORKERS rests on.

    python -m bench.inference_workers --package models/en-de --workers 1,2 --batch-size 8,32

For each worker count N: N Translators of the package (Translator.copy, one ONNX Runtime thread each) in N
threads take length-sorted batches of the first --limit test sentences from one queue, as the service's batch
scheduler hands its batches to idle workers; target tokens/s over the wall time, the best of --repeats
passes, greedy and beam 4. No HTTP: the engine side of the service alone. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import queue
import threading
import time
from pathlib import Path

from bench.engines import package_test_set, table
from engine.search import length_sorted_batches
from engine.sessions import RuntimeOptions
from engine.translator import Translator


def tokens_per_second(workers: list[Translator], batches: list[list[list[int]]], beam_size: int) -> float:
    """All batches through `workers`, each taking the next batch from a shared queue when it is free."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for batch in batches:
        todo.put(batch)
    generated = [0] * len(workers)

    def work(index: int) -> None:
        translator = workers[index]
        options = translator.search_options(beam_size)
        while True:
            try:
                batch = todo.get_nowait()
            except queue.Empty:
                return
            results = translator.translate_ids(batch, options)
            generated[index] += sum(len(r.hypotheses[0].tokens) for r in results)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(workers))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(generated) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    numbers = lambda text: [int(v) for v in text.split(",")]  # noqa: E731
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--package", type=Path, default=Path("models/en-de"))
    p.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"))
    p.add_argument("--limit", type=int, default=256)
    p.add_argument("--workers", type=numbers, default=[1, 2])
    p.add_argument("--batch-size", type=numbers, default=[8, 32])
    p.add_argument("--beam", type=numbers, default=[1, 4])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("results/inference_workers.json"))
    args = p.parse_args(argv)

    first = Translator(args.package, RuntimeOptions(intra_op_threads=1))
    translators = [first] + [first.copy() for _ in range(max(args.workers) - 1)]
    for translator in translators:
        translator.warmup()
    sources, _ = package_test_set(args.data, args.package, args.limit)
    rows = []
    for batch_size in args.batch_size:
        batches = [[sources[i] for i in batch] for batch in length_sorted_batches(sources, batch_size)]
        for beam in args.beam:
            for count in args.workers:
                rate = max(tokens_per_second(translators[:count], batches, beam) for _ in range(args.repeats))
                rows.append({"workers": count, "batch_size": batch_size, "search": "greedy" if beam == 1 else f"beam{beam}",
                             "tokens_per_second": round(rate, 1)})
                print(table(rows[-1:], list(rows[-1])), flush=True)
    text = f"{len(sources)} sentences of {args.data}, {first.name} ({first.precision}), one ONNX Runtime thread per worker\n\n"
    text += table(rows, ["workers", "batch_size", "search", "tokens_per_second"])
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"package": str(args.package), "sentences": len(sources), "rows": rows}, indent=2) + "\n")
    args.out.with_suffix(".txt").write_text(text + "\n")
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
