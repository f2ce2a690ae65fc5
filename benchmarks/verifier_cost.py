"""What the likelihood verifier costs next to the samples it judges, on the embedded model.

For each question: one request of n samples (batched, as live allocation draws them), then the
verifier scores the distinct answers they gave (on the prompt the samples just cached, as in a
live run), and, for comparison, the same scoring on a cold prompt (as `bank score` does, one
question after another). Both timings come from the same run on the same machine; the ratio is
the verifier's time over the samples' time.

    python benchmarks/verifier_cost.py [--questions 30] [--n 4]

Prints a table and, as the last stdout line, one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from budgetflow.answers.extract import extract_answer
from budgetflow.backends.embedded import EmbeddedBackend
from budgetflow.evaluate.datasets import load_dataset
from budgetflow.strategies.verifiers import likelihood_scores
from budgetflow.types import Message, Request, SamplingParams


async def _measure(questions: int, n: int) -> dict[str, float]:
    dataset = load_dataset("arith_mix", limit=questions, seed=0)
    sampling = SamplingParams(temperature=0.5, max_tokens=48, seed=0, stop=dataset.stop)
    sampled, warm, cold, candidates = [], [], [], []
    async with EmbeddedBackend() as backend:
        for question in dataset.questions:
            started = time.perf_counter()
            response = await backend.complete(Request(messages=question.messages, sampling=sampling, n=n))
            sampled.append(time.perf_counter() - started)
            answers = [a for a in (extract_answer(t) for t in response.texts) if a is not None]
            started = time.perf_counter()
            scores = await likelihood_scores(backend, dataset.statement, question, answers)
            warm.append(time.perf_counter() - started)
            candidates.append(len(scores))
            # a cold prompt: another prompt in between evicts this question's cached prefix
            await backend.complete(Request(messages=(Message("user", "Hello"),), sampling=sampling))
            started = time.perf_counter()
            await likelihood_scores(backend, dataset.statement, question, answers)
            cold.append(time.perf_counter() - started)
    return {
        "questions": questions,
        "samples_per_request": n,
        "seconds_per_request": statistics.fmean(sampled),
        "distinct_answers_per_question": statistics.fmean(candidates),
        "verifier_seconds_warm": statistics.fmean(warm),
        "verifier_seconds_cold": statistics.fmean(cold),
        "warm_over_samples": sum(warm) / sum(sampled),
        "cold_over_samples": sum(cold) / sum(sampled),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--n", type=int, default=4)
    args = parser.parse_args()
    result = asyncio.run(_measure(args.questions, args.n))
    print(f"| per question ({args.questions} arith_mix questions) | seconds |")
    print("|---|---|")
    print(f"| {args.n} samples, one batched request | {result['seconds_per_request']:.3f} |")
    print(f"| verifier, prompt cached by the samples | {result['verifier_seconds_warm']:.3f} |")
    print(f"| verifier, cold prompt | {result['verifier_seconds_cold']:.3f} |")
    print(
        f"distinct answers per question {result['distinct_answers_per_question']:.1f}; verifier / samples: "
        f"{result['warm_over_samples']:.0%} warm, {result['cold_over_samples']:.0%} cold"
    )
    print(json.dumps({k: round(v, 4) for k, v in result.items()}))


if __name__ == "__main__":
    main()
