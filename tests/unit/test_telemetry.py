"""OpenTelemetry spans of a run, checked with the SDK's in-memory exporter: a workflow span per
run and per unit, a `chat {model}` span per call with the GenAI attributes, nested as they ran."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.evaluate import load_jsonl
from budgetflow.evaluate.runner import evaluate
from budgetflow.events import EventStream
from budgetflow.strategies import Vote
from budgetflow.telemetry import SpanRecorder
from budgetflow.testing import StubOpenAIServer
from budgetflow.types import SamplingParams


def test_a_run_becomes_genai_spans(tmp_path: Path) -> None:
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(f'{{"question": "{i} + 1", "answer": {i + 1}}}\n' for i in range(3)))
    dataset = load_jsonl(data)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    recorder = SpanRecorder(provider.get_tracer("test"), "vote@2")

    async def main() -> None:
        events = EventStream()
        events.subscribe(recorder)
        async with (
            StubOpenAIServer(reply=lambda payload, index: "Answer: 1") as server,
            OpenAICompatibleBackend(base_url=server.base_url, model="stub", api_key="k") as backend,
        ):
            await evaluate(
                dataset, Vote(n=2), backend, sampling=SamplingParams(max_tokens=8, seed=1), events=events
            )

    asyncio.run(main())
    recorder.close()
    spans = exporter.get_finished_spans()
    runs = [s for s in spans if s.name == "invoke_workflow vote@2"]
    units = [s for s in spans if s.name.startswith("invoke_workflow sums-")]
    calls = [s for s in spans if s.name == "chat stub"]
    assert len(runs) == 1 and len(units) == 3 and len(calls) == 3
    run = runs[0]
    for unit in units:
        assert unit.parent is not None and unit.parent.span_id == run.context.span_id
        assert unit.attributes is not None and unit.attributes["budgetflow.unit.reason"]
    by_id = {unit.context.span_id: unit for unit in units}
    for call in calls:
        attributes = call.attributes or {}
        assert call.parent is not None and call.parent.span_id in by_id
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.model"] == "stub"
        assert attributes["gen_ai.usage.input_tokens"] > 0 and attributes["gen_ai.usage.output_tokens"] == 4
        assert list(attributes["gen_ai.response.finish_reasons"]) == ["stop", "stop"]
        parent = by_id[call.parent.span_id]
        assert parent.start_time is not None and call.start_time is not None and call.end_time is not None
        assert parent.start_time <= call.start_time <= call.end_time
