"""The layering the execution core relies on: planning imports no runtime, no cycles anywhere,
one backend factory, and configurations refused with the flag or field named."""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType

import pytest

from budgetflow.allocate import Evidence, allocator_names, make_allocator, register_allocator
from budgetflow.allocate.base import AllocatorBase, AllocatorOptions
from budgetflow.backends.openai import OpenAICompatibleBackend
from budgetflow.budget import Budget
from budgetflow.errors import ConfigError
from budgetflow.evaluate.session import EvalConfig
from budgetflow.runtime.context import EndpointLimits
from budgetflow.runtime.endpoints import EndpointSpec, open_backend
from budgetflow.strategies.parse import parse_strategy
from budgetflow.testing.scripts import load_script

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "budgetflow"


def _structure() -> ModuleType:
    return load_script(ROOT / "benchmarks" / "structure.py")


def _import_graph() -> dict[str, set[str]]:
    structure = _structure()
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {structure.module_name(path) for path in paths}
    graph: dict[str, set[str]] = {
        structure.module_name(path): structure.imports_of(path, modules) for path in paths
    }
    return {m: {t for t in ts if structure.package_parent(t) != m} for m, ts in graph.items()}


def test_the_package_has_no_import_cycles() -> None:
    graph = _import_graph()
    assert _structure().strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _structure().strongly_connected({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


@pytest.mark.parametrize("layer", ["budgetflow.allocate", "budgetflow.answers"])
def test_planning_layers_import_no_runtime_backends_or_evaluation(layer: str) -> None:
    forbidden = ("budgetflow.evaluate", "budgetflow.runtime", "budgetflow.backends", "budgetflow.cli")
    offenders = {
        module: sorted(t for t in targets if t.startswith(forbidden))
        for module, targets in _import_graph().items()
        if module.startswith(layer)
    }
    assert {m: t for m, t in offenders.items() if t} == {}


def test_only_the_endpoint_factory_constructs_backends_outside_tests() -> None:
    constructors = {"EmbeddedBackend", "OpenAICompatibleBackend"}
    callers = set()
    for path in PACKAGE.rglob("*.py"):
        if "backends" in path.parts or "testing" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in constructors
            ):
                callers.add(path.relative_to(PACKAGE).as_posix())
    assert callers == {"runtime/endpoints.py"}


def test_a_registered_allocator_is_made_by_name() -> None:
    class Constant(AllocatorBase):
        def priority(self, evidence: Evidence) -> float:
            return 1.0

    def factory(options: AllocatorOptions) -> Constant:
        return Constant(name="constant_for_test", cap=options.cap)

    register_allocator("constant_for_test", factory)
    made = make_allocator("constant_for_test", cap=3)
    assert made.name == "constant_for_test" and made.cap == 3
    assert "constant_for_test" in allocator_names()


def test_register_allocator_refuses_bad_or_built_in_names() -> None:
    with pytest.raises(ConfigError, match="built-in"):
        register_allocator("online", lambda options: make_allocator("uniform"))
    with pytest.raises(ConfigError, match="identifier"):
        register_allocator("not a name", lambda options: make_allocator("uniform"))


def test_an_unknown_allocator_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'online'"):
        make_allocator("onlin")


def test_endpoint_spec_refuses_incomplete_endpoints() -> None:
    with pytest.raises(ConfigError, match="base URL and a model"):
        EndpointSpec(kind="openai", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match="timeout must be > 0"):
        EndpointSpec(timeout=0)
    with pytest.raises(ConfigError, match="BASE_URL=MODEL"):
        EndpointSpec.from_lane("http://127.0.0.1:1/v1", template=EndpointSpec())


def test_a_lane_inherits_the_template_limits_and_opens_an_http_backend() -> None:
    limits = EndpointLimits(concurrency=3, requests_per_minute=60)
    template = EndpointSpec(api_key_env="MY_KEY", timeout=7.0, threads=2, limits=limits)
    lane = EndpointSpec.from_lane("http://127.0.0.1:9/v1=small", template=template)
    assert (lane.kind, lane.base_url, lane.model) == ("openai", "http://127.0.0.1:9/v1", "small")
    assert lane.limits == limits and lane.api_key_env == "MY_KEY" and lane.threads is None
    backend = open_backend(lane)
    assert isinstance(backend, OpenAICompatibleBackend)


def test_eval_config_refuses_what_cannot_run() -> None:
    vote = parse_strategy("vote@2")
    with pytest.raises(ConfigError, match="nothing to run"):
        EvalConfig()
    with pytest.raises(ConfigError, match="--budget-samples"):
        EvalConfig(allocators=(make_allocator("online"),))
    with pytest.raises(ConfigError, match=">= 1"):
        EvalConfig(strategies=(vote,), concurrency=0)
    lane = EndpointSpec.from_lane("http://127.0.0.1:9/v1=m", template=EndpointSpec())
    with pytest.raises(ConfigError, match="--allocator deadline"):
        EvalConfig(strategies=(vote,), lanes=(lane,))
    deadline = EvalConfig(
        allocators=(make_allocator("deadline"),),
        budget_samples=(8,),
        budget=Budget(deadline_seconds=5.0),
        lanes=(lane,),
    )
    assert deadline.deadline == 5.0
