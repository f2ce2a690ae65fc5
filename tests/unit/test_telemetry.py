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


def test_eval_exports_its_spans_to_an_otlp_collector(tmp_path: Path) -> None:
    """`budgetflow eval --otel-endpoint` against a local OTLP/HTTP receiver: the spans arrive."""
    import os
    import subprocess
    import sys
    import threading

    from aiohttp import web
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[str] = []
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    urls: list[str] = []

    async def collect(request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest.FromString(await request.read())
        received.extend(
            span.name
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        )
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def start() -> tuple[web.AppRunner, StubOpenAIServer]:
        app = web.Application()
        app.router.add_post("/v1/traces", collect)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        stub = StubOpenAIServer(reply=lambda payload, index: "Answer: 1")
        await stub.start()
        urls.extend([f"http://127.0.0.1:{runner.addresses[0][1]}/v1/traces", stub.base_url])
        return runner, stub

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    assert ready.wait(30)
    collector, upstream = urls
    data = tmp_path / "sums.jsonl"
    data.write_text("".join(f'{{"question": "{i} + 1", "answer": {i + 1}}}\n' for i in range(2)))
    command = [
        sys.executable, "-m", "budgetflow", "eval", "--backend", "openai", "--base-url", upstream, "--model",
        "stub", "--dataset", str(data), "-s", "vote@2", "--otel-endpoint", collector, "--journal",
        str(tmp_path / "j.sqlite"), "--output", str(tmp_path / "out.json"), "--no-plots",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "OPENAI_API_KEY": "x"}
    )
    loop.call_soon_threadsafe(loop.stop)
    assert result.returncode == 0, result.stderr[-2000:]
    assert received.count("chat stub") == 2 and "invoke_workflow vote@2" in received
    assert sum(name.startswith("invoke_workflow sums-") for name in received) == 2
