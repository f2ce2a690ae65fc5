"""Command-line options, declared once: `eval` and the `bank` commands share these.

Each is an `Annotated` type carrying its help text, its panel in `--help` and its range, so a
bad value is refused by the parser with the flag's own name (`--budget-tokens: -1 is not in the
range x>=1`), before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import typer

from budgetflow.budget import Price
from budgetflow.errors import ConfigError
from budgetflow.runtime.context import EndpointLimits
from budgetflow.runtime.endpoints import BackendKind, EndpointSpec

__all__ = [
    "CONFIDENCE_WEIGHT_DEFAULT",
    "DATASET",
    "GREEDY_EVIDENCE_DEFAULT",
    "OUTPUT",
    "SAMPLING",
    "AllocatorOpt",
    "AnswerFieldOpt",
    "ApiKeyEnvOpt",
    "BackendConcurrencyOpt",
    "BackendOpt",
    "BaseUrlOpt",
    "BatchingOpt",
    "BudgetCostOpt",
    "BudgetSamplesOpt",
    "BudgetTokensOpt",
    "ConcurrencyOpt",
    "ConfidenceWeightOpt",
    "DatasetOpt",
    "DeadlineOpt",
    "EndpointOptions",
    "FirstKOpt",
    "GreedyEvidenceOpt",
    "GreedyVoteWeightOpt",
    "IdFieldOpt",
    "LaneOpt",
    "LimitOpt",
    "MaxAttemptsOpt",
    "MaxTokensOpt",
    "ModelOpt",
    "ModelPathOpt",
    "OutputOpt",
    "PlotsOpt",
    "PolicyOpt",
    "PriceOpt",
    "PromptEnsembleOpt",
    "PromptTemplateOpt",
    "QuestionBudgetOpt",
    "QuestionFieldOpt",
    "RequestsPerMinuteOpt",
    "SeedOpt",
    "StopBatchOpt",
    "StopConfidenceOpt",
    "StopMarginOpt",
    "StopRuleOpt",
    "StrategyOpt",
    "SystemOpt",
    "TemperatureOpt",
    "ThreadsOpt",
    "TimeoutOpt",
    "TokensPerMinuteOpt",
    "TopPOpt",
    "VerifierWeightOpt",
    "endpoint_spec",
    "parse_prices",
    "positive_number",
]


def positive_number(text: str) -> float:
    """A parser for options that must be > 0 (the parser names the flag when this refuses)."""
    value = _number(text)
    if not value > 0:
        raise typer.BadParameter(f"must be > 0, got {text}")
    return value


def _nucleus_mass(text: str) -> float:
    value = _number(text)
    if not 0 < value <= 1:
        raise typer.BadParameter(f"must be in (0, 1], got {text}")
    return value


def _stop_confidence(text: str) -> float:
    value = _number(text)
    if not 0.5 < value < 1:
        raise typer.BadParameter(f"must be in (0.5, 1), got {text}")
    return value


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number") from None


DATASET = "Dataset"
SAMPLING = "Strategies and sampling"
BUDGETS = "Budgets"
ALLOCATION = "Allocation"
BACKEND = "Backend"
OUTPUT = "Output"

STRATEGY_HELP = (
    "Strategy to run; repeat to compare several. `single` (greedy, one sample); `vote@N` "
    "(self-consistency: N samples, majority answer); `first_finish@N` (start N samples, keep the "
    "first --first-k to finish, stop the rest); `early_stop@N` (sample --stop-batch at a time, stop "
    "once the leader is settled, at most N); `best_of_n@N` (N samples scored by an LLM judge); "
    "`prune@N` (N traces, redundant ones stopped); `refine@R` (draft, then R rounds of "
    "check-and-correct); `synthesize@N` (N paths, then one answer that reads them); `outline@N` (N "
    "plans, one path each); `beam@W` (step-level beam search, width W); `nothink:SPEC` (any of these "
    "with the thinking switch off). A name without @N takes its default (`vote` means vote@8). "
    "Default: single and vote@8."
)

# Dataset
DatasetOpt = Annotated[
    str,
    typer.Option(
        rich_help_panel=DATASET,
        help="A built-in dataset name (see `budgetflow datasets`), any reasoning-gym task as "
        "rg:NAME[:key=value,...] (e.g. rg:gcd:max_value=30), or a path to a JSONL file.",
    ),
]
LimitOpt = Annotated[
    int,
    typer.Option(
        min=1, rich_help_panel=DATASET, help="Questions to use (built-in datasets generate this many)."
    ),
]
SeedOpt = Annotated[
    int, typer.Option(rich_help_panel=DATASET, help="Seed for dataset generation and sampling.")
]
QuestionFieldOpt = Annotated[
    str | None,
    typer.Option(
        rich_help_panel=DATASET,
        help="JSONL field(s) holding the question, comma-separated (e.g. Body,Question).",
    ),
]
AnswerFieldOpt = Annotated[
    str | None, typer.Option(rich_help_panel=DATASET, help="JSONL field holding the gold answer.")
]
IdFieldOpt = Annotated[
    str | None, typer.Option(rich_help_panel=DATASET, help="JSONL field holding a question id.")
]
PromptTemplateOpt = Annotated[
    Path | None,
    typer.Option(
        rich_help_panel=DATASET,
        help="File with the prompt to ask each question with; {question} marks where the question "
        "goes (default: the dataset's own prompt).",
    ),
]
SystemOpt = Annotated[
    str | None, typer.Option(rich_help_panel=DATASET, help="System message sent before each question.")
]

# Strategies and sampling
StrategyOpt = Annotated[
    list[str] | None, typer.Option("--strategy", "-s", rich_help_panel=SAMPLING, help=STRATEGY_HELP)
]
TemperatureOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0,
        rich_help_panel=SAMPLING,
        help="Sampling temperature of every sampled strategy and allocator (default 0.5: on the built-in "
        "task vote@8 scored 32% at 0.7, 41% at 0.5, 39% at 0.3).",
    ),
]
TopPOpt = Annotated[
    float,
    typer.Option(parser=_nucleus_mass, rich_help_panel=SAMPLING, help="Nucleus sampling mass."),
]
MaxTokensOpt = Annotated[
    int, typer.Option(min=1, rich_help_panel=SAMPLING, help="Most tokens generated per sample.")
]
ConcurrencyOpt = Annotated[
    int, typer.Option(min=1, rich_help_panel=SAMPLING, help="Questions in flight at once.")
]
FirstKOpt = Annotated[
    int,
    typer.Option(min=1, rich_help_panel=SAMPLING, help="first_finish: how many of the first finishers vote."),
]
StopBatchOpt = Annotated[
    int, typer.Option(min=1, rich_help_panel=SAMPLING, help="early_stop: samples drawn per round.")
]
StopRuleOpt = Annotated[
    str,
    typer.Option(
        rich_help_panel=SAMPLING,
        help="early_stop: `beta` (Beta posterior of the leader) or `margin` (vote lead).",
    ),
]
StopConfidenceOpt = Annotated[
    float,
    typer.Option(
        parser=_stop_confidence,
        rich_help_panel=SAMPLING,
        help="early_stop (beta): stop when P(leader is the true majority) reaches this.",
    ),
]
StopMarginOpt = Annotated[
    int,
    typer.Option(
        min=1, rich_help_panel=SAMPLING, help="early_stop (margin): stop when the lead reaches this."
    ),
]

# Budgets
BudgetTokensOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        rich_help_panel=BUDGETS,
        help="Hard cap on total tokens (prompt + completion) per run, paced evenly across the questions. "
        "Every request reserves its worst case first; a question that cannot afford another sample "
        "answers with what it has.",
    ),
]
BudgetCostOpt = Annotated[
    float | None,
    typer.Option(
        min=0.0, rich_help_panel=BUDGETS, help="Hard cap in dollars per run; needs --price for the model."
    ),
]
PriceOpt = Annotated[
    list[str] | None,
    typer.Option(
        rich_help_panel=BUDGETS,
        help="MODEL=PROMPT,COMPLETION in dollars per million tokens, e.g. gpt-4o-mini=0.15,0.6.",
    ),
]
QuestionBudgetOpt = Annotated[
    int | None,
    typer.Option(min=1, rich_help_panel=BUDGETS, help="Hard cap on total tokens for each question."),
]
DeadlineOpt = Annotated[
    float | None,
    typer.Option(
        parser=positive_number,
        rich_help_panel=BUDGETS,
        help="Wall-clock limit per run; requests still running then are cancelled.",
    ),
]

# Allocation
AllocatorOpt = Annotated[
    list[str] | None,
    typer.Option(
        rich_help_panel=ALLOCATION,
        help="Also run a budget allocator across the questions (repeatable): uniform, difficulty, online, "
        "early_stop, deadline. Needs --budget-samples. Without --strategy, only allocators run.",
    ),
]
BudgetSamplesOpt = Annotated[
    list[int] | None,
    typer.Option(
        min=1,
        rich_help_panel=ALLOCATION,
        help="Total samples (all questions together) for --allocator runs; repeat to sweep budgets.",
    ),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(
        rich_help_panel=ALLOCATION,
        help="A policy file from `budgetflow bank tune`: run its plan for each --budget-samples "
        "(allocator, votes, greedy evidence, temperature unless --temperature is given).",
    ),
]
#: Allocators' defaults without a policy file, chosen leave-one-bank-out on five banks
#: (benchmarks/policies.py): the greedy answer as evidence and, where the backend reports
#: log-probabilities (the embedded model), confidence-weighted votes.
GREEDY_EVIDENCE_DEFAULT = True
CONFIDENCE_WEIGHT_DEFAULT = 10.0
GreedyEvidenceOpt = Annotated[
    bool,
    typer.Option(
        rich_help_panel=ALLOCATION,
        help="Allocators spend one sample per question on a greedy answer that votes (the default: it "
        "helped on every held-out bank of benchmarks/policies.py).",
    ),
]
GreedyVoteWeightOpt = Annotated[
    float,
    typer.Option(
        "--greedy-weight",
        parser=positive_number,
        rich_help_panel=ALLOCATION,
        help="How many samples the greedy answer's vote weighs, with greedy evidence (`bank tune` "
        "chooses 1 or 4: 4 where greedy decoding beats noisy samples).",
    ),
]
ConfidenceWeightOpt = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=ALLOCATION,
        help="Allocators weigh each vote by exp(B x its mean token log-probability), asking the backend for "
        "logprobs, and a sure greedy answer lowers its question's priority. 0: plain majority. Default: "
        "10 on the embedded model (chosen leave-one-bank-out, benchmarks/policies.py), plain majority "
        "on an endpoint (not every server returns logprobs).",
    ),
]
VerifierWeightOpt = Annotated[
    float | None,
    typer.Option(
        rich_help_panel=ALLOCATION,
        help="Allocators weigh each vote by exp(V x the model's log-probability of stating its answer) (a "
        "likelihood verifier: prompt tokens only, on the main backend, embedded) and spend where the "
        "verifier doubts the leading answer (3 worked on the embedded model; see benchmarks/allocation.py).",
    ),
]
LaneOpt = Annotated[
    list[str] | None,
    typer.Option(
        rich_help_panel=ALLOCATION,
        help="Another OpenAI-compatible backend for --allocator deadline with --deadline-seconds, as "
        "BASE_URL=MODEL (repeatable): the planner then picks backend, question and batch size for every "
        "draw, one request in flight per backend, under one budget.",
    ),
]
PromptEnsembleOpt = Annotated[
    bool,
    typer.Option(
        rich_help_panel=ALLOCATION,
        help="Allocators spread each question's samples over its alternative prompts (the built-in tasks "
        "have four few-shot variants), so errors one prompt's wording causes do not all vote together; "
        "the greedy answer keeps the question's own prompt.",
    ),
]

# Backend
BackendOpt = Annotated[
    str,
    typer.Option(
        rich_help_panel=BACKEND,
        help="`embedded` (SmolLM2-135M-Instruct, local) or `openai` (any compatible endpoint).",
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        rich_help_panel=BACKEND, help="API root for --backend openai, e.g. http://127.0.0.1:8000/v1."
    ),
]
ModelOpt = Annotated[
    str | None, typer.Option(rich_help_panel=BACKEND, help="Model name sent to --backend openai.")
]
ApiKeyEnvOpt = Annotated[
    str,
    typer.Option(
        rich_help_panel=BACKEND, help="Environment variable holding the API key (--backend openai)."
    ),
]
TimeoutOpt = Annotated[
    float,
    typer.Option(
        parser=positive_number, rich_help_panel=BACKEND, help="Seconds per HTTP request (--backend openai)."
    ),
]
ModelPathOpt = Annotated[
    Path | None,
    typer.Option(
        rich_help_panel=BACKEND, help="A GGUF file for --backend embedded (default: the shipped SmolLM2)."
    ),
]
ThreadsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        rich_help_panel=BACKEND,
        help="llama.cpp threads for --backend embedded (default: 1 on 2-CPU machines).",
    ),
]
BatchingOpt = Annotated[
    str,
    typer.Option(
        rich_help_panel=BACKEND,
        metavar="MODE",
        help="--backend embedded: 'continuous' (concurrent requests share decode steps; faster) or "
        "'serial' (one request at a time; a seeded request's text never depends on what else runs).",
    ),
]
BackendConcurrencyOpt = Annotated[
    int,
    typer.Option(
        min=1,
        rich_help_panel=BACKEND,
        help="Requests in flight on the backend at once, nested calls (judges) included.",
    ),
]
RequestsPerMinuteOpt = Annotated[
    float | None,
    typer.Option(
        parser=positive_number,
        rich_help_panel=BACKEND,
        help="Rate limit: requests per minute to the backend.",
    ),
]
TokensPerMinuteOpt = Annotated[
    float | None,
    typer.Option(
        parser=positive_number,
        rich_help_panel=BACKEND,
        help="Rate limit: worst-case tokens per minute to the backend.",
    ),
]
MaxAttemptsOpt = Annotated[
    int,
    typer.Option(
        min=1,
        rich_help_panel=BACKEND,
        help="Attempts per request for retryable failures (429 with Retry-After, 5xx, timeouts).",
    ),
]

# Output
OutputOpt = Annotated[
    Path,
    typer.Option(
        rich_help_panel=OUTPUT,
        help="Where to write the JSON results (every question, every sample's answer); a Markdown table and "
        "PNG plots (accuracy vs tokens with the Pareto frontier, vs wall time, spend per question) are "
        "written beside it.",
    ),
]
PlotsOpt = Annotated[bool, typer.Option(rich_help_panel=OUTPUT, help="Write the PNG plots beside --output.")]


@dataclass(frozen=True)
class EndpointOptions:
    """Which backend answers: the options every command that sends requests shares."""

    backend: BackendOpt = "embedded"
    base_url: BaseUrlOpt = None
    model: ModelOpt = None
    api_key_env: ApiKeyEnvOpt = "OPENAI_API_KEY"
    timeout: TimeoutOpt = 120.0
    model_path: ModelPathOpt = None
    threads: ThreadsOpt = None

    def spec(self, limits: EndpointLimits | None = None, batching: str = "continuous") -> EndpointSpec:
        return endpoint_spec(
            self.backend,
            self.base_url,
            self.model,
            self.api_key_env,
            self.timeout,
            self.model_path,
            self.threads,
            limits,
            batching,
        )


def endpoint_spec(
    kind: str,
    base_url: str | None,
    model: str | None,
    api_key_env: str,
    timeout: float,
    model_path: Path | None,
    threads: int | None,
    limits: EndpointLimits | None = None,
    batching: str = "continuous",
) -> EndpointSpec:
    """The --backend options as an `EndpointSpec`, with errors that name the flags."""
    if kind not in ("embedded", "openai"):
        raise ConfigError(f"--backend must be embedded or openai, got {kind!r}")
    if kind == "openai" and not (base_url and model):
        raise ConfigError("--backend openai needs --base-url and --model")
    chosen: BackendKind = "openai" if kind == "openai" else "embedded"
    if batching not in ("continuous", "serial"):
        raise ConfigError(f"--batching must be continuous or serial, got {batching!r}")
    mode: Literal["continuous", "serial"] = "serial" if batching == "serial" else "continuous"
    return EndpointSpec(
        kind=chosen,
        base_url=base_url,
        model=model,
        api_key_env=api_key_env,
        timeout=timeout,
        model_path=model_path,
        threads=threads,
        batching=mode,
        limits=limits or EndpointLimits(),
    )


def parse_prices(specs: list[str]) -> dict[str, Price]:
    """`MODEL=PROMPT,COMPLETION` (dollars per million tokens) -> a price table."""
    table: dict[str, Price] = {}
    for spec in specs:
        model, _, rates = spec.partition("=")
        parts = rates.split(",")
        try:
            prompt, completion = (float(part) for part in parts)
        except ValueError:
            raise ConfigError(
                f"--price {spec!r}: expected MODEL=PROMPT,COMPLETION, e.g. gpt-4o-mini=0.15,0.6"
            ) from None
        if not model:
            raise ConfigError(f"--price {spec!r}: the model name is missing")
        if prompt < 0 or completion < 0:
            raise ConfigError(f"--price {spec!r}: prices must be >= 0")
        table[model] = Price(prompt_per_million=prompt, completion_per_million=completion)
    return table
