"""A whole evaluation against a misbehaving endpoint (429 with Retry-After, 500s, timeouts,
truncated JSON, dropped connections) finishes with correct answers and a balanced ledger."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.budget import Budget
from budgetflow.evaluate import load_jsonl
from budgetflow.evaluate.runner import evaluate
from budgetflow.events import EventLog, EventStream, RequestFinished, RetryScheduled
from budgetflow.runtime.context import EndpointLimits, RetryPolicy
from budgetflow.strategies import Vote
from budgetflow.testing import Fault, StubOpenAIServer
from budgetflow.types import SamplingParams


def _solve(payload: dict[str, Any], index: int) -> str:
    question = payload["messages"][-1]["content"].split("Problem:")[-1]
    left, right = (int(part) for part in question.strip().split("+"))
    return f"{left} + {right} = {left + right}. Answer: {left + right}"


def test_faulty_endpoint_run_finishes_correct_and_balanced(tmp_path: Path) -> None:
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(f'{{"question": "{i} + {i + 1}", "answer": {2 * i + 1}}}\n' for i in range(12)))
    dataset = load_jsonl(data)
    faults = [
        Fault(status=429, retry_after="0.05"),
        Fault(status=500),
        Fault(delay=4.0),  # longer than the client's timeout
        Fault(truncate=True),
        Fault(status=503),
        Fault(drop_connection=True),
        Fault(status=502),
    ]

    async def body() -> tuple[Any, StubOpenAIServer, EventLog]:
        stream = EventStream()
        log = EventLog(stream)
        async with StubOpenAIServer(reply=_solve) as server:
            server.inject(*faults)
            backend = OpenAICompatibleBackend(
                base_url=server.base_url, model="stub", api_key="k", timeout=2.0
            )
            async with backend:
                report = await evaluate(
                    dataset,
                    Vote(n=3),
                    backend,
                    sampling=SamplingParams(max_tokens=32, seed=1),
                    concurrency=4,
                    budget=Budget(total_tokens=100_000),
                    events=stream,
                    limits=EndpointLimits(retry=RetryPolicy(max_attempts=5, base_delay=0.01, max_delay=0.05)),
                )
            return report, server, log

    report, server, log = asyncio.run(body())
    assert report.accuracy == 1.0
    assert report.reserved_at_end.total_tokens == 0 and report.reserved_at_end.calls == 0
    finished = log.of_type(RequestFinished)
    assert report.spent.prompt_tokens == sum(e.usage.prompt_tokens for e in finished)  # type: ignore[attr-defined]
    assert report.spent.completion_tokens == sum(e.usage.completion_tokens for e in finished)  # type: ignore[attr-defined]
    # the server also finished the reply the client had stopped waiting for (the timeout fault):
    # that one reply is the only spend the client could not see
    unseen_prompt = server.served_prompt_tokens - report.spent.prompt_tokens
    unseen_completion = server.served_completion_tokens - report.spent.completion_tokens
    assert 0 < unseen_prompt <= report.spent.prompt_tokens // 12 + 5
    assert 0 < unseen_completion <= 3 * 8
    assert len(log.of_type(RetryScheduled)) == len(faults)
    delays = [e.delay for e in log.of_type(RetryScheduled) if e.reason == "RateLimited"]  # type: ignore[attr-defined]
    assert delays == [0.05]
