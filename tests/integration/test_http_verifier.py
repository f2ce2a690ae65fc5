"""The likelihood verifier over HTTP, against a real llama.cpp server on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from budgetflow.backends.embedded import EmbeddedBackend
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.backends.wrappers.budgeted import Budgeted
from budgetflow.budget import Budget, Ledger
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.evaluate import load_dataset
from budgetflow.testing.llama_server import LlamaServer, start_llama_server, stop_llama_server
from budgetflow.types import Message, Request

pytestmark = pytest.mark.integration

#: The largest difference (nats) allowed between the server's score of a text and the embedded
#: model's. Measured on 60 texts (20 chain_sum questions x 3 candidates): median 0.15, p90 0.42,
#: max 0.98. Same GGUF file, but the server decodes in another batch layout (quantised matmuls
#: round differently) and tokenizes prompt and candidate together, so a token may straddle the
#: candidate's start; the embedded model tokenizes the candidate on its own.
TOLERANCE_NATS = 1.5
#: Where the embedded model's best candidate leads by this much, the server picks it too.
CLEAR_LEAD_NATS = 2 * TOLERANCE_NATS


@pytest.fixture(scope="module")
def scoring_server(llama_server: LlamaServer) -> LlamaServer:
    """The session's server: llama-cpp-python keeps every position's logits by default."""
    return llama_server


@pytest.fixture(scope="module")
def server_without_logits(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LlamaServer]:
    log = tmp_path_factory.mktemp("llama-no-logits") / "server.log"
    server = start_llama_server(model_path, log, context_tokens=256, logits_all=False)
    yield server
    stop_llama_server(server)


def _remote(server: LlamaServer) -> OpenAICompatibleBackend:
    return OpenAICompatibleBackend(base_url=server.base_url, model="smollm2", api_key="unused")


def test_http_scores_agree_with_the_embedded_models(scoring_server: LlamaServer) -> None:
    """Short prompts: llama-cpp-python's server sorts the whole vocabulary in Python for every
    echoed token (about 50 ms a token here), so a few-shot prompt takes seconds to score."""
    dataset = load_dataset("chain_sum", limit=4, seed=11)

    async def scores() -> list[tuple[list[float], list[float]]]:
        pairs = []
        async with EmbeddedBackend(threads=1, batching="serial") as local, _remote(scoring_server) as remote:
            for question in dataset.questions:
                messages = (Message("user", f"What is {question.text}?"),)
                request = Request(messages=messages, prefill=f"{question.text} =")
                texts = dataset.statement.texts([question.gold, "7", "12"])
                local_scores = await local.score_continuations(request, texts)
                pairs.append((local_scores, await remote.score_continuations(request, texts)))
        return pairs

    for local, remote in asyncio.run(scores()):
        assert max(abs(a - b) for a, b in zip(local, remote, strict=True)) <= TOLERANCE_NATS
        best, runner_up = sorted(local, reverse=True)[:2]
        if best - runner_up > CLEAR_LEAD_NATS:
            assert local.index(best) == remote.index(max(remote))  # the same candidate wins


def test_scoring_is_reserved_and_settled_to_what_the_server_reported(scoring_server: LlamaServer) -> None:
    request = Request.from_prompt("What is 2 + 3?")

    async def score(budget: Budget) -> tuple[list[float], Ledger]:
        ledger = Ledger(budget)
        async with _remote(scoring_server) as remote:
            scores = await Budgeted(remote, ledger).score_continuations(request, [" 5.", " 6."])
        return scores, ledger

    scores, ledger = asyncio.run(score(Budget(total_tokens=10_000)))
    assert len(scores) == 2 and scores.usage.prompt_tokens > 2 * 10  # type: ignore[attr-defined]
    reported = scores.usage  # type: ignore[attr-defined]
    assert ledger.spent.prompt_tokens == reported.prompt_tokens
    assert ledger.spent.completion_tokens == reported.completion_tokens
    assert ledger.reserved.prompt_tokens == 0 and ledger.reserved.calls == 0
    with pytest.raises(BudgetExceeded):  # two prompt copies do not fit: refused before sending
        asyncio.run(score(Budget(total_tokens=reported.prompt_tokens // 2)))


def test_a_server_that_cannot_score_says_so(server_without_logits: LlamaServer) -> None:
    async def score() -> list[float]:
        async with _remote(server_without_logits) as remote:  # started with --logits_all False
            return await remote.score_continuations(Request.from_prompt("2 + 3"), [" 5."])

    with pytest.raises(ConfigError, match="cannot score text.*logits_all"):
        asyncio.run(score())
