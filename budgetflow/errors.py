"""The budgetflow error tree.

    BudgetflowError
    ├── UserInputError              a mistake in what the user gave us; fix the input and retry
    │   ├── ConfigError             a bad option, value or combination of options
    │   ├── DatasetError            unknown dataset, missing field, malformed JSONL line
    │   └── ModelFileError          the model file is missing or cannot be loaded
    └── RuntimeFailure              something failed while running; the input may be fine
        ├── BackendError            a backend could not produce completions
        │   ├── EndpointUnreachable connection refused, DNS failure, connection dropped
        │   ├── BackendTimeout      no complete reply within the timeout
        │   ├── MalformedReply      the reply could not be parsed or broke the API's shape
        │   ├── CircuitOpen         a circuit breaker is resting this backend after repeated failures
        │   └── HTTPStatusError     the endpoint answered with a non-2xx status
        │       ├── BadRequest          400, 404, 405, 413, 422 (not retryable)
        │       ├── AuthenticationFailed 401, 403
        │       ├── RateLimited         429 (carries retry_after)
        │       └── ServerError         5xx
        └── BudgetExceeded          a request could not be reserved within the budget

Errors are classified by type or HTTP status code, never by message text. Constructors only store
their arguments: no I/O, no logging.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from budgetflow.usage import Usage

__all__ = [
    "AuthenticationFailed",
    "BackendError",
    "BackendTimeout",
    "BadRequest",
    "BudgetExceeded",
    "BudgetflowError",
    "CircuitOpen",
    "ConfigError",
    "DatasetError",
    "EndpointUnreachable",
    "HTTPStatusError",
    "MalformedReply",
    "ModelFileError",
    "RateLimited",
    "RuntimeFailure",
    "ServerError",
    "UserInputError",
    "error_for_status",
]


class BudgetflowError(Exception):
    """Base class of every error budgetflow raises on purpose."""


class UserInputError(BudgetflowError):
    """The user's input is wrong; the message says what and where."""


class ConfigError(UserInputError):
    """An option, value or combination of options is invalid."""


class DatasetError(UserInputError):
    """A dataset is unknown, lacks a field, or has a malformed line."""


class ModelFileError(UserInputError):
    """A model file is missing or cannot be loaded."""


class RuntimeFailure(BudgetflowError):
    """Something failed while running."""


class BackendError(RuntimeFailure):
    """A backend could not produce the completions it was asked for.

    `usage` is what the backend reports having spent before failing, when it reports anything.
    """

    def __init__(self, message: str, *, backend: str = "", usage: Usage | None = None) -> None:
        super().__init__(message)
        self.backend = backend
        self.usage = usage

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again may succeed."""
        return False


class EndpointUnreachable(BackendError):
    """The endpoint could not be reached or dropped the connection."""

    @property
    def retryable(self) -> bool:
        return True


class BackendTimeout(BackendError):
    """No complete reply arrived within the timeout."""

    @property
    def retryable(self) -> bool:
        return True


class MalformedReply(BackendError):
    """The reply could not be parsed or does not have the API's shape."""

    @property
    def retryable(self) -> bool:
        return True


class CircuitOpen(BackendError):
    """A circuit breaker is resting this backend after repeated failures (not retryable: move on)."""


class HTTPStatusError(BackendError):
    """The endpoint answered with a non-2xx status; `status` and `body` say what it said."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: str = "",
        backend: str = "",
        usage: Usage | None = None,
    ) -> None:
        super().__init__(message, backend=backend, usage=usage)
        self.status = status
        self.body = body

    @property
    def retryable(self) -> bool:
        return self.status in (408, 409) or self.status >= 500


class BadRequest(HTTPStatusError):
    """The endpoint rejected the request itself (4xx other than auth and rate limits)."""


class AuthenticationFailed(HTTPStatusError):
    """The endpoint rejected the credentials (401/403)."""


class RateLimited(HTTPStatusError):
    """The endpoint asked us to slow down (429); `retry_after` is in seconds when it said."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        body: str = "",
        backend: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body, backend=backend)
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return True


class ServerError(HTTPStatusError):
    """The endpoint failed (5xx)."""


class BudgetExceeded(RuntimeFailure):
    """A request could not be reserved within the budget; the message carries the numbers."""

    def __init__(self, message: str, *, limit_name: str = "", limit: float = 0, needed: float = 0) -> None:
        super().__init__(message)
        self.limit_name = limit_name
        self.limit = limit
        self.needed = needed


def error_for_status(
    status: int, body: str, *, backend: str, retry_after: float | None = None
) -> HTTPStatusError:
    """The typed error for an HTTP status code (classification by code, never by text)."""
    snippet = body[:500]
    message = f"{backend}: HTTP {status}: {snippet}" if snippet else f"{backend}: HTTP {status}"
    if status == 429:
        return RateLimited(message, body=body, backend=backend, retry_after=retry_after)
    if status in (401, 403):
        return AuthenticationFailed(message, status=status, body=body, backend=backend)
    if status >= 500:
        return ServerError(message, status=status, body=body, backend=backend)
    if status in (408, 409):
        return HTTPStatusError(message, status=status, body=body, backend=backend)
    return BadRequest(message, status=status, body=body, backend=backend)
