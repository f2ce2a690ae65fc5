"""Symbolic equivalence of LaTeX answers with math-verify, off the event loop.

math-verify parses both answers into SymPy and compares them (`\\frac{1}{\\sqrt{2}}` equals
`\\frac{\\sqrt{2}}{2}`, `(3, \\frac{\\pi}{2})` equals `\\left( 3, \\frac{\\pi}{2} \\right)`). It
bounds its own work with `signal.alarm`, which works only in a process's main thread, and a SymPy
simplification can take seconds. So comparisons run in a worker process
(`python -m budgetflow.answers.symbolic_worker`, started on first use, math-verify's alarms armed
there), one line of JSON each way; the event loop only awaits a thread that talks to it, at most
`timeout_seconds`. A comparison that overruns counts as "not equivalent", its worker is killed and
a fresh one takes the next comparison; `timeouts` says how many did.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading

__all__ = ["SymbolicEquivalence"]


class SymbolicEquivalence:
    """Compares answers with math-verify in a worker process, with a timeout per comparison."""

    def __init__(self, *, timeout_seconds: float = 10.0) -> None:
        self.timeout_seconds = timeout_seconds
        self.timeouts = 0
        self._worker: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    async def equal(self, gold: str, predicted: str) -> bool:
        """Whether `predicted` states `gold`, by math-verify; False when it takes too long."""
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._compare, gold, predicted), self.timeout_seconds
            )
        except TimeoutError:
            self.timeouts += 1
            self.close()  # the worker is stuck in SymPy: the next comparison gets a new one
            return False

    def close(self) -> None:
        """Stop the worker (a later comparison starts another)."""
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.kill()
            worker.wait()

    def _compare(self, gold: str, predicted: str) -> bool:
        with self._lock:
            worker = self._running_worker()
            assert worker.stdin is not None and worker.stdout is not None
            try:
                worker.stdin.write(json.dumps([gold, predicted]) + "\n")
                worker.stdin.flush()
                reply = worker.stdout.readline()
            except (BrokenPipeError, OSError):
                reply = ""
            if not reply:  # killed on a timeout, or died: not equivalent, and start afresh
                self._worker = None
                return False
            return bool(json.loads(reply))

    def _running_worker(self) -> subprocess.Popen[str]:
        if self._worker is None or self._worker.poll() is not None:
            self._worker = subprocess.Popen(
                [sys.executable, "-m", "budgetflow.answers.symbolic_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        return self._worker
