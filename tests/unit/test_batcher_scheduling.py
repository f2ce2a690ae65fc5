"""The continuous-batching scheduler's bookkeeping, on a fake engine (no model): admission waits
for cells, batches split when the KV cache has no slot, shared prefixes are not decoded twice,
and a request cancelled while it waits fails without running."""

from __future__ import annotations

import threading
from concurrent.futures import wait

import numpy as np
import pytest

from budgetflow.backends.llama_batcher import ContinuousBatcher
from budgetflow.backends.llama_engine import DecodeCancelled
from budgetflow.types import SamplingParams

END = 0  # the fake's end-of-generation token
WORD = 1  # every other step the fake's logits favour this token (text "w")


class FakeEngine:
    """Decodes nothing; logits always favour WORD; refuses batches over `slot_rows` (status 1)."""

    def __init__(self, *, max_sequences: int = 8, context_tokens: int = 4096, slot_rows: int = 512) -> None:
        self.max_sequences = max_sequences
        self.context_tokens = context_tokens
        self.batch_capacity = 512
        self.slot_rows = slot_rows
        self.reused_prompt_tokens = 0
        self.decoded_tokens = 0
        self.batches: list[int] = []
        self.prompt_rows = 0
        self._logits = np.zeros(4, dtype=np.float32)
        self._logits[WORD] = 5.0

    def decode_rows(
        self, tokens: list[int], seq_ids: list[int], positions: list[int], logits: list[bool]
    ) -> int:
        if len(tokens) > self.slot_rows:
            return 1
        self.batches.append(len(tokens))
        self.decoded_tokens += len(tokens)
        self.prompt_rows += sum(1 for token in tokens if token >= 100)  # prompts use ids >= 100
        return 0

    def logits_row(self, row: int) -> np.ndarray:
        return self._logits

    def piece_or_end(self, token: int) -> bytes | None:
        return None if token == END else b"w"

    def copy_cells(self, source: int, target: int, end: int, start: int = 0) -> None:
        pass

    def drop_cells(self, seq: int, start: int = 0) -> None:
        pass


GREEDY = SamplingParams(temperature=0, max_tokens=6)


def _prompt(length: int, first: int = 100) -> list[int]:
    return list(range(first, first + length))


def test_requests_that_do_not_fit_wait_and_all_finish() -> None:
    engine = FakeEngine(context_tokens=40)
    batcher = ContinuousBatcher(engine)  # type: ignore[arg-type]
    try:
        futures = [batcher.generate(_prompt(10, 100 + 50 * i), GREEDY, n=2) for i in range(5)]
        wait(futures, timeout=30)
        for future in futures:
            results = future.result()
            assert [r.text for r in results] == ["wwwwww", "wwwwww"]
            assert all(r.finish_reason == "length" and r.tokens == 6 for r in results)
        assert batcher.stats.waited > 0  # 10 + 2 x 6 = 22 cells each: only one fits in 40 at a time
        assert batcher.stats.sequences_in_use == 0 and batcher.stats.cells_held == 0
    finally:
        batcher.close()


def test_a_batch_without_a_kv_slot_is_decoded_in_smaller_pieces() -> None:
    engine = FakeEngine(slot_rows=5)
    batcher = ContinuousBatcher(engine)  # type: ignore[arg-type]
    try:
        future = batcher.generate(_prompt(20), GREEDY, n=8)
        results = future.result(timeout=30)
        assert len(results) == 8 and all(r.text == "wwwwww" for r in results)
        assert max(engine.batches) <= 5  # 8 sample rows (and the prompt chunk) were split to fit
    finally:
        batcher.close()


def test_a_shared_prefix_is_read_once() -> None:
    engine = FakeEngine()
    batcher = ContinuousBatcher(engine)  # type: ignore[arg-type]
    try:
        shared = _prompt(48)
        prompts = [[*shared, 900 + i, 950 + i] for i in range(4)]
        futures = [batcher.generate(p, GREEDY, n=1) for p in prompts]
        wait(futures, timeout=30)
        assert all(len(f.result()) == 1 for f in futures)
        assert engine.prompt_rows == 48 + 4 * 2  # the 48 shared tokens once, then each own tail
        assert engine.reused_prompt_tokens == 3 * 48
    finally:
        batcher.close()


def test_a_request_cancelled_while_waiting_never_runs() -> None:
    engine = FakeEngine(max_sequences=2)
    batcher = ContinuousBatcher(engine)  # type: ignore[arg-type]
    try:
        long = SamplingParams(temperature=0, max_tokens=400)
        running = batcher.generate(_prompt(8), long, n=2)  # holds both sequences for a while
        cancel = threading.Event()
        queued = batcher.generate(_prompt(8, 300), GREEDY, n=2, cancel=cancel)
        cancel.set()
        with pytest.raises(DecodeCancelled):
            queued.result(timeout=30)
        assert [r.tokens for r in running.result(timeout=30)] == [400, 400]
    finally:
        batcher.close()


def test_keep_first_returns_the_finishers_before_every_stopped_sample() -> None:
    """Sample 0 was stopped, samples 2 and 1 finished in that order: the finishers come first
    (a sort key reading the list's length inside list.sort once put sample 0 first)."""
    from budgetflow.backends.llama_sample import Sample, finishing_order
    from budgetflow.backends.token_sampling import sequence_generator

    samples = [Sample(i, sequence_generator(1, i)) for i in range(6)]
    samples[2].finished_at, samples[1].finished_at = 0, 1
    assert [s.index for s in finishing_order(samples)] == [2, 1, 0, 3, 4, 5]
