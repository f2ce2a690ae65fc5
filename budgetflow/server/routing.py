"""Which strategy a request asked for: a model-name prefix, OptiLLM's slugs, or `extra_body`.

* `vote-8/embedded`, `early_stop-16/<model>`, `best_of_n-4/<model>`, `single/<model>`,
  `adaptive/<model>`: budgetflow's own prefix, `<strategy>[-<n>]/`, before the upstream model;
* `self_consistency-<model>`, `bon-<model>`, `mcts-<model>`, `none-<model>`: OptiLLM's slugs,
  mapped to budgetflow's equivalent; its other approaches (`moa-`, `rto-`, `z3-`, …) are refused
  with the alternatives;
* `{"budgetflow": {"strategy": "vote@8", "budget_tokens": 4000, "answer": "number"}}` in the
  request body (the openai SDK's `extra_body`) overrides the prefix.

A model name with no known prefix is the upstream model itself, under `single`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, get_args

from budgetflow.answers.extract import AnswerKind
from budgetflow.errors import ConfigError
from budgetflow.strategies.parse import STRATEGY_NAMES, parse_strategy

__all__ = ["OPTILLM_EQUIVALENTS", "ServedStrategy", "route"]

#: `adaptive`: sample in small batches and stop once the leading answer is settled.
ADAPTIVE_SPEC: Final = "early_stop@16"

#: OptiLLM approach slug -> budgetflow strategy spec (its default sample counts).
OPTILLM_EQUIVALENTS: Final = {
    "self_consistency": "vote@5",
    "bon": "best_of_n@3",
    "mcts": "beam@2",
    "none": "single",
}
#: OptiLLM approaches budgetflow has no equivalent of, and what to use instead.
OPTILLM_UNSUPPORTED: Final = (
    "moa",
    "rto",
    "z3",
    "leap",
    "re2",
    "cot_reflection",
    "plansearch",
    "pvg",
    "rstar",
    "cot_decoding",
    "entropy_decoding",
    "mars",
    "thinkdeeper",
    "autothink",
    "deepconf",
)
_OPTIONS: Final = ("strategy", "budget_tokens", "answer")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServedStrategy:
    """What one request runs: the strategy spec (`vote@8`), the upstream model, an explicit
    per-request token budget, and how answers are read out of samples for voting."""

    spec: str
    upstream_model: str
    budget_tokens: int | None = None
    answer: AnswerKind = "text"

    @property
    def single(self) -> bool:
        return self.spec == "single"


def route(model: object, options: object = None) -> ServedStrategy:
    """The strategy and upstream model for a request's `model` field and `budgetflow` options;
    `ConfigError` naming the problem for an unknown strategy, slug or option."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigError("'model' must be a non-empty string, e.g. 'vote-8/embedded'")
    spec, upstream = _split_model(model.strip())
    served = ServedStrategy(spec=spec, upstream_model=upstream)
    if options is not None:
        served = _with_options(served, options)
    parse_strategy(served.spec)  # an unknown strategy is a ConfigError now, not mid-request
    return served


def _split_model(model: str) -> tuple[str, str]:
    prefix, slash, rest = model.partition("/")
    if slash and rest:
        spec = _prefix_spec(prefix)
        if spec is not None:
            return spec, rest
    approach, dash, rest = model.partition("-")
    if dash and rest:
        if approach in OPTILLM_EQUIVALENTS:
            return OPTILLM_EQUIVALENTS[approach], rest
        if approach in OPTILLM_UNSUPPORTED:
            raise ConfigError(
                f"OptiLLM's {approach!r} approach has no budgetflow equivalent; use one of "
                f"{', '.join(f'{slug}-' for slug in OPTILLM_EQUIVALENTS)} or budgetflow's "
                f"prefixes ({', '.join(f'{name}-N/' for name in STRATEGY_NAMES)}, adaptive/)"
            )
    return "single", model


def _prefix_spec(prefix: str) -> str | None:
    """`vote-8` -> `vote@8`, `single` -> `single`, `adaptive` -> the adaptive spec; None when the
    prefix is not a strategy (it is part of the model's own name, as in `meta-llama/…`)."""
    if prefix == "adaptive":
        return ADAPTIVE_SPEC
    name, dash, count = prefix.rpartition("-")
    if dash and name in STRATEGY_NAMES and count.isdigit():
        return f"{name}@{count}"
    if prefix in STRATEGY_NAMES:
        return prefix
    if dash and name in STRATEGY_NAMES:
        raise ConfigError(f"strategy prefix {prefix!r}: the part after '-' must be a whole number")
    return None


def _with_options(served: ServedStrategy, options: object) -> ServedStrategy:
    if not isinstance(options, dict):
        raise ConfigError('\'budgetflow\' must be an object, e.g. {"strategy": "vote@8"}')
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown budgetflow option {unknown[0]!r}; known: {', '.join(_OPTIONS)}")
    spec = options.get("strategy", served.spec)
    if not isinstance(spec, str):
        raise ConfigError("budgetflow.strategy must be a string such as 'vote@8'")
    return ServedStrategy(
        spec=spec,
        upstream_model=served.upstream_model,
        budget_tokens=_budget(options.get("budget_tokens")),
        answer=_answer_kind(options.get("answer", "text")),
    )


def _budget(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"budgetflow.budget_tokens must be a whole number >= 1, got {value!r}")
    return value


def _answer_kind(value: Any) -> AnswerKind:
    kinds = get_args(AnswerKind)
    if value not in kinds:
        raise ConfigError(f"budgetflow.answer must be one of {', '.join(kinds)}, got {value!r}")
    return value  # type: ignore[no-any-return]
