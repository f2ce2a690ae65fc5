"""Allocators: pure planning over observed evidence (no backends, no datasets, no grading).

`make_allocator(name, ...)` builds one by name; `register_allocator` adds your own; the live
loops and the bank simulator in `budgetflow.evaluate` run them."""

from budgetflow.allocate.base import Allocator, AllocatorBase, AllocatorOptions, leader_odds, marginal_gain
from budgetflow.allocate.registry import ALLOCATORS, allocator_names, make_allocator, register_allocator
from budgetflow.answers.voting import Evidence, Voting, final_answer

__all__ = [
    "ALLOCATORS",
    "Allocator",
    "AllocatorBase",
    "AllocatorOptions",
    "Evidence",
    "Voting",
    "allocator_names",
    "final_answer",
    "leader_odds",
    "make_allocator",
    "marginal_gain",
    "register_allocator",
]
