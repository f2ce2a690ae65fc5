"""Continuous batching for the embedded model: concurrent requests share decode steps.

`ContinuousBatcher` owns a `LlamaEngine` and runs one scheduler thread. Requests are admitted at
step boundaries; every step decodes, in one llama.cpp batch, one token for each live sample of
every active request, plus up to `prefill_per_step` prompt tokens of requests still reading their
prompt (in chunks, so a long prompt never stalls the others), plus the tokens of scoring requests.

* **Sequences and KV cells.** A request holds one sequence id per sample (at most
  `max_sequences` in all) and reserves its worst case of KV cells, `prompt + n x max_tokens`
  (scoring: prompt + continuations), before it is admitted. A request that does not fit waits
  (first come, first served); it is never rejected for being concurrent. A finished sample frees
  its own cells at once; a finished or cancelled request frees everything it held.
* **Prompt prefixes.** Before each step, a request still reading its prompt takes the cells of
  the longest prefix it shares with any prompt already in the cache — the requests in flight, and
  one extra sequence that keeps the most recent prompt — instead of decoding it again; and it
  waits for an earlier request that is still decoding a prefix they share rather than decode the
  same tokens alongside it. A few-shot prefix is decoded once, not once per request.
* **Sampling** stays per sample (`Sample`: its own seeded generator, temperature, top-p, stop
  strings, `max_tokens`); `finish_after` stops a request's remaining samples when enough have
  finished (first-finish), and cancellation stops a request at the next step without disturbing
  the others.

Batch composition changes llama.cpp's arithmetic slightly, so a seeded request's text can differ
from the one-request-at-a-time path; `EmbeddedBackend(batching="serial")` keeps that path.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from budgetflow.backends.llama_engine import PROMPT_CHUNK, DecodeCancelled, LlamaEngine, common_prefix
from budgetflow.backends.llama_sample import Sample, SequenceResult, TextCallback, finishing_order, stop_hold
from budgetflow.backends.token_sampling import sequence_generator, token_logprob
from budgetflow.errors import BackendError, ConfigError
from budgetflow.types import SamplingParams

__all__ = ["BatcherStats", "ContinuousBatcher"]

#: One row of a batch: token, sequence id, position, and what reads its logits (None: nothing).
_Row = tuple[int, int, int, Callable[[np.ndarray], None] | None]


@dataclass(slots=True)
class BatcherStats:
    """What the scheduler did (steps, rows decoded, the most samples one step carried, steps on
    which a request waited for room) and what it holds now (sequence ids, reserved KV cells)."""

    steps: int = 0
    rows: int = 0
    peak_samples: int = 0
    waited: int = 0
    sequences_in_use: int = 0
    cells_held: int = 0


@dataclass(eq=False, slots=True)
class _Job:
    """One submitted request: generation (`sampling` set) or scoring (`continuations` set)."""

    prompt: list[int]
    sequences: int
    cells: int
    future: Future[Any]
    cancel: threading.Event
    sampling: SamplingParams | None = None
    first_index: int = 0
    finish_after: int | None = None
    on_text: TextCallback | None = None
    continuations: list[list[int]] = field(default_factory=list)
    seq_ids: list[int] = field(default_factory=list)
    prefilled: int = 0
    first_logits: np.ndarray | None = None
    samples: list[Sample] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    position: int = 0
    finished: int = 0
    scores: list[float] = field(default_factory=list)
    phase: str = "prefill"  # prefill -> decode | score -> scoring -> done


class ContinuousBatcher:
    """Schedules generation and scoring requests on one engine, many per decode step."""

    def __init__(self, engine: LlamaEngine, *, prefill_per_step: int = 64) -> None:
        if prefill_per_step < PROMPT_CHUNK:
            raise ConfigError(f"prefill_per_step must be >= {PROMPT_CHUNK}, got {prefill_per_step}")
        self.engine = engine
        self.stats = BatcherStats()
        self._prefill_per_step = prefill_per_step
        self._cache_seq = engine.max_sequences  # the engine was built with one extra sequence
        self._free_seqs: deque[int] = deque(range(engine.max_sequences))
        self._cells_held = 0
        self._cached_prompt: list[int] = []
        self._inbox: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._waiting: deque[_Job] = deque()
        self._active: list[_Job] = []
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="budgetflow-batcher", daemon=True)
        self._thread.start()

    # ---- submitting (any thread) -----------------------------------------------------------

    def generate(
        self,
        prompt: list[int],
        sampling: SamplingParams,
        *,
        n: int,
        first_index: int = 0,
        cancel: threading.Event | None = None,
        finish_after: int | None = None,
        on_text: TextCallback | None = None,
    ) -> Future[list[SequenceResult]]:
        """`n` samples continuing `prompt` (results as `LlamaEngine.generate` returns them)."""
        if n > self.engine.max_sequences:
            raise ConfigError(f"at most {self.engine.max_sequences} sequences per batch, asked for {n}")
        cells = len(prompt) + n * sampling.max_tokens
        self._check_fits(cells, f"prompt ({len(prompt)} tokens) + {n} x max_tokens ({sampling.max_tokens})")
        future: Future[list[SequenceResult]] = Future()
        job = _Job(
            prompt,
            n,
            cells,
            future,
            cancel or threading.Event(),
            sampling,
            first_index,
            finish_after,
            on_text,
        )
        self._submit(job)
        return future

    def score(self, prompt: list[int], continuations: list[list[int]]) -> Future[list[float]]:
        """The log-probability of each continuation after `prompt` (at most `max_sequences`)."""
        if any(not tokens for tokens in continuations):
            raise ConfigError("cannot score an empty continuation")
        if not 0 < len(continuations) <= self.engine.max_sequences:
            raise ConfigError(f"score 1 to {self.engine.max_sequences} continuations at a time")
        rows = sum(len(tokens) - 1 for tokens in continuations)
        if rows > self.engine.batch_capacity // 2:
            raise ConfigError(f"continuations of {rows} tokens exceed a scoring batch")
        cells = len(prompt) + sum(len(tokens) for tokens in continuations)
        self._check_fits(cells, "prompt + continuations")
        future: Future[list[float]] = Future()
        job = _Job(prompt, len(continuations), cells, future, threading.Event(), continuations=continuations)
        self._submit(job)
        return future

    def close(self) -> None:
        """Stop the scheduler thread; requests still queued or running fail with `DecodeCancelled`."""
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
            self._thread.join()

    def _check_fits(self, cells: int, what: str) -> None:
        if cells > self.engine.context_tokens:
            raise ConfigError(f"{what} = {cells} tokens exceeds the context of {self.engine.context_tokens}")

    def _submit(self, job: _Job) -> None:
        if self._closed:
            raise BackendError("the embedded model's scheduler is closed", backend="embedded")
        self._inbox.put(job)

    # ---- the scheduler thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            if not self._take_submissions():
                self._fail_all(DecodeCancelled("the embedded backend was closed"))
                return
            try:
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._step()
            except Exception as error:  # a failed step fails the requests in it, not the thread
                self._fail_all(error, waiting=False)

    def _take_submissions(self) -> bool:
        """Move new requests to the waiting line (blocking while there is nothing to do); False
        once closed."""
        block = not (self._active or self._waiting)
        while True:
            try:
                job = self._inbox.get(block=block)
            except queue.Empty:
                return True
            if job is None:
                return False
            self._waiting.append(job)
            block = False

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._waiting if j.cancel.is_set() or j.future.cancelled()]:
            self._waiting.remove(job)
            _fail(job, DecodeCancelled())
        for job in [j for j in self._active if j.cancel.is_set()]:
            self._release(job)
            _fail(job, DecodeCancelled())

    def _admit(self) -> None:
        """Start waiting requests in order while sequence ids and KV cells allow."""
        while self._waiting:
            job = self._waiting[0]
            cache = len(self._cached_prompt)
            fits = self._cells_held + job.cells + cache <= self.engine.context_tokens
            if not fits and not self._active:  # alone it fits without the cached prompt: drop it
                self._forget_cache()
                fits = True
            if not fits or len(self._free_seqs) < job.sequences:
                self.stats.waited += 1
                return
            self._waiting.popleft()
            if not job.future.set_running_or_notify_cancel():  # cancelled while it waited
                continue
            job.seq_ids = [self._free_seqs.popleft() for _ in range(job.sequences)]
            self._cells_held += job.cells
            self._active.append(job)
            self._note_holdings()

    def _share_prefixes(self) -> set[int]:
        """Give each request reading its prompt the cells of the longest prefix another sequence
        already holds; the ids of requests that should wait this step for an earlier one that is
        still decoding a prefix they share."""
        waiting: set[int] = set()
        readers = [job for job in self._active if job.phase == "prefill"]
        for position, job in enumerate(readers):
            last = len(job.prompt) - 1  # always decode the last prompt token: its logits are needed
            source, shared = self._cache_seq, min(common_prefix(self._cached_prompt, job.prompt), last)
            for other in self._active:
                if other is job:
                    continue
                held = len(other.prompt) if other.phase != "prefill" else other.prefilled
                common = min(common_prefix(other.prompt, job.prompt), last)
                if min(common, held) > shared:
                    source, shared = other.seq_ids[0], min(common, held)
                if other in readers[:position] and common - max(held, job.prefilled) >= PROMPT_CHUNK // 4:
                    waiting.add(id(job))  # the earlier request will hold more of it soon
            if shared > job.prefilled:
                self.engine.copy_cells(source, job.seq_ids[0], shared, start=job.prefilled)
                self.engine.reused_prompt_tokens += shared - job.prefilled
                job.prefilled = shared
        return waiting

    def _forget_cache(self) -> None:
        self.engine.drop_cells(self._cache_seq)
        self._cached_prompt = []

    def _step(self) -> None:
        waiting = self._share_prefixes()
        rows = self._decode_rows() + self._score_rows()
        rows += self._prefill_rows(self.engine.batch_capacity - len(rows), waiting)
        self._decode(rows)
        self.stats.steps += 1
        self.stats.rows += len(rows)
        for job in list(self._active):
            self._after_step(job)

    def _decode_rows(self) -> list[_Row]:
        rows: list[_Row] = []
        for job in self._active:
            if job.phase != "decode":
                continue
            sampling = job.sampling
            assert sampling is not None
            for sample in job.samples:
                if sample.finish_reason is None:
                    seq = job.seq_ids[sample.index]
                    rows.append((job.tokens[sample.index], seq, job.position, _drawer(job, sample, sampling)))
        self.stats.peak_samples = max(self.stats.peak_samples, len(rows))
        return rows

    def _score_rows(self) -> list[_Row]:
        rows: list[_Row] = []
        for job in self._active:
            if job.phase != "score":
                continue
            job.phase = "scoring"
            start = len(job.prompt)
            for k, tokens in enumerate(job.continuations):
                for j, token in enumerate(tokens[:-1]):
                    rows.append((token, job.seq_ids[k], start + j, _scorer(job, k, tokens[j + 1])))
        return rows

    def _prefill_rows(self, room: int, waiting: set[int]) -> list[_Row]:
        """Prompt tokens of reading requests, oldest first, up to `prefill_per_step` in all."""
        rows: list[_Row] = []
        budget = min(room, self._prefill_per_step)
        for job in self._active:
            if job.phase != "prefill" or budget <= 0 or id(job) in waiting:
                continue
            start = job.prefilled
            end = min(len(job.prompt), start + min(budget, PROMPT_CHUNK))
            for position in range(start, end):
                last = position == len(job.prompt) - 1
                reader = _first_logits_reader(job) if last else None
                rows.append((job.prompt[position], job.seq_ids[0], position, reader))
            job.prefilled = end
            budget -= end - start
        return rows

    def _decode(self, rows: list[_Row]) -> None:
        """Decode `rows` in one batch, or in halves when llama.cpp finds no KV slot for it all."""
        if not rows:
            return
        tokens, seqs, positions, readers = zip(*rows, strict=True)
        wanted = [reader is not None for reader in readers]
        status = self.engine.decode_rows(list(tokens), list(seqs), list(positions), wanted)
        if status == 0:
            for row, reader in enumerate(readers):
                if reader is not None:
                    reader(self.engine.logits_row(row))
            return
        if len(rows) == 1:
            raise BackendError("the KV cache has no free cell left", backend="embedded")
        half = len(rows) // 2
        self._decode(rows[:half])
        self._decode(rows[half:])

    def _after_step(self, job: _Job) -> None:
        if job.phase == "prefill" and job.first_logits is not None:
            self._prompt_read(job)
        elif job.phase == "decode":
            job.position += 1
            self._advance(job)
        elif job.phase == "scoring":
            self._release(job)
            job.future.set_result(job.scores)

    def _prompt_read(self, job: _Job) -> None:
        """The prompt is in the cache: share it with the other sequences, remember it as the
        newest prefix, and draw every sample's first token (or start scoring)."""
        length = len(job.prompt)
        for seq in job.seq_ids[1:]:
            self.engine.copy_cells(job.seq_ids[0], seq, length)
        self.engine.drop_cells(self._cache_seq)
        self.engine.copy_cells(job.seq_ids[0], self._cache_seq, length)
        self._cached_prompt = list(job.prompt)
        first = job.first_logits
        assert first is not None
        if job.sampling is None:  # scoring: each continuation's first token is scored here
            job.scores = [token_logprob(first, tokens[0]) for tokens in job.continuations]
            job.phase = "score"
            if all(len(tokens) == 1 for tokens in job.continuations):
                self._release(job)
                job.future.set_result(job.scores)
            return
        sampling = job.sampling
        job.samples = [
            Sample(i, sequence_generator(sampling.seed, job.first_index + i)) for i in range(job.sequences)
        ]
        job.tokens = [sample.draw(first, sampling) for sample in job.samples]
        job.position = length
        job.phase = "decode"
        self._advance(job)

    def _advance(self, job: _Job) -> None:
        """Append each live sample's new token; finish the request when every sample (or
        `finish_after` of them) has finished."""
        sampling = job.sampling
        assert sampling is not None
        hold = stop_hold(sampling)
        for sample in job.samples:
            if sample.finish_reason is not None:
                continue
            piece = self.engine.piece_or_end(job.tokens[sample.index])
            if not sample.accept(piece, sampling, hold=hold, on_text=job.on_text):
                self.engine.drop_cells(job.seq_ids[sample.index], len(job.prompt))
        for sample in job.samples:
            if sample.finish_reason is not None and sample.finished_at < 0:
                sample.finished_at, job.finished = job.finished, job.finished + 1
        enough = job.finish_after is not None and job.finished >= job.finish_after
        if job.finished == len(job.samples) or enough:
            self._complete(job)

    def _complete(self, job: _Job) -> None:
        samples = job.samples
        for sample in samples:
            if sample.finish_reason is None:
                sample.finish("cancelled", job.on_text)
        if job.finish_after is not None:
            samples = finishing_order(samples)
        self._release(job)
        job.future.set_result([sample.result() for sample in samples])

    def _release(self, job: _Job) -> None:
        """Free every cell and sequence id the request held."""
        for seq in job.seq_ids:
            self.engine.drop_cells(seq)
            self._free_seqs.append(seq)
        job.seq_ids = []
        self._cells_held -= job.cells
        job.phase = "done"
        if job in self._active:
            self._active.remove(job)
        self._note_holdings()

    def _note_holdings(self) -> None:
        self.stats.sequences_in_use = self.engine.max_sequences - len(self._free_seqs)
        self.stats.cells_held = self._cells_held

    def _fail_all(self, error: BaseException, *, waiting: bool = True) -> None:
        for job in list(self._active):
            self._release(job)
            _fail(job, error)
        while waiting and self._waiting:
            _fail(self._waiting.popleft(), error)


def _fail(job: _Job, error: BaseException) -> None:
    """Fail the request's future, unless its caller already cancelled it while it waited."""
    if not job.future.done():
        job.future.set_exception(error)


def _drawer(job: _Job, sample: Sample, sampling: SamplingParams) -> Callable[[np.ndarray], None]:
    def draw(logits: np.ndarray) -> None:
        job.tokens[sample.index] = sample.draw(logits, sampling)

    return draw


def _scorer(job: _Job, k: int, next_token: int) -> Callable[[np.ndarray], None]:
    def score(logits: np.ndarray) -> None:
        job.scores[k] += token_logprob(logits, next_token)

    return score


def _first_logits_reader(job: _Job) -> Callable[[np.ndarray], None]:
    def read(logits: np.ndarray) -> None:
        job.first_logits = np.array(logits, copy=True)

    return read
