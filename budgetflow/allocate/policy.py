"""A policy: the allocator, its votes and its constants, chosen per budget and kept in a file.

`budgetflow bank tune` chooses one `Policy` for each budget (samples per question) on a user's
own calibration bank and writes a `PolicyTable`; `budgetflow eval --policy FILE` applies the
plan for the budget it runs at. A policy may also fix the sampling temperature (when it was
chosen among banks recorded at several).

    {"budgetflow_policy": 1,
     "plans": {"4": {"allocator": "online", "use_greedy": true, "verifier_weight": null, ...}},
     "calibration": {...what it was chosen on, and how it scored there, cross-fitted}}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from budgetflow.allocate.base import Allocator
from budgetflow.allocate.registry import make_allocator
from budgetflow.errors import ConfigError

__all__ = ["POLICY_FORMAT", "Policy", "PolicyTable"]

POLICY_FORMAT = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Everything an allocation run needs besides its budget."""

    allocator: str = "uniform"
    use_greedy: bool = True
    #: How many samples the greedy answer's vote weighs (with `use_greedy`).
    greedy_weight: float = 1.0
    confidence_weight: float | None = None
    verifier_weight: float | None = None
    stop_confidence: float | None = None
    hopeless_after: int = 4
    temperature: float | None = None

    def build(self, *, cap: int = 16) -> Allocator:
        """The allocator this policy describes (`cap`: most samples per question)."""
        return make_allocator(
            self.allocator,
            use_greedy=self.use_greedy,
            greedy_weight=self.greedy_weight,
            cap=cap,
            confidence_weight=self.confidence_weight,
            verifier_weight=self.verifier_weight,
            stop_confidence=self.stop_confidence,
            hopeless_after=self.hopeless_after,
        )

    @property
    def label(self) -> str:
        """`online+greedy+verifier(3)`: short, for tables."""
        parts = [self.allocator]
        if self.allocator == "early_stop":
            parts[0] += f"({self.stop_confidence or 0.85:g}/{self.hopeless_after})"
        if self.use_greedy:
            parts.append("greedy" if self.greedy_weight == 1 else f"greedy({self.greedy_weight:g})")
        if self.confidence_weight is not None:
            parts.append(f"confidence({self.confidence_weight:g})")
        if self.verifier_weight is not None:
            parts.append(f"verifier({self.verifier_weight:g})")
        if self.temperature is not None:
            parts.append(f"T={self.temperature:g}")
        return "+".join(parts)

    @classmethod
    def from_json(cls, data: Any, where: str) -> Policy:
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a policy must be a JSON object, got {data!r:.80}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{where}: unknown policy field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        try:
            policy = cls(**data)
            policy.build()  # the allocator name and constants are checked here
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        return policy


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyTable:
    """One policy per budget (average samples per question), and what they were chosen on."""

    plans: dict[int, Policy]
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.plans:
            raise ConfigError("a policy table needs at least one plan")

    def for_budget(self, samples_per_question: float) -> Policy:
        """The plan for the largest budget not above `samples_per_question` (else the smallest)."""
        fitting = [budget for budget in self.plans if budget <= samples_per_question]
        return self.plans[max(fitting) if fitting else min(self.plans)]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "budgetflow_policy": POLICY_FORMAT,
            "plans": {str(budget): asdict(policy) for budget, policy in sorted(self.plans.items())},
            "calibration": self.calibration,
        }
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> PolicyTable:
        """A table written by `save`; every error names the file and the field."""
        where = f"--policy {str(path)!r}"
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read it ({exc.strerror})") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not JSON (line {exc.lineno}: {exc.msg})") from None
        if not isinstance(document, dict) or document.get("budgetflow_policy") != POLICY_FORMAT:
            raise ConfigError(f"{where}: not a budgetflow policy file (written by `budgetflow bank tune`)")
        plans = document.get("plans")
        if not isinstance(plans, dict) or not plans:
            raise ConfigError(f"{where}: 'plans' must map budgets to policies")
        table: dict[int, Policy] = {}
        for budget, policy in plans.items():
            if not str(budget).isdigit() or int(budget) < 1:
                raise ConfigError(f"{where}: plan key {budget!r} is not a budget in samples per question")
            table[int(budget)] = Policy.from_json(policy, f"{where}, plans.{budget}")
        return cls(plans=table, calibration=dict(document.get("calibration") or {}))
