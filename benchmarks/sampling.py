"""Batched vs sequential sampling on the embedded model.

Decodes `n` samples of one prompt twice in the same run: one request at a time (n=1, each paying
its own prompt evaluation, as a caller without batching would) and as one request with n samples
decoded in a single batch that shares the prompt's KV cache. Both use the same seeds and
max_tokens; throughput is completion tokens / wall seconds, prompt evaluation included.
The order alternates over --rounds and medians are reported.

    python benchmarks/sampling.py [--n 8] [--max-tokens 128] [--rounds 3] [--threads N]

A benchmark runs alone, so it uses every usable CPU by default; the library's own default is
more careful (1 thread on machines with <= 2 CPUs, see `default_threads`), and `--threads 1`
measures that setting.

Last stdout line: {"sequential_tok_s": …, "batched_tok_s": …, "speedup": …, "n": 8}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

from budgetflow.backends.embedded import EmbeddedBackend
from budgetflow.types import Request, SamplingParams

PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


async def _sequential(backend: EmbeddedBackend, n: int, max_tokens: int, seed: int) -> tuple[int, float]:
    started, tokens = time.perf_counter(), 0
    for index in range(n):
        params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=seed + index)
        response = await backend.complete(Request.from_prompt(PROMPT, sampling=params, n=1))
        tokens += response.usage.completion_tokens
    return tokens, time.perf_counter() - started


async def _batched(backend: EmbeddedBackend, n: int, max_tokens: int, seed: int) -> tuple[int, float]:
    started = time.perf_counter()
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=max_tokens, seed=seed)
    response = await backend.complete(Request.from_prompt(PROMPT, sampling=params, n=n))
    return response.usage.completion_tokens, time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    args = parser.parse_args()
    backend = EmbeddedBackend(threads=args.threads, max_sequences=max(16, args.n))
    await _batched(backend, 2, 8, seed=0)  # load the model and warm the caches
    sequential: list[float] = []
    batched: list[float] = []
    for round_index in range(args.rounds):
        order = [_sequential, _batched] if round_index % 2 == 0 else [_batched, _sequential]
        for run in order:
            tokens, seconds = await run(backend, args.n, args.max_tokens, 100 * round_index)
            (sequential if run is _sequential else batched).append(tokens / seconds)
            print(
                f"round {round_index} {run.__name__.strip('_'):>10}: {tokens} tokens in {seconds:.2f} s "
                f"= {tokens / seconds:.1f} tok/s"
            )
    await backend.aclose()
    seq, bat = statistics.median(sequential), statistics.median(batched)
    print(
        f"\n| mode       | tok/s (median of {args.rounds}) |\n|------------|------|\n"
        f"| sequential | {seq:.1f} |\n| batched    | {bat:.1f} |\n| speedup    | {bat / seq:.2f}x |"
    )
    print(
        json.dumps(
            {
                "sequential_tok_s": round(seq, 1),
                "batched_tok_s": round(bat, 1),
                "speedup": round(bat / seq, 2),
                "n": args.n,
                "threads": backend.threads,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
