"""`budgetflow eval`'s options in groups (one per `--help` panel), each turning itself into the part
of the run configuration it decides; `eval_config` joins them into one `EvalConfig`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from budgetflow.allocate import Allocator, make_allocator
from budgetflow.allocate.policy import PolicyTable
from budgetflow.budget import Budget
from budgetflow.cli_options import (
    CONFIDENCE_WEIGHT_DEFAULT,
    GREEDY_EVIDENCE_DEFAULT,
    AllocatorOpt,
    AnswerFieldOpt,
    BackendConcurrencyOpt,
    BatchingOpt,
    BudgetCostOpt,
    BudgetSamplesOpt,
    BudgetTokensOpt,
    ConcurrencyOpt,
    ConfidenceWeightOpt,
    DatasetOpt,
    DeadlineOpt,
    FirstKOpt,
    GreedyEvidenceOpt,
    GreedyVoteWeightOpt,
    IdFieldOpt,
    LaneOpt,
    LimitOpt,
    MaxAttemptsOpt,
    MaxTokensOpt,
    OutputOpt,
    PlotsOpt,
    PolicyOpt,
    PriceOpt,
    PromptEnsembleOpt,
    PromptTemplateOpt,
    QuestionBudgetOpt,
    QuestionFieldOpt,
    RequestsPerMinuteOpt,
    SeedOpt,
    StopBatchOpt,
    StopConfidenceOpt,
    StopMarginOpt,
    StopRuleOpt,
    StrategyOpt,
    SystemOpt,
    TemperatureOpt,
    TokensPerMinuteOpt,
    TopPOpt,
    VerifierWeightOpt,
    parse_prices,
)
from budgetflow.cli_trace import OtelOpt
from budgetflow.errors import ConfigError
from budgetflow.evaluate.datasets import FieldMap, PromptSpec, split_fields
from budgetflow.evaluate.session import DatasetSpec, EvalConfig
from budgetflow.runtime.context import EndpointLimits, RetryPolicy
from budgetflow.runtime.endpoints import EndpointSpec
from budgetflow.strategies.base import Strategy
from budgetflow.strategies.parse import StrategyOptions, parse_strategy
from budgetflow.types import SamplingParams

__all__ = [
    "AllocationOptions",
    "BudgetOptions",
    "DatasetOptions",
    "OutputOptions",
    "SamplingOptions",
    "ServingOptions",
    "confidence_weight_for",
    "eval_config",
]

#: The temperature of sampled strategies and allocators when --temperature is not given.
DEFAULT_TEMPERATURE = 0.5


@dataclass(frozen=True)
class DatasetOptions:
    dataset: DatasetOpt = "chain_sum"
    limit: LimitOpt = 50
    seed: SeedOpt = 0
    question_field: QuestionFieldOpt = None
    answer_field: AnswerFieldOpt = None
    id_field: IdFieldOpt = None
    prompt_template: PromptTemplateOpt = None
    system: SystemOpt = None

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.dataset, limit=self.limit, seed=self.seed, fields=self._fields(), prompt=self._prompt()
        )

    def _prompt(self) -> PromptSpec | None:
        if self.prompt_template is None:
            return None if self.system is None else PromptSpec(system=self.system)
        return PromptSpec.from_file(self.prompt_template, system=self.system)

    def _fields(self) -> FieldMap | None:
        if self.question_field is None and self.answer_field is None and self.id_field is None:
            return None
        return FieldMap(
            question=split_fields(self.question_field) if self.question_field else ("question",),
            answer=self.answer_field or "answer",
            id=self.id_field,
        )


@dataclass(frozen=True)
class SamplingOptions:
    strategy: StrategyOpt = None
    temperature: TemperatureOpt = None
    top_p: TopPOpt = 1.0
    max_tokens: MaxTokensOpt = 48
    concurrency: ConcurrencyOpt = 4
    first_k: FirstKOpt = 1
    stop_batch: StopBatchOpt = 2
    stop_rule: StopRuleOpt = "beta"
    stop_confidence: StopConfidenceOpt = 0.95
    stop_margin: StopMarginOpt = 3

    def strategies(self, *, allocating: bool) -> tuple[Strategy, ...]:
        """--strategy specs; without any, single and vote@8 (none when only allocators run)."""
        default = [] if allocating else ["single", "vote@8"]
        choice = StrategyOptions(
            temperature=self.temperature,
            keep_first=self.first_k,
            stop_batch=self.stop_batch,
            stop_rule=self._stop_rule(),
            stop_confidence=self.stop_confidence,
            stop_margin=self.stop_margin,
        )
        return tuple(parse_strategy(spec, options=choice) for spec in (self.strategy or default))

    def params(self, seed: int) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, top_p=self.top_p, seed=seed)

    def _stop_rule(self) -> Literal["beta", "margin"]:
        if self.stop_rule == "beta":
            return "beta"
        if self.stop_rule == "margin":
            return "margin"
        raise ConfigError(f"--stop-rule must be beta or margin, got {self.stop_rule!r}")


@dataclass(frozen=True)
class BudgetOptions:
    budget_tokens: BudgetTokensOpt = None
    budget_cost: BudgetCostOpt = None
    price: PriceOpt = None
    question_budget_tokens: QuestionBudgetOpt = None
    deadline_seconds: DeadlineOpt = None

    def run_budget(self) -> Budget | None:
        if self.budget_tokens is None and self.deadline_seconds is None and self.budget_cost is None:
            return None
        return Budget(
            total_tokens=self.budget_tokens, deadline_seconds=self.deadline_seconds, cost=self.budget_cost
        )

    def question_budget(self) -> Budget | None:
        tokens = self.question_budget_tokens
        return None if tokens is None else Budget(total_tokens=tokens)


@dataclass(frozen=True)
class AllocationOptions:
    allocator: AllocatorOpt = None
    policy: PolicyOpt = None
    budget_samples: BudgetSamplesOpt = None
    greedy_evidence: GreedyEvidenceOpt = GREEDY_EVIDENCE_DEFAULT
    greedy_weight: GreedyVoteWeightOpt = 1.0
    confidence_weight: ConfidenceWeightOpt = None
    verifier_weight: VerifierWeightOpt = None
    lane: LaneOpt = None
    prompt_ensemble: PromptEnsembleOpt = False

    @property
    def allocating(self) -> bool:
        return bool(self.allocator) or self.policy is not None

    def allocators(self, backend: str) -> tuple[Allocator, ...]:
        weight = confidence_weight_for(self.confidence_weight, backend)
        return tuple(
            make_allocator(
                name,
                use_greedy=self.greedy_evidence,
                greedy_weight=self.greedy_weight,
                confidence_weight=weight,
                verifier_weight=self.verifier_weight,
            )
            for name in self.allocator or []
        )

    def lanes(self, template: EndpointSpec) -> tuple[EndpointSpec, ...]:
        return tuple(EndpointSpec.from_lane(text, template=template) for text in self.lane or [])

    def policy_table(self, temperature: float | None) -> PolicyTable | None:
        """The policy file; an explicit --temperature overrides the temperatures it fixes."""
        if self.policy is None:
            return None
        table = PolicyTable.load(self.policy)
        if temperature is None:
            return table
        return replace(table, plans={b: replace(p, temperature=None) for b, p in table.plans.items()})


def confidence_weight_for(weight: float | None, backend: str) -> float | None:
    """--confidence-weight, else the default where the backend surely reports log-probabilities;
    0 means plain majority."""
    if weight is None:
        return CONFIDENCE_WEIGHT_DEFAULT if backend == "embedded" else None
    return weight or None


@dataclass(frozen=True)
class ServingOptions:
    batching: BatchingOpt = "continuous"
    backend_concurrency: BackendConcurrencyOpt = 64
    requests_per_minute: RequestsPerMinuteOpt = None
    tokens_per_minute: TokensPerMinuteOpt = None
    max_attempts: MaxAttemptsOpt = 4

    def limits(self) -> EndpointLimits:
        return EndpointLimits(
            concurrency=self.backend_concurrency,
            requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute,
            retry=RetryPolicy(max_attempts=self.max_attempts),
        )


@dataclass(frozen=True)
class OutputOptions:
    output: OutputOpt = Path("results/eval.json")
    plots: PlotsOpt = True
    otel_endpoint: OtelOpt = None

    def check(self) -> None:
        """Refuse an --output that cannot be written before anything runs (not after the run)."""
        output = self.output
        if output.is_dir():
            raise ConfigError(
                f"--output {str(output)!r} is a directory; give a file path such as {output}/eval.json"
            )
        if output.parent.exists() and not output.parent.is_dir():
            raise ConfigError(f"--output {str(output)!r}: {str(output.parent)!r} is not a directory")


def eval_config(
    data: DatasetOptions,
    sampling: SamplingOptions,
    budgets: BudgetOptions,
    allocation: AllocationOptions,
    endpoint: EndpointSpec,
) -> EvalConfig:
    """The one frozen configuration the library runs."""
    return EvalConfig(
        dataset=data.spec(),
        strategies=sampling.strategies(allocating=allocation.allocating),
        allocators=allocation.allocators(endpoint.kind),
        budget_samples=tuple(allocation.budget_samples or ()),
        sampling=sampling.params(data.seed),
        temperature=DEFAULT_TEMPERATURE if sampling.temperature is None else sampling.temperature,
        concurrency=sampling.concurrency,
        budget=budgets.run_budget(),
        question_budget=budgets.question_budget(),
        prices=parse_prices(budgets.price or []),
        endpoint=endpoint,
        lanes=allocation.lanes(endpoint),
        ensemble=allocation.prompt_ensemble,
        policy=allocation.policy_table(sampling.temperature),
    )
