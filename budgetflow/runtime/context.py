"""The one execution core: a run context, its units of work, and the one draw step.

Everything that runs — an eval question under a strategy, an allocator's question, a bank
recording, later a plan node or a server request — is a `Unit` of one `RunContext`:

* one ledger tree (run -> unit): every request and every scoring call reserves its worst case in
  the unit's ledger, a child of the run's, before it is sent;
* one wrapped stack per endpoint, shared by all units: `RateLimit(ConcurrencyLimit(Metered(b)))`,
  and per unit `Retry(Budgeted(shared, unit_ledger))`, so limits, retries and metering hold for
  samples, judges and verifiers alike;
* one event stream, stamped with the run id; units emit `UnitRequested` / `UnitCompleted` with
  what was asked and what came back;
* one seed policy, `seed_for(unit_index, rollout)`, fixed when a draw is dispatched (the unit's
  rollout counter advances before the request is awaited), independent of completion order.

`Unit.draw` is the only place that sends a completion request: a draw the budget refuses is
halved down to one sample, and when not even one fits the unit is starved (it answers with what it
has) — the run goes on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Final, TypeVar

from budgetflow.backends.base import Backend, StreamTail
from budgetflow.backends.wrappers import Budgeted, ConcurrencyLimit, Metered, RateLimit, Retry
from budgetflow.budget import Budget, Ledger, Price
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.events import EventStream, UnitCompleted, UnitRequested, UnitStarted
from budgetflow.journal import RecordedStep, request_hash
from budgetflow.types import Completion, Request, Response, Spend, Usage
from budgetflow.usage import NO_USAGE

__all__ = ["SEED_STRIDE", "EndpointLimits", "RetryPolicy", "RunContext", "Unit", "seed_for"]

#: Seeds of consecutive units lie this far apart, so no two rollouts of a run share a seed.
SEED_STRIDE: Final = 100_003


def seed_for(base: int | None, unit_index: int, rollout: int) -> int | None:
    """The seed of rollout `rollout` of unit `unit_index` (None: unseeded). A request for rollouts
    r .. r+n-1 carries `seed_for(base, unit, r)`; backends give sample j of it seed + j."""
    return None if base is None else base + SEED_STRIDE * unit_index + rollout


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    max_total_seconds: float = 120.0


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointLimits:
    """What one endpoint tolerates: requests in flight, per-minute rates, and how to retry."""

    concurrency: int = 64
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"backend concurrency must be >= 1, got {self.concurrency}")
        for name in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be > 0, got {value}")


class RunContext:
    """Everything one run shares, passed explicitly (no globals): the ledger tree, one shared
    stack per endpoint (`backend` is endpoint 0, `lanes` the others), the event stream and the
    base seed."""

    def __init__(
        self,
        backend: Backend,
        *,
        lanes: tuple[Backend, ...] = (),
        budget: Budget | None = None,
        unit_budget: Budget | None = None,
        prices: dict[str, Price] | None = None,
        limits: EndpointLimits | None = None,
        events: EventStream | None = None,
        seed: int | None = None,
        recorded: Mapping[tuple[str, int], RecordedStep] | None = None,
    ) -> None:
        self.events = events or EventStream()
        #: A journaled run's steps by (unit id, step), when this run resumes it: finished steps are
        #: answered from it (nothing sent, their spend charged as it was), unfinished ones re-sent.
        self.recorded = recorded or {}
        self.replayed_calls = 0
        self.ambiguous_calls = 0
        self.ledger = Ledger(budget, prices=prices, events=self.events, name="run")
        self.unit_budget = unit_budget
        self.limits = limits or EndpointLimits()
        self.seed = seed
        self.meters = [Metered(b, events=self.events) for b in (backend, *lanes)]
        self.concurrency = [ConcurrencyLimit(meter, limit=self.limits.concurrency) for meter in self.meters]
        self.endpoints: list[Backend] = [self._rate_limited(limit) for limit in self.concurrency]

    def _rate_limited(self, limited: ConcurrencyLimit) -> Backend:
        """The endpoint's shared stack: rate limits, when any is set, over its concurrency limit."""
        if self.limits.requests_per_minute is None and self.limits.tokens_per_minute is None:
            return limited
        return RateLimit(
            limited,
            requests_per_minute=self.limits.requests_per_minute,
            tokens_per_minute=self.limits.tokens_per_minute,
        )

    @property
    def run_id(self) -> str:
        return self.events.run_id

    def unit(self, unit_id: str, *, index: int, kind: str, budget: Budget | None = None) -> Unit:
        """A unit of work, charged to its own child ledger: `budget` (or the run's unit budget)
        bounds it, within the run's. Emits `UnitStarted`."""
        chosen = budget if budget is not None else self.unit_budget
        ledger = self.ledger.child(chosen, name=unit_id, unit_id=unit_id)
        if self.events.active:
            tokens = None if chosen is None else chosen.total_tokens
            self.events.emit(UnitStarted(unit_id=unit_id, kind=kind, budget_tokens=tokens))
        return Unit(self, unit_id=unit_id, index=index, ledger=ledger)

    def fair_share(self, units_left: int) -> Budget | None:
        """Uniform pacing of the run budget: an equal share of what is neither spent nor reserved
        for each unit not yet started, within the unit budget (None when the run has no token or
        cost limit and no unit budget)."""
        tokens = self.ledger.headroom("total_tokens")
        cost = self.ledger.headroom("cost")
        if tokens is None and cost is None:
            return self.unit_budget
        base = self.unit_budget or Budget()
        share_tokens = None if tokens is None else max(0, int(tokens) // max(1, units_left))
        share_cost = None if cost is None else max(0.0, cost / max(1, units_left)) / 10**12
        return replace(
            base,
            total_tokens=_smaller(base.total_tokens, share_tokens),
            cost=_smaller(base.cost, share_cost),
        )


N = TypeVar("N", int, float)


def _smaller(a: N | None, b: N | None) -> N | None:
    """The smaller limit; None only when neither is set (0 is a limit, not "unset")."""
    values = [v for v in (a, b) if v is not None]
    return min(values) if values else None


class Unit:
    """One unit of work: its ledger, its per-endpoint stacks, its rollout counter and steps."""

    def __init__(self, context: RunContext, *, unit_id: str, index: int, ledger: Ledger) -> None:
        self.context = context
        self.id = unit_id
        self.index = index
        self.ledger = ledger
        self.rollouts = 0
        self.steps = 0
        self.refused = False
        self._backends: dict[int, Backend] = {}

    def backend(self, lane: int = 0) -> Backend:
        """`Retry(Budgeted(endpoint lane's shared stack, this unit's ledger))`."""
        if lane not in self._backends:
            policy = self.context.limits.retry
            self._backends[lane] = Retry(
                Budgeted(self.context.endpoints[lane], self.ledger),
                max_attempts=policy.max_attempts,
                base_delay=policy.base_delay,
                max_delay=policy.max_delay,
                max_total_seconds=policy.max_total_seconds,
                events=self.context.events,
            )
        return self._backends[lane]

    @property
    def spent(self) -> Spend:
        return self.ledger.spent

    @property
    def usage(self) -> Usage:
        """Every token this unit's ledger settled: samples, judges, verifiers, retries, racers."""
        return self.ledger.settled_usage()

    async def draw(self, request: Request, *, lane: int = 0, shrink: bool = True) -> Response | None:
        """Send `request` (seeded by the run's seed policy) through the unit's stack. A draw the
        budget refuses is halved (with `shrink`) down to one sample; None when nothing fits (the
        unit is starved, `refused` is set)."""
        while True:
            try:
                return await self.call(request, lane=lane)
            except BudgetExceeded:
                if request.n == 1 or not shrink:
                    self.refused = True
                    return None
                request = _halved(request)

    async def call(self, request: Request, *, lane: int = 0) -> Response:
        """One step: `request`, seeded by the run's seed policy, through the unit's stack — or,
        when a resumed run had finished this step, its journaled reply. `BudgetExceeded` when the
        budget refuses it (the refusal is journaled too)."""
        seeded = self._seeded(request)
        step = self._announce(seeded)
        recorded = self._recorded(step, seeded, "complete")
        if recorded is not None:
            return self._replay(step, request, recorded)
        durable = self.context.events.barriers
        if durable:  # journaled before it is sent: a crash finds it "ambiguous", never unknown
            await self.context.events.durable()
        try:
            response = await self.backend(lane).complete(seeded)
        except BudgetExceeded:
            self._report(step, refused=True)
            raise
        self._report(step, response=response)
        if durable:  # journaled before anyone acts on it
            await self.context.events.durable()
        return response

    def journaled(self, lane: int = 0) -> Backend:
        """The unit as a `Backend` for helpers that take one (a judge, a verifier, a bank's
        scorer): each of their calls is a step of this unit — budgeted, journaled, and answered
        from the journal on resume — instead of a bare request on `backend()`."""
        return _UnitSteps(self, lane)

    async def score(self, request: Request, texts: list[str], *, lane: int = 0) -> list[float] | None:
        """Score `texts` as replies to `request` through the unit's ledger and the endpoint's
        limits; None when the budget refuses it (the unit is starved, `refused` is set)."""
        request = replace(request, unit_id=self.id)
        step = self._announce(request, kind="score", n=len(texts))
        recorded = self._recorded(step, request, "score", n=len(texts))
        if recorded is not None and recorded.response is not None:
            self._charge(request, recorded.response)
            self._report(step, scores=recorded.scores)
            return list(recorded.scores)
        durable = self.context.events.barriers
        if durable:
            await self.context.events.durable()
        try:
            scores = await self.backend(lane).score_continuations(request, texts)
        except BudgetExceeded:
            self._report(step, refused=True)
            self.refused = True
            return None
        self._report(step, scores=tuple(scores))
        if durable:
            await self.context.events.durable()
        return scores

    async def stream(self, request: Request, *, lane: int = 0) -> AsyncIterator[str]:
        """Stream one completion of `request` (seeded like a draw) through the unit's stack; the
        last item is a `StreamTail` when the endpoint reported usage. A stream the budget refuses
        raises `BudgetExceeded` before anything is sent (the unit is marked `refused`)."""
        seeded = self._seeded(request)
        step = self._announce(seeded, kind="stream")
        pieces: list[str] = []
        usage = NO_USAGE
        if self.context.events.barriers:
            await self.context.events.durable()
        try:
            async for delta in self.backend(lane).stream(seeded):
                if isinstance(delta, StreamTail):
                    usage = delta.usage
                pieces.append(delta)
                yield delta
        except BudgetExceeded:
            self._report(step, refused=True)
            self.refused = True
            raise
        self._report(step, response=Response(completions=(Completion(text="".join(pieces)),), usage=usage))
        if self.context.events.barriers:
            await self.context.events.durable()

    def _recorded(self, step: int, request: Request, kind: str, n: int | None = None) -> RecordedStep | None:
        """The journaled reply of this step when the resumed run had finished it (None: send it).
        A step that asks something else than the journal recorded is a mismatch, not a re-run."""
        if not self.context.recorded:
            return None
        found = self.context.recorded.get((self.id, step))
        if found is None:
            return None
        count = request.n if n is None else n
        digest = request_hash(request.messages, request.sampling, count, request.prefill, kind)
        if digest != found.request_hash:
            differences = found.differences(request.messages, request.sampling, count, request.prefill, kind)
            named = "; ".join(differences) or "a changed strategy, dataset, prompt or sampling"
            raise ConfigError(
                f"journal mismatch in run {self.context.run_id!r}, unit {self.id!r}, step {step}: it "
                f"asks for something else than the journal recorded ({named}); start a new run "
                "instead of resuming this one"
            )
        if not found.finished or found.refused:
            self.context.ambiguous_calls += not found.finished  # in flight at the crash: sent again
            return None
        return found

    def _replay(self, step: int, request: Request, recorded: RecordedStep) -> Response:
        assert recorded.response is not None
        self._charge(request, recorded.response)
        self._report(step, response=recorded.response)
        return recorded.response

    def _charge(self, request: Request, response: Response) -> None:
        usage = response.usage if response.unreported is NO_USAGE else response.usage + response.unreported
        model = request.model or self.context.meters[0].model_name
        self.ledger.charge(self.ledger.actual(model=model, usage=usage))
        self.context.replayed_calls += 1

    def _seeded(self, request: Request) -> Request:
        first = self.rollouts
        self.rollouts += request.n
        sampling = request.sampling
        seed = seed_for(self.context.seed if sampling.seed is None else sampling.seed, self.index, first)
        return request.sent_as(sampling.with_seed(seed), unit_id=self.id)

    def _announce(self, request: Request, *, kind: str = "complete", n: int | None = None) -> int:
        self.steps += 1
        events = self.context.events
        if events.active:
            events.emit(
                UnitRequested(
                    unit_id=self.id,
                    step=self.steps,
                    messages=request.messages,
                    sampling=request.sampling,
                    n=request.n if n is None else n,
                    first_rollout=self.rollouts - request.n if kind != "score" else 0,
                    first_seed=request.sampling.seed,
                    prefill=request.prefill,
                    keep_first=request.keep_first,
                    kind=kind,
                )
            )
        return self.steps

    def _report(
        self,
        step: int,
        *,
        response: Response | None = None,
        scores: tuple[float, ...] = (),
        refused: bool = False,
    ) -> None:
        events = self.context.events
        if not events.active:
            return
        events.emit(
            UnitCompleted(
                unit_id=self.id,
                step=step,
                completions=response.completions if response is not None else (),
                usage=response.usage if response is not None else NO_USAGE,
                unreported=response.unreported if response is not None else NO_USAGE,
                scores=scores,
                refused=refused,
            )
        )


def _halved(request: Request) -> Request:
    n = request.n // 2
    keep = None if request.keep_first is None else min(request.keep_first, n)
    return replace(request, n=n, keep_first=keep)


class _UnitSteps(Backend):
    """`Unit.journaled()`: completions through `Unit.call`, scores through `Unit.score`."""

    def __init__(self, unit: Unit, lane: int) -> None:
        self._unit = unit
        self._lane = lane
        self._stack = unit.backend(lane)
        self.name = f"unit:{unit.id}"

    @property
    def model_name(self) -> str:
        return self._stack.model_name

    async def complete(self, request: Request) -> Response:
        return await self._unit.call(request, lane=self._lane)

    async def score_continuations(self, request: Request, continuations: Sequence[str]) -> list[float]:
        scores = await self._unit.score(request, list(continuations), lane=self._lane)
        if scores is None:
            raise BudgetExceeded(f"unit {self._unit.id!r}: the budget refused a scoring call")
        return scores

    def scoring_cost(self, continuations: int) -> tuple[int, int]:
        return self._stack.scoring_cost(continuations)

    def prompt_copies(self, request: Request) -> int:
        return self._stack.prompt_copies(request)

    async def count_prompt_tokens(self, request: Request) -> int:
        return await self._stack.count_prompt_tokens(request)

    async def count_tokens(self, text: str) -> int:
        return await self._stack.count_tokens(text)
