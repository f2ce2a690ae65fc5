"""Whether the request a task is awaiting has reached the endpoint, or still waits in a limiter.

`Budgeted` charges a request cancelled in flight at its worst case (the endpoint may bill what
it generated) but releases one cancelled while it still waited for a rate-limit or concurrency
slot (nothing was sent). The limiters beneath it say which, through this context variable: it
lives in the awaiting task's context, which every wrapper of one call shares.
"""

from __future__ import annotations

from contextvars import ContextVar

__all__ = ["mark_sent", "mark_waiting", "was_sent"]

_SENT: ContextVar[bool] = ContextVar("budgetflow_request_sent", default=True)


def mark_waiting() -> None:
    """The current call waits for a limiter (not sent yet)."""
    _SENT.set(False)


def mark_sent() -> None:
    """The current call has passed its limiters (it goes to the endpoint)."""
    _SENT.set(True)


def was_sent() -> bool:
    return _SENT.get()
