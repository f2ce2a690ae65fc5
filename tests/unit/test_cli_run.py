"""`budgetflow run PLAN` against the local stub server: the per-node table, --output JSON, the
journal (replay sends nothing), and plan mistakes named with file and line."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from budgetflow.cli import app

PLAN = textwrap.dedent("""\
    name: sevens
    budget_tokens: 5000
    nodes:
      - id: questions
        output: list
        value: ["What is 3 + 4?", "What is 5 + 2?"]
      - id: solve
        map: questions
        prompt: "${item}"
        strategy: vote@3
        output: number
      - id: check
        prompt: "Is ${solve} right?"
        output: number
    """)


def _words(text: str) -> str:
    return " ".join(text.split())


def test_run_prints_a_node_table_writes_json_and_replays_from_the_journal(
    stub_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan, output, journal = tmp_path / "plan.yaml", tmp_path / "out.json", tmp_path / "j.sqlite"
    plan.write_text(PLAN)
    common = ["--backend", "openai", "--base-url", stub_url, "--model", "stub", "--journal", str(journal)]
    arguments = ["run", str(plan), *common, "--output", str(output)]
    monkeypatch.setattr(sys, "argv", ["budgetflow", *arguments])  # the command line journaled
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    document = json.loads(output.read_text())
    nodes = {node["id"]: node for node in document["nodes"]}
    assert document["outputs"] == {"check": 7} and nodes["solve"]["value"] == [7, 7]
    assert nodes["solve"]["samples"] == 6 and nodes["questions"]["tokens"] == 0
    assert document["spent"]["total_tokens"] == sum(node["tokens"] for node in nodes.values()) <= 5000
    assert document["topology"]["kind"] == "sequential" or document["topology"]["kind"] == "hybrid"
    assert "vote@3" in result.stdout and "3 items" not in result.stdout and "2 items" in result.stdout
    replayed = CliRunner().invoke(app, ["replay", document["session"], "--journal", str(journal)])
    assert replayed.exit_code == 0, replayed.output
    assert "check: 7" in replayed.stdout


def test_run_names_the_plan_file_line_and_node_of_a_mistake(tmp_path: Path) -> None:
    plan = tmp_path / "bad.yaml"
    plan.write_text(PLAN.replace("${solve}", "${solved}"))
    result = CliRunner().invoke(app, ["run", str(plan), "--journal", str(tmp_path / "j.sqlite")])
    assert result.exit_code == 2
    assert "bad.yaml: the plan cannot run" in _words(result.output)
    assert "node 'check' (line 12): ${solved} refers to 'solved'" in _words(result.output)
    missing = CliRunner().invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "cannot read the plan" in _words(missing.output)


def test_run_with_a_budget_too_small_reports_what_failed_and_exits_1(stub_url: str, tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    common = ["--backend", "openai", "--base-url", stub_url, "--model", "stub"]
    result = CliRunner().invoke(
        app, ["run", str(plan), *common, "--budget-tokens", "10", "--journal", str(tmp_path / "j.sqlite")]
    )
    assert result.exit_code == 1
    assert "budget exhausted" in _words(result.output) and "not finished" in _words(result.output)


ROLES = textwrap.dedent("""\
    name: two endpoints
    budget_tokens: 4000
    roles:
      - {name: small}
      - {name: big, endpoint: big}
    nodes:
      - {id: quick, prompt: "What is 3 + 4?", role: small, output: number}
      - {id: hard, prompt: "What is 4 + 5?", role: big, output: number}
    """)


def test_run_sends_a_role_to_the_endpoint_named_by_endpoint(
    stub_url: str, other_stub_url: str, tmp_path: Path
) -> None:
    """`--endpoint big=URL=MODEL` is the endpoint of the plan's `big` role (its stub answers 9);
    the other role runs on the backend (its stub answers 7)."""
    plan, output = tmp_path / "plan.yaml", tmp_path / "out.json"
    plan.write_text(ROLES)
    common = ["run", str(plan), "--backend", "openai", "--base-url", stub_url, "--model", "stub"]
    journal = ["--journal", str(tmp_path / "j.sqlite")]
    result = CliRunner().invoke(
        app, [*common, *journal, "--endpoint", f"big={other_stub_url}=large", "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(output.read_text())
    assert document["outputs"] == {"quick": 7, "hard": 9}
    missing = CliRunner().invoke(app, [*common, *journal])
    assert missing.exit_code == 2
    assert "role 'big' runs on endpoint 'big': give it with --endpoint big=BASE_URL=MODEL" in _words(
        missing.output
    )
    malformed = CliRunner().invoke(app, [*common, *journal, "--endpoint", f"default={other_stub_url}=m"])
    assert malformed.exit_code == 2 and "--endpoint must be NAME=BASE_URL=MODEL" in _words(malformed.output)


def test_run_documents_give_roles_a_search_tool(stub_url: str, tmp_path: Path) -> None:
    """`--documents DIR` adds `search` over the folder (the reader's tool call is answered from
    it); without it a role that searches is refused by name before anything runs."""
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        textwrap.dedent("""\
            name: reader
            budget_tokens: 3000
            roles: [{name: reader, tools: [search], max_tool_calls: 1}]
            nodes: [{id: look, prompt: "How many legs has a spider?", role: reader, output: number}]
            """)
    )
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "spiders.md").write_text("A spider has eight legs.")
    common = ["run", str(plan), "--backend", "openai", "--base-url", stub_url, "--model", "stub"]
    journal = ["--journal", str(tmp_path / "j.sqlite")]
    result = CliRunner().invoke(app, [*common, *journal, "--documents", str(tmp_path / "docs")])
    assert result.exit_code == 0, result.output
    refused = CliRunner().invoke(app, [*common, *journal])
    assert refused.exit_code == 2
    assert "role 'reader' uses the search tool: give its documents with --documents DIR" in _words(
        refused.output
    )
