"""What `budgetflow eval` writes as it goes: OpenTelemetry traces (`--otel-endpoint URL`, over
OTLP/HTTP) and each finished question, at once, to `<output>.partial.jsonl`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from budgetflow.evaluate.session import RunWatcher
from budgetflow.events import Event, QuestionFinished, Subscriber

__all__ = ["OtelOpt", "Tracing", "partial_results"]

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


def partial_results(path: Path, inner: RunWatcher) -> RunWatcher:
    """`inner`'s subscriber for each run, and beside it one that appends each finished question
    to `path` (JSON lines, flushed at once): a run stopped half-way has its finished questions
    there, not only in the journal."""

    def watch(name: str, questions: int) -> Subscriber | None:
        shown = inner(name, questions)

        def both(event: Event) -> None:
            if isinstance(event, QuestionFinished):
                line = {
                    "run": name,
                    "question_id": event.question_id,
                    "answer": event.answer,
                    "score": event.score,
                    "prompt_tokens": event.usage.prompt_tokens,
                    "completion_tokens": event.usage.completion_tokens,
                }
                with path.open("a", encoding="utf-8") as sink:
                    sink.write(json.dumps(line) + "\n")
            if shown is not None:
                shown(event)

        return both

    return watch
