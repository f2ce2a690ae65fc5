"""`eval --otel-endpoint URL`: the runs as OpenTelemetry traces, exported over OTLP/HTTP."""

from __future__ import annotations

from typing import Annotated

import typer

from budgetflow.evaluate.session import RunWatcher
from budgetflow.events import Event, Subscriber

__all__ = ["OtelOpt", "Tracing"]

OtelOpt = Annotated[
    str | None,
    typer.Option(
        rich_help_panel="Output",
        help="Export every run as OpenTelemetry spans (GenAI conventions) to this OTLP/HTTP "
        "endpoint, e.g. http://127.0.0.1:4318/v1/traces. Off when not given.",
    ),
]


class Tracing:
    """Span recorders for the runs of one command, when an endpoint is given."""

    def __init__(self, endpoint: str | None) -> None:
        self._provider = None
        self._recorders: list[Subscriber] = []
        if endpoint:
            from budgetflow.telemetry import otlp_tracer_provider

            self._provider = otlp_tracer_provider(endpoint)

    def watching(self, inner: RunWatcher) -> RunWatcher:
        """`inner`'s subscriber for each run, and a span recorder beside it when tracing."""
        if self._provider is None:
            return inner
        from budgetflow.telemetry import SpanRecorder

        tracer = self._provider.get_tracer("budgetflow")

        def watch(name: str, questions: int) -> Subscriber | None:
            recorder = SpanRecorder(tracer, name)
            self._recorders.append(recorder)
            shown = inner(name, questions)

            def both(event: Event) -> None:
                recorder(event)
                if shown is not None:
                    shown(event)

            return both

        return watch

    def close(self) -> None:
        """End the open spans and flush them to the collector."""
        for recorder in self._recorders:
            recorder.close()  # type: ignore[attr-defined]
        if self._provider is not None:
            self._provider.shutdown()
