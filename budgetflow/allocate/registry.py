"""Allocators by name. Adding one is a class with a `from_options` (see `policies.py`) plus one
line in `_BUILT_IN`; code outside the package adds its own with `register_allocator`."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from budgetflow.allocate.base import Allocator, AllocatorOptions
from budgetflow.allocate.policies import (
    ComputeOptimalAllocator,
    DeadlineAllocator,
    DifficultyAllocator,
    EarlyStopAllocator,
    OnlineAllocator,
    UniformAllocator,
)
from budgetflow.errors import ConfigError

__all__ = ["ALLOCATORS", "AllocatorFactory", "allocator_names", "make_allocator", "register_allocator"]

#: Builds an allocator from the options a user set.
AllocatorFactory = Callable[[AllocatorOptions], Allocator]

_BUILT_IN: dict[str, AllocatorFactory] = {
    "uniform": UniformAllocator.from_options,
    "difficulty": DifficultyAllocator.from_options,
    "online": OnlineAllocator.from_options,
    "early_stop": EarlyStopAllocator.from_options,
    "compute_optimal": ComputeOptimalAllocator.from_options,
    "deadline": DeadlineAllocator.from_options,
}
_REGISTRY: dict[str, AllocatorFactory] = dict(_BUILT_IN)

#: The built-in allocators' names.
ALLOCATORS: tuple[str, ...] = tuple(_BUILT_IN)


def register_allocator(name: str, factory: AllocatorFactory) -> None:
    """Make `name` usable wherever an allocator is named (`make_allocator`, `--allocate`)."""
    if not name.isidentifier():
        raise ConfigError(f"an allocator name must be a Python identifier, got {name!r}")
    if name in _BUILT_IN:
        raise ConfigError(f"{name!r} is a built-in allocator; choose another name")
    _REGISTRY[name] = factory


def allocator_names() -> tuple[str, ...]:
    """Every allocator that can be named now: the built-ins, then those registered."""
    return tuple(_REGISTRY)


def make_allocator(
    name: str,
    *,
    use_greedy: bool = False,
    cap: int = 16,
    stop_confidence: float | None = None,
    hopeless_after: int = 4,
    bin_targets: tuple[int, ...] | None = None,
    quota_factor: float | None = None,
    confidence_weight: float | None = None,
    greedy_weight: float = 1.0,
    verifier_weight: float | None = None,
) -> Allocator:
    """An allocator by name, with the options of `AllocatorOptions` (each uses what applies to it);
    `compute_optimal` needs `bin_targets` (from a calibration table)."""
    factory = _REGISTRY.get(name)
    if factory is None:
        close = difflib.get_close_matches(name, _REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown allocator {name!r}{hint} (known: {', '.join(_REGISTRY)})")
    options = AllocatorOptions(
        use_greedy=use_greedy,
        cap=cap,
        stop_confidence=stop_confidence,
        hopeless_after=hopeless_after,
        bin_targets=bin_targets,
        quota_factor=quota_factor,
        confidence_weight=confidence_weight,
        greedy_weight=greedy_weight,
        verifier_weight=verifier_weight,
    )
    return factory(options)
