"""The backend factory: an endpoint described as data (`EndpointSpec`), opened by `open_backend`.

The CLI, the bank commands and (later) the server all build backends here, so "embedded" and
"openai" mean the same everywhere. `EndpointSpec.from_lane("BASE_URL=MODEL", template=spec)`
describes one more OpenAI-compatible endpoint with the same key variable, timeout and limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from budgetflow.backends.base import Backend
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.errors import ConfigError
from budgetflow.runtime.context import EndpointLimits

__all__ = ["BACKEND_KINDS", "EndpointSpec", "open_backend"]

BackendKind = Literal["embedded", "openai"]
BACKEND_KINDS: tuple[BackendKind, ...] = ("embedded", "openai")


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointSpec:
    """One endpoint: the embedded model (optionally another GGUF file, thread count, batching) or an
    OpenAI-compatible server (base URL, model, the environment variable holding its key, the
    per-request timeout), and the limits a `RunContext` applies to it."""

    kind: BackendKind = "embedded"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    model_path: Path | None = None
    threads: int | None = None
    batching: Literal["continuous", "serial"] = "continuous"
    limits: EndpointLimits = field(default_factory=EndpointLimits)

    def __post_init__(self) -> None:
        if self.kind not in BACKEND_KINDS:
            raise ConfigError(f"unknown backend {self.kind!r}; choose {' or '.join(BACKEND_KINDS)}")
        if self.kind == "openai" and not (self.base_url and self.model):
            raise ConfigError("an openai backend needs a base URL and a model (--base-url, --model)")
        if self.timeout <= 0:
            raise ConfigError(f"the request timeout must be > 0 seconds, got {self.timeout}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if self.batching not in ("continuous", "serial"):
            raise ConfigError(f"--batching must be continuous or serial, got {self.batching!r}")

    @classmethod
    def from_lane(cls, text: str, *, template: EndpointSpec) -> EndpointSpec:
        """`BASE_URL=MODEL`: another OpenAI-compatible endpoint with `template`'s key variable,
        timeout and limits."""
        base_url, _, model = text.rpartition("=")
        if not base_url or not model:
            raise ConfigError(f"a lane must be BASE_URL=MODEL, got {text!r}")
        return replace(template, kind="openai", base_url=base_url, model=model, model_path=None, threads=None)


def open_backend(spec: EndpointSpec) -> Backend:
    """The backend `spec` describes (not yet entered: use it as `async with`)."""
    if spec.kind == "embedded":
        from budgetflow.backends.embedded import EmbeddedBackend  # loads llama.cpp: only when asked

        return EmbeddedBackend(model_path=spec.model_path, threads=spec.threads, batching=spec.batching)
    assert spec.base_url is not None and spec.model is not None
    return OpenAICompatibleBackend(
        base_url=spec.base_url, model=spec.model, api_key_env=spec.api_key_env, timeout=spec.timeout
    )
