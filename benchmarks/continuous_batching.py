"""Continuous batching vs one request at a time, on the embedded model (its default threads).

The same eval runs through two embedded backends in one process — ``batching="serial"`` (each
request decodes alone, its `n` samples in one batch) and ``batching="continuous"`` (the live
samples of every request in flight share each decode step) — interleaved A B A B over --rounds
rounds, for two workloads on the built-in questions: `single` at concurrency 16 and `vote@4` at
concurrency 8 (temperature 0.5, max_tokens 48, seed 0: the CLI's defaults). Each run goes through
`evaluate`, the path `budgetflow eval` takes. Medians over rounds; speedup = serial wall time /
batched wall time. `identical_share` is the share of completions (matched by question, step and
sample) whose text is the same on both paths in the first round.

    python benchmarks/continuous_batching.py [--questions 64] [--rounds 3]

Last stdout line: {"single_speedup": …, "vote_speedup": …, "batched_tok_s": …, "serial_tok_s": …,
"identical_share": …, …} (tok/s: generated tokens per second, both workloads, medians).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
from dataclasses import dataclass, field

from budgetflow.backends.embedded import EmbeddedBackend
from budgetflow.evaluate.datasets import Dataset, load_dataset
from budgetflow.evaluate.runner import evaluate
from budgetflow.events import Event, EventStream, UnitCompleted
from budgetflow.strategies.parse import parse_strategy
from budgetflow.types import Request, SamplingParams

WORKLOADS = (("single", 16), ("vote@4", 8))
MODES = ("serial", "continuous")


@dataclass
class Measured:
    seconds: list[float] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    texts: dict[tuple[str, int, int], str] = field(default_factory=dict)


async def run_once(backend: EmbeddedBackend, dataset: Dataset, spec: str, concurrency: int) -> tuple:
    texts: dict[tuple[str, int, int], str] = {}

    def keep(event: Event) -> None:
        if isinstance(event, UnitCompleted):
            for index, text in enumerate(event.texts):
                texts[(event.unit_id, event.step, index)] = text

    events = EventStream()
    events.subscribe(keep)
    report = await evaluate(
        dataset,
        parse_strategy(spec, temperature=0.5),
        backend,
        sampling=SamplingParams(max_tokens=48, seed=0),
        concurrency=concurrency,
        events=events,
    )
    return report.wall_seconds, report.completion_tokens, report.accuracy, texts


async def main(args: argparse.Namespace) -> None:
    dataset = load_dataset("chain_sum", limit=args.questions)
    backends = {mode: EmbeddedBackend(batching=mode) for mode in MODES}  # type: ignore[arg-type]
    warm = Request.from_prompt("Hi", sampling=SamplingParams(max_tokens=4))
    for backend in backends.values():
        await backend.complete(warm)
    results = {(spec, mode): Measured() for spec, _ in WORKLOADS for mode in MODES}
    for round_index in range(args.rounds):
        for spec, concurrency in WORKLOADS:
            order = MODES if round_index % 2 == 0 else MODES[::-1]
            for mode in order:
                seconds, tokens, accuracy, texts = await run_once(backends[mode], dataset, spec, concurrency)
                measured = results[(spec, mode)]
                measured.seconds.append(seconds)
                measured.tokens.append(tokens)
                measured.accuracy.append(accuracy)
                if round_index == 0:
                    measured.texts = texts
                print(
                    f"round {round_index} {spec:>7} c={concurrency:<2} {mode:>10}: {seconds:6.1f} s "
                    f"{tokens / seconds:6.1f} tok/s accuracy {accuracy:.0%}",
                    flush=True,
                )
    stats = backends["continuous"].scheduler_stats
    for backend in backends.values():
        await backend.aclose()
    report(results, stats, args)


def report(results: dict[tuple[str, str], Measured], stats: object, args: argparse.Namespace) -> None:
    median = statistics.median
    print("\n| workload | path | wall s (median) | tok/s | accuracy |\n|---|---|---|---|---|")
    for (spec, mode), measured in results.items():
        rate = median(t / s for t, s in zip(measured.tokens, measured.seconds, strict=True))
        accuracy = median(measured.accuracy)
        print(f"| {spec} | {mode} | {median(measured.seconds):.1f} | {rate:.1f} | {accuracy:.1%} |")
    speedup = {
        spec: median(results[(spec, "serial")].seconds) / median(results[(spec, "continuous")].seconds)
        for spec, _ in WORKLOADS
    }
    rates = {
        mode: median(
            sum(results[(spec, mode)].tokens[r] for spec, _ in WORKLOADS)
            / sum(results[(spec, mode)].seconds[r] for spec, _ in WORKLOADS)
            for r in range(args.rounds)
        )
        for mode in MODES
    }
    pairs = same = 0
    for spec, _ in WORKLOADS:
        serial, batched = results[(spec, "serial")].texts, results[(spec, "continuous")].texts
        for key, text in serial.items():
            pairs += 1
            same += batched.get(key) == text
    share = same / pairs if pairs else 0.0
    print(
        f"\nsingle speedup {speedup['single']:.2f}x, vote@4 speedup {speedup['vote@4']:.2f}x; "
        f"{share:.0%} of {pairs} completions identical on both paths; scheduler {stats}"
    )
    print(
        json.dumps(
            {
                "single_speedup": round(speedup["single"], 3),
                "vote_speedup": round(speedup["vote@4"], 3),
                "batched_tok_s": round(rates["continuous"], 1),
                "serial_tok_s": round(rates["serial"], 1),
                "identical_share": round(share, 3),
                "questions": args.questions,
                "rounds": args.rounds,
            }
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
