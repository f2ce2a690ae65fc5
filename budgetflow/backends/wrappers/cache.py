"""`Cache`: content-addressed record/replay of completions in SQLite, keeping sample diversity.

The key is a hash of everything that shapes a sample (model, messages, sampling parameters)
plus a **rollout index**. Sample i of the k-th identical request in a run gets rollout
`offset + i`, where `offset` counts the samples of that key already handed out in this run. So
"give me 8 samples" returns 8 different samples, a second identical request in the same run gets
8 more, and a new run replays them all in the same order. Missing rollouts are sampled from the
wrapped backend and recorded. Hits cost nothing: the response's usage counts only what the
backend was actually asked for.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict, replace
from pathlib import Path

from budgetflow.backends.base import Backend
from budgetflow.backends.wrappers.base import Wrapper
from budgetflow.types import Completion, Request, Response, Usage

__all__ = ["Cache", "request_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    key TEXT NOT NULL,
    rollout INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    completion_tokens INTEGER NOT NULL,
    mean_logprob REAL,
    PRIMARY KEY (key, rollout)
)
"""


def request_key(request: Request, *, model: str) -> str:
    """The content address of one sample stream: everything but `n`."""
    shape = {
        "model": request.model or model,
        "messages": [
            {
                "role": m.role,
                "content": m.content if isinstance(m.content, str) else [asdict(p) for p in m.content],
                **({"fields": m.fields} if m.fields else {}),
            }
            for m in request.messages
        ],
        "sampling": asdict(request.sampling),
        "keep_first": request.keep_first,
        "prefill": request.prefill,
        "thinking": request.thinking,
        **({"passthrough": request.passthrough} if request.passthrough else {}),
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()


class Cache(Wrapper):
    """Record completions to `path` (SQLite) and replay them by (request, rollout)."""

    def __init__(self, inner: Backend, path: Path | str) -> None:
        super().__init__(inner)
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(samples)")}
        if "mean_logprob" not in columns:  # a cache written before logprobs were recorded
            self._db.execute("ALTER TABLE samples ADD COLUMN mean_logprob REAL")
        self._db.commit()
        self._handed_out: dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    async def complete(self, request: Request) -> Response:
        key = request_key(request, model=self.inner.name)
        offset = self._handed_out.get(key, 0)
        self._handed_out[key] = offset + request.n
        cached = self._lookup(key, offset, request.n)
        missing = [offset + i for i in range(request.n) if offset + i not in cached]
        usage = Usage()
        if missing:
            fresh = await self.inner.complete(_for_missing(request, len(missing), missing[0]))
            usage = fresh.usage
            for rollout, completion in zip(missing, fresh.completions, strict=True):
                cached[rollout] = completion
            self._record(key, dict(zip(missing, fresh.completions, strict=True)))
        self.hits += request.n - len(missing)
        self.misses += len(missing)
        completions = tuple(cached[offset + i] for i in range(request.n))
        return Response(completions=completions, usage=usage, model=self.inner.name)

    def _lookup(self, key: str, offset: int, n: int) -> dict[int, Completion]:
        rows = self._db.execute(
            "SELECT rollout, text, finish_reason, completion_tokens, mean_logprob FROM samples "
            "WHERE key = ? AND rollout >= ? AND rollout < ?",
            (key, offset, offset + n),
        ).fetchall()
        return {
            rollout: Completion(
                text=text, finish_reason=finish, completion_tokens=tokens, mean_logprob=logprob
            )
            for rollout, text, finish, tokens, logprob in rows
        }

    def _record(self, key: str, completions: dict[int, Completion]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)",
            [
                (key, r, c.text, c.finish_reason, c.completion_tokens, c.mean_logprob)
                for r, c in completions.items()
            ],
        )
        self._db.commit()

    async def aclose(self) -> None:
        self._db.close()
        await self.inner.aclose()


def _for_missing(request: Request, count: int, first_rollout: int) -> Request:
    """The request for the missing rollouts. A seeded request shifts its seed by the first missing
    rollout, so refilled samples are fresh rather than repeats of rollout 0."""
    seed = request.sampling.seed
    if seed is None or first_rollout == 0:
        return replace(request, n=count)
    return replace(request, n=count, sampling=replace(request.sampling, seed=seed + first_rollout))
