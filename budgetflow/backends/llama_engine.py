"""Batched decoding on llama.cpp's low-level API (llama-cpp-python==0.3.36, pinned).

`n` samples of one prompt share the prompt's KV cache: the prompt is decoded once on sequence 0,
its cache cells are shared with sequences 1..n-1 (`llama_memory_seq_cp` on a unified KV cache
adds sequence ids to the same cells, it copies nothing), and every step decodes one token for each
live sequence in a single batch. Each sequence samples its next token with its own seeded
generator. This module is synchronous; `EmbeddedBackend` runs it on its worker thread.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from budgetflow.backends.token_sampling import sample_next_token, sequence_generator, token_logprob
from budgetflow.errors import BackendError, ConfigError, ModelFileError
from budgetflow.types import Message, SamplingParams

__all__ = ["DecodeCancelled", "LlamaEngine", "SequenceResult"]


#: Prompt tokens per decode batch, and the granularity of prefix reuse.
_PROMPT_CHUNK = 32


class DecodeCancelled(Exception):
    """Decoding stopped because its request was cancelled."""


@dataclass(slots=True)
class SequenceResult:
    """One finished sample: its text, why it stopped, how many tokens it generated, and (when
    asked for) the mean log-probability of the tokens it sampled."""

    text: str
    finish_reason: str
    tokens: int
    mean_logprob: float | None = None


@dataclass(slots=True)
class _Sequence:
    index: int
    generator: np.random.Generator
    data: bytearray = field(default_factory=bytearray)
    tokens: int = 0
    finish_reason: str | None = None
    text: str = ""
    finished_at: int = -1
    emitted: int = 0
    logprob_sum: float = 0.0
    scored: int = 0

    def mean_logprob(self) -> float | None:
        return self.logprob_sum / self.scored if self.scored else None


_SILENT_LOG = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
_backend_ready = threading.Lock()
_backend_initialised = False


def _init_backend(verbose: bool) -> None:
    global _backend_initialised
    with _backend_ready:
        if not verbose:
            llama_cpp.llama_log_set(_SILENT_LOG, ctypes.c_void_p(0))
        if not _backend_initialised:
            llama_cpp.llama_backend_init()
            _backend_initialised = True


class LlamaEngine:
    """A loaded GGUF model and one context sized for `max_sequences` parallel samples.

    Not thread-safe: one caller at a time (the embedded backend serialises requests).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int,
        max_sequences: int,
        context_tokens: int,
        verbose: bool = False,
    ) -> None:
        if not model_path.is_file():
            raise ModelFileError(f"model file {str(model_path)!r} does not exist")
        _init_backend(verbose)
        model_params = llama_cpp.llama_model_default_params()
        self._model = llama_cpp.llama_model_load_from_file(str(model_path).encode(), model_params)
        if not self._model:
            raise ModelFileError(f"llama.cpp could not load {str(model_path)!r} (not a valid GGUF file?)")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.vocab_size = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.max_sequences = max_sequences
        self.context_tokens = context_tokens
        self._ctx: Any = self._new_context(threads)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch_capacity = max(512, max_sequences)
        self._batch = llama_cpp.llama_batch_init(self._batch_capacity, 0, 1)
        self._pieces: dict[int, bytes] = {}
        self._on_text: Callable[[int, str], None] | None = None
        self._hold = 0
        self._template = llama_cpp.llama_model_chat_template(self._model, None)
        #: Tokens pushed through the model so far (prompt and generated); a cancelled request
        #: stops adding to it.
        self.decoded_tokens = 0
        #: Prompt tokens whose cached cells were reused instead of decoded again.
        self.reused_prompt_tokens = 0
        self._cached_prompt: list[int] = []

    def _new_context(self, threads: int) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.context_tokens
        params.n_batch = 512
        params.n_ubatch = 512
        params.n_seq_max = self.max_sequences
        params.kv_unified = True
        params.n_threads = threads
        params.n_threads_batch = threads
        ctx = llama_cpp.llama_init_from_model(self._model, params)
        if not ctx:
            raise ModelFileError("llama.cpp could not create a context for the model")
        return ctx

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx = None

    # ---- text <-> tokens -------------------------------------------------------------------

    def render_chat(self, messages: tuple[Message, ...], prefill: str = "") -> str:
        """The prompt text for `messages` under the model's own chat template."""
        for message in messages:
            if message.has_media:
                raise ConfigError("the embedded model reads text only; this message has media parts")
        chat = (llama_cpp.llama_chat_message * len(messages))(
            *(llama_cpp.llama_chat_message(m.role.encode(), m.text.encode()) for m in messages)
        )
        size = 4 * sum(len(m.text) for m in messages) + 1024
        buffer = ctypes.create_string_buffer(size)
        length = llama_cpp.llama_chat_apply_template(self._template, chat, len(messages), True, buffer, size)
        if length > size:
            buffer = ctypes.create_string_buffer(length)
            length = llama_cpp.llama_chat_apply_template(
                self._template, chat, len(messages), True, buffer, length
            )
        if length < 0:
            raise BackendError("the model's chat template could not be applied", backend="embedded")
        return buffer.raw[:length].decode("utf-8") + prefill

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Tokens of `text`; `special=False` for a continuation: no BOS added, markup read as text."""
        data = text.encode("utf-8")
        capacity = len(data) + 16
        tokens = (llama_cpp.llama_token * capacity)()
        count = llama_cpp.llama_tokenize(self._vocab, data, len(data), tokens, capacity, special, special)
        if count < 0:
            raise BackendError(f"tokenizer needs {-count} slots", backend="embedded")
        return list(tokens[:count])

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buffer = ctypes.create_string_buffer(64)
            length = llama_cpp.llama_token_to_piece(self._vocab, token, buffer, 64, 0, False)
            piece = buffer.raw[: max(0, length)]
            self._pieces[token] = piece
        return piece

    # ---- decoding --------------------------------------------------------------------------

    def generate(
        self,
        prompt_tokens: list[int],
        sampling: SamplingParams,
        *,
        n: int,
        first_index: int = 0,
        cancel: threading.Event | None = None,
        finish_after: int | None = None,
        on_text: Callable[[int, str], None] | None = None,
    ) -> list[SequenceResult]:
        """`n` samples continuing `prompt_tokens`, decoded together in one batch per step.

        With `finish_after=k`, decoding stops as soon as `k` samples have finished; the result is
        those `k` in finishing order followed by the stopped ones (finish_reason "cancelled").
        `on_text(sample_index, delta)` receives text as it is generated; text that could still turn
        out to be the start of a stop string is held back until it cannot.
        """
        self._on_text = on_text
        self._hold = max((len(s) for s in sampling.stop), default=1) - 1
        try:
            return self._generate(prompt_tokens, sampling, n, first_index, cancel, finish_after)
        finally:
            self._on_text = None

    def _generate(
        self,
        prompt_tokens: list[int],
        sampling: SamplingParams,
        n: int,
        first_index: int,
        cancel: threading.Event | None,
        finish_after: int | None,
    ) -> list[SequenceResult]:
        if n > self.max_sequences:
            raise ConfigError(f"at most {self.max_sequences} sequences per batch, asked for {n}")
        needed = len(prompt_tokens) + n * sampling.max_tokens
        if needed > self.context_tokens:
            raise ConfigError(
                f"prompt ({len(prompt_tokens)} tokens) + {n} x max_tokens ({sampling.max_tokens}) "
                f"= {needed} tokens exceeds the context of {self.context_tokens}"
            )
        last_logits = self._decode_prompt(prompt_tokens)
        for seq in range(1, n):
            llama_cpp.llama_memory_seq_cp(self._memory, 0, seq, -1, -1)
        sequences = [_Sequence(i, sequence_generator(sampling.seed, first_index + i)) for i in range(n)]
        tokens = [self._sample(last_logits, s, sampling) for s in sequences]
        position = len(prompt_tokens)
        finished = 0
        while True:
            live = [s for s, t in zip(sequences, tokens, strict=True) if self._advance(s, t, sampling)]
            for s in sequences:
                if s.finish_reason is not None and s.finished_at < 0:
                    s.finished_at, finished = finished, finished + 1
            if not live or (finish_after is not None and finished >= finish_after):
                break
            if cancel is not None and cancel.is_set():
                raise DecodeCancelled
            self._fill_batch(
                [tokens[s.index] for s in live],
                [s.index for s in live],
                [position] * len(live),  # one step of every live sample
                logits_for_last_only=False,
            )
            for row, s in enumerate(live):
                tokens[s.index] = self._sample(self._logits(row), s, sampling)
            position += 1
        for s in sequences:
            if s.finish_reason is None:
                self._finish(s, "cancelled")
        if finish_after is not None:
            sequences.sort(key=lambda s: s.finished_at if s.finished_at >= 0 else len(sequences) + s.index)
        return [
            SequenceResult(s.text, s.finish_reason or "stop", s.tokens, s.mean_logprob()) for s in sequences
        ]

    def score(self, prompt_tokens: list[int], continuations: list[list[int]]) -> list[float]:
        """The log-probability of each continuation after `prompt_tokens` (the sum over its tokens,
        from the raw logits), all continuations decoded side by side on the cached prompt."""
        if any(not tokens for tokens in continuations):
            raise ConfigError("cannot score an empty continuation")
        longest = max((len(tokens) for tokens in continuations), default=0)
        if longest > self._batch_capacity:
            raise ConfigError(f"a continuation of {longest} tokens exceeds a batch of {self._batch_capacity}")
        needed = len(prompt_tokens) + sum(len(tokens) for tokens in continuations[: self.max_sequences])
        if needed > self.context_tokens:
            raise ConfigError(f"prompt + continuations need {needed} tokens, more than {self.context_tokens}")
        first = np.array(self._decode_prompt(prompt_tokens), copy=True)
        scores: list[float] = []
        group: list[list[int]] = []
        for tokens in continuations:
            if group and (
                len(group) == self.max_sequences
                or sum(len(t) - 1 for t in group) + len(tokens) - 1 > self._batch_capacity
            ):
                scores += self._score_group(first, len(prompt_tokens), group)
                group = []
            group.append(tokens)
        if group:
            scores += self._score_group(first, len(prompt_tokens), group)
        return scores

    def _score_group(self, first: np.ndarray, start: int, group: list[list[int]]) -> list[float]:
        """Score up to `max_sequences` continuations, one sequence each, in one batch."""
        for seq in range(1, len(group)):
            llama_cpp.llama_memory_seq_cp(self._memory, 0, seq, -1, -1)
        rows = [(token, seq, start + j) for seq, t in enumerate(group) for j, token in enumerate(t[:-1])]
        totals = [token_logprob(first, tokens[0]) for tokens in group]
        if rows:
            tokens, seqs, positions = (list(column) for column in zip(*rows, strict=True))
            self._fill_batch(tokens, seqs, positions, logits_for_last_only=False)
            row = 0
            for seq, continuation in enumerate(group):
                for token in continuation[1:]:
                    totals[seq] += token_logprob(self._logits(row), token)
                    row += 1
        for seq in range(len(group)):
            llama_cpp.llama_memory_seq_rm(self._memory, seq, start, -1)
        return totals

    def _advance(self, seq: _Sequence, token: int, sampling: SamplingParams) -> bool:
        """Append `token` to `seq`; False once the sequence has finished."""
        if seq.finish_reason is not None:
            return False
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return self._finish(seq, "stop")
        seq.data += self._piece(token)
        seq.tokens += 1
        text = seq.data.decode("utf-8", errors="ignore")
        cut = min((text.find(s) for s in sampling.stop if s in text), default=-1)
        if cut >= 0:
            seq.data = bytearray(text[:cut].encode("utf-8"))
            return self._finish(seq, "stop")
        if seq.tokens >= sampling.max_tokens:
            return self._finish(seq, "length")
        self._emit(seq, text, self._hold)
        return True

    def _emit(self, seq: _Sequence, text: str, hold: int) -> None:
        end = len(text) - hold
        if self._on_text is not None and end > seq.emitted:
            self._on_text(seq.index, text[seq.emitted : end])
            seq.emitted = end

    def _finish(self, seq: _Sequence, reason: str) -> bool:
        seq.finish_reason = reason
        seq.text = seq.data.decode("utf-8", errors="replace")
        self._emit(seq, seq.text, 0)
        # free the sample's own cells; the prompt's cells stay for the next request to reuse
        llama_cpp.llama_memory_seq_rm(self._memory, seq.index, len(self._cached_prompt), -1)
        return False

    def _sample(self, logits: np.ndarray, seq: _Sequence, sampling: SamplingParams) -> int:
        if seq.finish_reason is not None:
            return -1
        token = sample_next_token(
            logits, temperature=sampling.temperature, top_p=sampling.top_p, generator=seq.generator
        )
        if sampling.logprobs:
            seq.logprob_sum += token_logprob(logits, token)
            seq.scored += 1
        return token

    def _decode_prompt(self, prompt_tokens: list[int]) -> np.ndarray:
        """Decode the prompt on sequence 0, reusing the cached cells of the longest prefix it shares
        with the previous prompt (few-shot prefixes and repeated rounds cost nothing twice)."""
        reuse = _common_prefix(self._cached_prompt, prompt_tokens)
        reuse = min(reuse, len(prompt_tokens) - 1)  # decode at least one token to get logits
        # Reuse and decode in chunks aligned to _PROMPT_CHUNK: a prompt's cache and logits are then
        # computed from the same batches whatever came before, so outputs do not depend on history.
        reuse -= reuse % _PROMPT_CHUNK
        for seq in range(1, self.max_sequences):
            llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
        if not llama_cpp.llama_memory_seq_rm(self._memory, 0, reuse, -1):
            llama_cpp.llama_memory_clear(self._memory, True)
            reuse = 0
        self._cached_prompt = prompt_tokens[:reuse]
        for start in range(reuse, len(prompt_tokens), _PROMPT_CHUNK):
            chunk = prompt_tokens[start : start + _PROMPT_CHUNK]
            is_last = start + _PROMPT_CHUNK >= len(prompt_tokens)
            positions = list(range(start, start + len(chunk)))
            self._fill_batch(chunk, [0] * len(chunk), positions, logits_for_last_only=is_last)
        self._cached_prompt = list(prompt_tokens)
        self.reused_prompt_tokens += reuse
        return self._logits(self._batch.n_tokens - 1)

    def _fill_batch(
        self,
        tokens: list[int],
        seq_ids: list[int],
        positions: list[int],
        *,
        logits_for_last_only: bool,
    ) -> None:
        """Decode one batch: token i goes to sequence `seq_ids[i]` at `positions[i]`."""
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, (token, seq, position) in enumerate(zip(tokens, seq_ids, positions, strict=True)):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = (i == len(tokens) - 1) if logits_for_last_only else 1
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise BackendError(f"llama_decode failed with status {status}", backend="embedded")
        self.decoded_tokens += len(tokens)

    def _logits(self, row: int) -> np.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab_size,))


def _common_prefix(first: list[int], second: list[int]) -> int:
    length = min(len(first), len(second))
    for index in range(length):
        if first[index] != second[index]:
            return index
    return length
