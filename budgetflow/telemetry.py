"""OpenTelemetry traces of a run, following the GenAI semantic conventions.

`SpanRecorder` is an event subscriber: a run becomes an `invoke_workflow {run}` span, each unit of
work an `invoke_workflow {unit}` span under it, and each model call a `chat {model}` span under
its unit with `gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.provider.name`,
`gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens` and `gen_ai.response.finish_reasons`.
Span times are the events' own (monotonic clock, mapped to wall time once). Needs the
`opentelemetry-sdk` package; `otlp_tracer_provider` exports to any OTLP/HTTP collector.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, Status, StatusCode, Tracer

from budgetflow.events import (
    Event,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    UnitCompleted,
    UnitFinished,
    UnitStarted,
)

__all__ = ["SpanRecorder", "otlp_tracer_provider"]


def otlp_tracer_provider(endpoint: str) -> TracerProvider:
    """A tracer provider exporting spans in batches to the OTLP/HTTP collector at `endpoint`
    (e.g. http://127.0.0.1:4318/v1/traces)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "budgetflow"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


class SpanRecorder:
    """Turns one run's events into spans on `tracer`; `close()` ends whatever is still open."""

    def __init__(self, tracer: Tracer, run_name: str) -> None:
        self._tracer = tracer
        self._offset_ns = time.time_ns() - time.monotonic_ns()
        self._run = tracer.start_span(
            f"invoke_workflow {run_name}",
            attributes={"gen_ai.operation.name": "invoke_workflow", "gen_ai.workflow.name": run_name},
        )
        self._units: dict[str, Span] = {}
        self._calls: dict[int, Span] = {}
        #: A unit's last call, kept open until its `UnitCompleted` brings the finish reasons.
        self._last_call: dict[str, tuple[Span, int]] = {}

    def __call__(self, event: Event) -> None:
        if isinstance(event, UnitStarted):
            self._unit_started(event)
        elif isinstance(event, RequestStarted):
            self._call_started(event)
        elif isinstance(event, RequestFinished):
            self._call_finished(event)
        elif isinstance(event, RequestFailed):
            self._call_failed(event)
        elif isinstance(event, UnitCompleted):
            self._end_last_call(event.unit_id, event.finish_reasons)
        elif isinstance(event, UnitFinished):
            self._unit_finished(event)

    def close(self) -> None:
        for unit_id in list(self._last_call):
            self._end_last_call(unit_id, ())
        for span in [*self._calls.values(), *self._units.values()]:
            span.end()
        self._calls.clear()
        self._units.clear()
        self._run.end()

    def _ns(self, event: Event) -> int:
        return self._offset_ns + int(event.at * 1e9)

    def _unit_started(self, event: UnitStarted) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "budgetflow.unit.kind": event.kind,
        }
        if event.budget_tokens is not None:
            attributes["budgetflow.unit.budget_tokens"] = event.budget_tokens
        self._units[event.unit_id] = self._tracer.start_span(
            f"invoke_workflow {event.unit_id}",
            context=trace.set_span_in_context(self._run),
            attributes=attributes,
            start_time=self._ns(event),
        )

    def _call_started(self, event: RequestStarted) -> None:
        self._end_last_call(event.unit_id, ())
        parent = self._units.get(event.unit_id, self._run)
        model = event.model or event.backend
        self._calls[event.request_id] = self._tracer.start_span(
            f"chat {model}",
            context=trace.set_span_in_context(parent),
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat" if event.kind != "score" else "score",
                "gen_ai.request.model": model,
                "gen_ai.provider.name": event.backend.partition(":")[0],
                "gen_ai.request.choice.count": event.n,
            },
            start_time=self._ns(event),
        )

    def _call_finished(self, event: RequestFinished) -> None:
        span = self._calls.pop(event.request_id, None)
        if span is None:
            return
        span.set_attribute("gen_ai.usage.input_tokens", event.usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", event.usage.completion_tokens)
        self._last_call[event.unit_id] = (span, self._ns(event))

    def _call_failed(self, event: RequestFailed) -> None:
        span = self._calls.pop(event.request_id, None)
        if span is None:
            return
        span.set_attribute("error.type", event.error_type)
        span.set_status(Status(StatusCode.ERROR, event.message))
        span.end(end_time=self._ns(event))

    def _end_last_call(self, unit_id: str, finish_reasons: tuple[str, ...]) -> None:
        last = self._last_call.pop(unit_id, None)
        if last is None:
            return
        span, ended = last
        if finish_reasons:
            span.set_attribute("gen_ai.response.finish_reasons", list(finish_reasons))
        span.end(end_time=ended)

    def _unit_finished(self, event: UnitFinished) -> None:
        self._end_last_call(event.unit_id, ())
        span = self._units.pop(event.unit_id, None)
        if span is None:
            return
        span.set_attribute("budgetflow.unit.reason", event.reason)
        span.set_attribute("gen_ai.usage.input_tokens", event.spent.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", event.spent.completion_tokens)
        if event.answer is not None:
            span.set_attribute("budgetflow.unit.answer", event.answer)
        span.end(end_time=self._ns(event))
