"""The schedulers' decoding on one core, without HTTP: closed-loop clients against one copy of a package.

    python -m bench.closed_loop --package models/en-de --clients 16 --beam 1 --seconds 8

Each client has one sentence in flight (the first `--limit` test sentences in turn) and sends its next one the moment
its answer comes, as wrk's connections do. Three ways of decoding what the clients send, each for `--seconds`:

- `batch, one bucket`: a batch of everything waiting runs until its longest sentence ends; the clients answered
  meanwhile wait for the next batch;
- `batch, length buckets`: the batch scheduler (service/batcher.py): waiting sentences are grouped by source length
  (`--length-buckets`, the service's default edges) and the group holding the oldest sentence runs;
- `continuous`: one running batch (engine.search.Decoding) that a client's next sentence joins at the next decoder
  step (service/continuous.py).

What differs is only how sentences share decoder steps: no event loop, no sockets, one process. Run it pinned to one
core (`taskset -c 0`); the service's figures under load are bench.http_load's.
"""

from __future__ import annotations

import argparse
import bisect
import json
import time
from collections.abc import Callable
from pathlib import Path

from engine.search import SearchOptions
from engine.sessions import RuntimeOptions
from engine.translator import Translator


class Clients:
    """`count` clients sending the sentences of `corpus` in turn; `arrivals` holds what they sent, oldest first."""

    def __init__(self, corpus: list[list[int]], count: int):
        self.corpus, self.sent, self.answers, self.tokens = corpus, 0, 0, 0
        self.arrivals: list[tuple[int, list[int]]] = []
        self.send(count)

    def send(self, count: int) -> None:
        for _ in range(count):
            self.arrivals.append((self.sent, self.corpus[self.sent % len(self.corpus)]))
            self.sent += 1

    def answered(self, generated: int, count: int) -> None:
        """`count` sentences answered with `generated` target tokens: their clients send their next ones."""
        self.answers += count
        self.tokens += generated
        self.send(count)


def run_for(seconds: float, clients: Clients, one_round: Callable[[], None]) -> float:
    """Target tokens per second while `one_round` is called over and over for `seconds`."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        one_round()
    return clients.tokens / (time.perf_counter() - started)


def batches(model: Translator, options: SearchOptions, clients: Clients, edges: tuple[int, ...]) -> Callable[[], None]:
    def one_batch() -> None:
        bucket_of = {order: bisect.bisect_left(edges, len(ids)) for order, ids in clients.arrivals}
        oldest = bucket_of[clients.arrivals[0][0]]
        batch = [(order, ids) for order, ids in clients.arrivals if bucket_of[order] == oldest]
        clients.arrivals = [arrival for arrival in clients.arrivals if bucket_of[arrival[0]] != oldest]
        results = model.translate_ids([ids for _, ids in batch], options)
        clients.answered(sum(len(r.hypotheses[0].tokens) for r in results), len(batch))
    return one_batch


def continuous(model: Translator, options: SearchOptions, clients: Clients) -> Callable[[], None]:
    decoding = model.decoding(options)

    def one_step() -> None:
        if clients.arrivals:
            model.join(decoding, [ids for _, ids in clients.arrivals], [order for order, _ in clients.arrivals])
            clients.arrivals = []
        ended = decoding.step()
        clients.answered(sum(len(result.hypotheses[0].tokens) for _, result in ended), len(ended))
    return one_step


def main(argv: list[str] | None = None) -> None:
    from bench.engines import package_test_set, table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--package", type=Path, default=Path("models/en-de"))
    parser.add_argument("--data", type=Path, default=Path("data/en-de/test.tsv"))
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--clients", type=int, default=16, help="sentences in flight (wrk's 32 connections over 2 workers: 16)")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=8.0, help="per way of decoding")
    parser.add_argument("--length-buckets", default="16,32,64,128")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="write the figures as JSON")
    args = parser.parse_args(argv)
    corpus, _ = package_test_set(args.data, args.package, args.limit)
    model = Translator(args.package, RuntimeOptions(intra_op_threads=args.threads))
    options = model.search_options(args.beam)
    edges = tuple(int(edge) for edge in args.length_buckets.split(","))
    ways = {
        "batch, one bucket": lambda clients: batches(model, options, clients, ()),
        "batch, length buckets": lambda clients: batches(model, options, clients, edges),
        "continuous": lambda clients: continuous(model, options, clients),
    }
    rows = []
    for way, make in ways.items():
        clients = Clients(corpus, args.clients)
        rows.append({"decoding": way, "tokens_per_second": round(run_for(args.seconds, clients, make(clients)))})
    print(f"{args.clients} clients, {'greedy' if args.beam == 1 else f'beam {args.beam}'}, {args.seconds:g} s each, "
          f"{args.threads} thread(s)")
    print(table(rows, ["decoding", "tokens_per_second"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"package": str(args.package), "clients": args.clients, "beam": args.beam,
                                        "seconds": args.seconds, "threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
