"""Token usage: the one value both errors and the core types carry (the lowest layer)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_USAGE", "Usage"]


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens spent. Prompt tokens count once per request, completion tokens once per sample."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens
        )


#: Zero usage, shared (a `Usage` is immutable): the default wherever nothing was spent.
NO_USAGE = Usage()
