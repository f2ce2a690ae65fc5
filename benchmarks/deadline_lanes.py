"""The deadline planner live on two real backends: the embedded model and llama.cpp's server.

Starts llama.cpp's OpenAI-compatible server on 127.0.0.1 (same model file as the embedded
backend, its own chat template), then answers the same `arith_mix` questions under one sample
budget and one wall-clock deadline three ways: embedded only, server only, both (the planner
picks backend, question and batch size for every draw). Each backend gets one thread.

    python benchmarks/deadline_lanes.py [--questions 60] [--samples-per-question 4] [--deadline 30]

Prints a table and, as the last stdout line, one JSON object keyed by run with accuracy,
samples, samples per backend and wall seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

from budgetflow.allocate import make_allocator
from budgetflow.backends.base import Backend
from budgetflow.backends.embedded import EmbeddedBackend, default_model_path
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.evaluate.allocated_lanes import run_planned
from budgetflow.evaluate.datasets import Dataset, load_dataset
from budgetflow.testing.llama_server import start_llama_server, stop_llama_server
from budgetflow.types import Request, Response, SamplingParams


class _Counted(Wrapper):
    """Counts the samples a backend was asked for (the planner's choice of backend)."""

    def __init__(self, inner: Backend) -> None:
        super().__init__(inner)
        self.samples = 0

    async def complete(self, request: Request) -> Response:
        self.samples += request.n
        return await self.inner.complete(request)

    async def aclose(self) -> None:  # the benchmark closes the real backends itself
        return None


async def _run(dataset: Dataset, backends: list[Backend], samples: int, deadline: float) -> dict[str, object]:
    counted = [_Counted(b) for b in backends]
    report = await run_planned(
        dataset,
        list(counted),
        make_allocator("deadline", use_greedy=True, confidence_weight=10.0),
        budget_samples=samples,
        deadline_seconds=deadline,
        sampling=SamplingParams(seed=0, max_tokens=48),
    )
    return {
        "accuracy": round(report.accuracy, 4),
        "samples": sum(r.samples for r in report.results),
        "by_backend": {c.name: c.samples for c in counted},
        "wall_seconds": round(report.wall_seconds, 1),
    }


async def _main(args: argparse.Namespace, base_url: str) -> dict[str, dict[str, object]]:
    dataset = load_dataset("arith_mix", limit=args.questions, seed=0)
    samples = args.samples_per_question * args.questions
    results: dict[str, dict[str, object]] = {}
    async with (
        EmbeddedBackend(threads=1) as embedded,
        OpenAICompatibleBackend(base_url=base_url, model="smollm2", api_key="unused", timeout=120) as server,
    ):
        for name, backends in (("embedded", [embedded]), ("server", [server]), ("both", [embedded, server])):
            results[name] = await _run(dataset, backends, samples, args.deadline)
            print(f"  {name}: {results[name]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--samples-per-question", type=int, default=4)
    parser.add_argument("--deadline", type=float, default=30.0)
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp(prefix="budgetflow-llama-")) / "server.log"
    server = start_llama_server(default_model_path(), log)
    try:
        results = asyncio.run(_main(args, server.base_url))
    finally:
        stop_llama_server(server)
    print("| run | accuracy | samples | samples per backend | wall s |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        cells = f"{row['accuracy']:.1%} | {row['samples']} | {row['by_backend']} | {row['wall_seconds']}"
        print(f"| {name} | {cells} |")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
