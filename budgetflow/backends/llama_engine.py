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
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from budgetflow.backends.llama_sample import Sample, SequenceResult, TextCallback, finishing_order, stop_hold
from budgetflow.backends.token_sampling import sequence_generator, token_logprob
from budgetflow.errors import BackendError, ConfigError, ModelFileError
from budgetflow.types import Message, SamplingParams

__all__ = ["PROMPT_CHUNK", "DecodeCancelled", "LlamaEngine", "SequenceResult", "common_prefix"]


#: Prompt tokens per decode batch, and the granularity of prefix reuse.
PROMPT_CHUNK = 32


class DecodeCancelled(Exception):
    """Decoding stopped because its request was cancelled."""


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
    """A loaded GGUF model and one context sized for `max_sequences` parallel samples (plus
    `extra_sequences` a scheduler keeps for itself, such as a prompt cache).

    Not thread-safe: one caller at a time (the embedded backend's worker, or its batcher's thread).
    """

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int,
        max_sequences: int,
        context_tokens: int,
        verbose: bool = False,
        extra_sequences: int = 0,
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
        self._ctx: Any = self._new_context(threads, max_sequences + extra_sequences)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch_capacity = max(512, max_sequences)
        self._batch = llama_cpp.llama_batch_init(self._batch_capacity, 0, 1)
        self._pieces: dict[int, bytes] = {}
        self._on_text: TextCallback | None = None
        self._hold = 0
        self._template = llama_cpp.llama_model_chat_template(self._model, None)
        #: Tokens pushed through the model so far (prompt and generated); a cancelled request
        #: stops adding to it.
        self.decoded_tokens = 0
        #: Prompt tokens whose cached cells were reused instead of decoded again.
        self.reused_prompt_tokens = 0
        self._cached_prompt: list[int] = []

    def _new_context(self, threads: int, sequences: int) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.context_tokens
        params.n_batch = 512
        params.n_ubatch = 512
        params.n_seq_max = sequences
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

    def piece_or_end(self, token: int) -> bytes | None:
        """The bytes of `token`, or None when it ends generation (an end-of-generation token)."""
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            return None
        return self._piece(token)

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
        on_text: TextCallback | None = None,
    ) -> list[SequenceResult]:
        """`n` samples continuing `prompt_tokens`, decoded together in one batch per step.

        With `finish_after=k`, decoding stops as soon as `k` samples have finished; the result is
        those `k` in finishing order followed by the stopped ones (finish_reason "cancelled").
        `on_text(sample_index, delta)` receives text as it is generated; text that could still turn
        out to be the start of a stop string is held back until it cannot.
        """
        self._on_text = on_text
        self._hold = stop_hold(sampling)
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
        sequences = [Sample(i, sequence_generator(sampling.seed, first_index + i)) for i in range(n)]
        tokens = [s.draw(last_logits, sampling) for s in sequences]
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
                tokens[s.index] = s.draw(self._logits(row), sampling)
            position += 1
        for s in sequences:
            if s.finish_reason is None:
                self._finish(s, "cancelled")
        if finish_after is not None:
            sequences = finishing_order(sequences)
        return [s.result() for s in sequences]

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

    def _advance(self, seq: Sample, token: int, sampling: SamplingParams) -> bool:
        """Append `token` to `seq`; False once the sequence has finished (its cells freed)."""
        if seq.finish_reason is not None:
            return False
        if seq.accept(self.piece_or_end(token), sampling, hold=self._hold, on_text=self._on_text):
            return True
        self._free_sample(seq)
        return False

    def _finish(self, seq: Sample, reason: str) -> None:
        seq.finish(reason, self._on_text)
        self._free_sample(seq)

    def _free_sample(self, seq: Sample) -> None:
        # free the sample's own cells; the prompt's cells stay for the next request to reuse
        llama_cpp.llama_memory_seq_rm(self._memory, seq.index, len(self._cached_prompt), -1)

    def _decode_prompt(self, prompt_tokens: list[int]) -> np.ndarray:
        """Decode the prompt on sequence 0, reusing the cached cells of the longest prefix it shares
        with the previous prompt (few-shot prefixes and repeated rounds cost nothing twice)."""
        reuse = common_prefix(self._cached_prompt, prompt_tokens)
        reuse = min(reuse, len(prompt_tokens) - 1)  # decode at least one token to get logits
        # Reuse and decode in chunks aligned to PROMPT_CHUNK: a prompt's cache and logits are then
        # computed from the same batches whatever came before, so outputs do not depend on history.
        reuse -= reuse % PROMPT_CHUNK
        for seq in range(1, self.max_sequences):
            llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
        if not llama_cpp.llama_memory_seq_rm(self._memory, 0, reuse, -1):
            llama_cpp.llama_memory_clear(self._memory, True)
            reuse = 0
        self._cached_prompt = prompt_tokens[:reuse]
        for start in range(reuse, len(prompt_tokens), PROMPT_CHUNK):
            chunk = prompt_tokens[start : start + PROMPT_CHUNK]
            is_last = start + PROMPT_CHUNK >= len(prompt_tokens)
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
        last = len(tokens) - 1
        wanted = [i == last or not logits_for_last_only for i in range(len(tokens))]
        status = self.decode_rows(tokens, seq_ids, positions, wanted)
        if status != 0:
            raise BackendError(f"llama_decode failed with status {status}", backend="embedded")

    # ---- operations for a scheduler that batches many requests (ContinuousBatcher) ----------

    def decode_rows(
        self, tokens: list[int], seq_ids: list[int], positions: list[int], logits: list[bool]
    ) -> int:
        """Decode one batch (token i to sequence `seq_ids[i]` at `positions[i]`, logits where
        `logits[i]`); llama.cpp's status: 0 done, 1 no KV slot for the batch (retry smaller)."""
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, (token, seq, position, wanted) in enumerate(
            zip(tokens, seq_ids, positions, logits, strict=True)
        ):
            batch.token[i] = token
            batch.pos[i] = position
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = wanted
        status = int(llama_cpp.llama_decode(self._ctx, batch))
        if status == 0:
            self.decoded_tokens += len(tokens)
        elif status != 1:
            raise BackendError(f"llama_decode failed with status {status}", backend="embedded")
        return status

    def logits_row(self, row: int) -> np.ndarray:
        """The logits of row `row` of the last decoded batch (valid until the next decode)."""
        return self._logits(row)

    def copy_cells(self, source: int, target: int, end: int, start: int = 0) -> None:
        """Give sequence `target` the cells of `source` at positions [start, end) (shared, not
        copied: a unified KV cache adds `target` to the cells' sequence sets)."""
        llama_cpp.llama_memory_seq_cp(self._memory, source, target, start, end)

    def drop_cells(self, seq: int, start: int = 0) -> None:
        """Remove sequence `seq` from its cells at positions >= `start` (unshared cells are freed)."""
        llama_cpp.llama_memory_seq_rm(self._memory, seq, start, -1)

    @property
    def batch_capacity(self) -> int:
        return self._batch_capacity

    def _logits(self, row: int) -> np.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(self._ctx, row)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab_size,))


def common_prefix(first: list[int], second: list[int]) -> int:
    length = min(len(first), len(second))
    if first[:length] == second[:length]:  # compared in C; the usual case for a shared prefix
        return length
    for index in range(length):
        if first[index] != second[index]:
            return index
    return length
