"""An agent unit: a tool-calling loop with a tool-call budget, every turn a step of its unit.

Each turn the model sees what is left of its budget — tokens (the unit's ledger headroom) and tool
calls — as the last line of the turn's input (Budget-Aware Tool-Use's budget tracker). It may call
one tool per turn or answer. Two protocols: `native` sends the tools as an OpenAI `tools` list and
reads `tool_calls` from the reply (endpoints that support function calling); `text` explains the
tools in the system prompt and reads a line `CALL tool: input` (any model, the embedded one
included). A call beyond the tool-call budget is not run: the model is told to answer. Every
model turn goes through `Unit.call` (reserved, settled, journaled); every tool call is a
`ToolCalled` event. When the budget refuses a turn, the unit answers with what it has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Final, Literal

from budgetflow.answers.extract import extract_answer
from budgetflow.errors import BudgetExceeded, ConfigError
from budgetflow.events import ToolCalled
from budgetflow.runtime.context import Unit
from budgetflow.tools.library import Tool, tool_error
from budgetflow.types import Completion, Message, Request, SamplingParams, TextPart

__all__ = ["AgentOptions", "AgentOutcome", "ToolUse", "budget_line", "run_agent"]

_CALL: Final = re.compile(r"^\s*CALL\s+([A-Za-z_][\w\-]*)\s*:\s*(.+?)\s*$", re.MULTILINE)
_RESULT: Final = "RESULT:"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOptions:
    tools: tuple[Tool, ...]
    max_tool_calls: int = 4
    max_turns: int = 8
    protocol: Literal["native", "text"] = "text"

    def __post_init__(self) -> None:
        if self.max_tool_calls < 0:
            raise ConfigError(f"max_tool_calls must be >= 0, got {self.max_tool_calls}")
        if self.max_turns < 1:
            raise ConfigError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.protocol not in ("native", "text"):
            raise ConfigError(f"the tool protocol must be native or text, got {self.protocol!r}")
        names = [tool.spec.name for tool in self.tools]
        if len(set(names)) != len(names):
            raise ConfigError(f"two tools share a name: {names}")


@dataclass(frozen=True, slots=True)
class ToolUse:
    tool: str
    arguments: dict[str, Any]
    result: str
    refused: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOutcome:
    answer: str | None
    reason: str
    turns: int
    replies: tuple[str, ...] = ()
    tool_uses: tuple[ToolUse, ...] = ()
    #: The budget line each turn showed the model, in order.
    budget_lines: tuple[str, ...] = ()
    budget_exhausted: bool = False

    @property
    def tool_calls(self) -> int:
        return sum(not use.refused for use in self.tool_uses)


def budget_line(unit: Unit, calls_left: int) -> str:
    """What the model is told each turn: the tokens its unit may still spend (within the run's
    budget too) and its tool calls left."""
    headroom = unit.ledger.available("total_tokens")
    tokens = "no token limit" if headroom is None else f"{max(0, int(headroom)):,} tokens"
    return f"[budget] {tokens} and {calls_left} tool call{'s' if calls_left != 1 else ''} left."


@dataclass(slots=True)
class _Conversation:
    messages: list[Message]
    replies: list[str] = field(default_factory=list)
    uses: list[ToolUse] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


async def run_agent(
    unit: Unit,
    messages: Sequence[Message],
    options: AgentOptions,
    *,
    sampling: SamplingParams,
    extract: Callable[[str], str | None] = extract_answer,
    lane: int = 0,
) -> AgentOutcome:
    """Run the tool loop for one unit on `messages` (the task) until it answers, its turns or
    budget run out."""
    tools = {tool.spec.name: tool for tool in options.tools}
    talk = _Conversation(_with_tool_prompt(list(messages), options))
    for turn in range(1, options.max_turns + 1):
        calls_left = options.max_tool_calls - sum(not use.refused for use in talk.uses)
        line = budget_line(unit, calls_left)
        talk.lines.append(line)
        request = _turn_request(talk.messages, line, options, sampling, offer_tools=calls_left > 0)
        try:
            response = await unit.call(request, lane=lane)
        except BudgetExceeded:
            unit.refused = True
            return _finish(talk, turn - 1, extract, "budget exhausted", starved=True)
        reply = response.completions[0]
        talk.replies.append(reply.text)
        call = _tool_call(reply, options.protocol)
        if call is None:
            return _finish(talk, turn, extract, "answered")
        await _use_tool(unit, talk, tools, call, reply, calls_left, options.protocol)
    return _finish(talk, options.max_turns, extract, f"{options.max_turns} turns used")


def _with_tool_prompt(messages: list[Message], options: AgentOptions) -> list[Message]:
    if options.protocol == "native" or not options.tools:
        return messages
    listed = "\n".join(f"- {tool.spec.name}: {tool.spec.description}" for tool in options.tools)
    template = resources.files("budgetflow.prompts").joinpath("agent_tools.txt").read_text(encoding="utf-8")
    guide = template.replace("{tools}", listed).strip()
    if messages and messages[0].role == "system":
        return [Message("system", f"{messages[0].text}\n\n{guide}"), *messages[1:]]
    return [Message("system", guide), *messages]


def _turn_request(
    messages: list[Message], line: str, options: AgentOptions, sampling: SamplingParams, *, offer_tools: bool
) -> Request:
    *before, last = messages
    shown = [*before, _append(last, line)]
    passthrough: tuple[tuple[str, str], ...] = ()
    if options.protocol == "native" and offer_tools:
        passthrough = (("tools", json.dumps([tool.spec.openai() for tool in options.tools])),)
    elif options.protocol == "text":
        sampling = replace(sampling, stop=(*sampling.stop, _RESULT))
    return Request(messages=tuple(shown), sampling=sampling, passthrough=passthrough)


def _append(message: Message, line: str) -> Message:
    """`message` with the budget line after its text (media parts kept as they are)."""
    if isinstance(message.content, str):
        return Message(message.role, f"{message.content}\n{line}", message.fields)
    return Message(message.role, (*message.content, TextPart(text=f"\n{line}")), message.fields)


@dataclass(frozen=True, slots=True)
class _Call:
    tool: str
    arguments: dict[str, Any]
    call_id: str = ""
    raw: str = ""  # the text-protocol line, or the tool_calls JSON


def _tool_call(reply: Completion, protocol: str) -> _Call | None:
    if protocol == "native":
        return _native_call(reply)
    match = _CALL.search(reply.text)
    if match is None:
        return None
    return _Call(match.group(1), {"input": match.group(2)}, raw=match.group(0).strip())


def _native_call(reply: Completion) -> _Call | None:
    fields = dict(reply.fields)
    if "tool_calls" not in fields:
        return None
    calls = json.loads(fields["tool_calls"])
    if not calls:
        return None
    first = calls[0]
    function = first.get("function", {})
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except json.JSONDecodeError:
        arguments = {"_unparsed": function.get("arguments")}
    if not isinstance(arguments, dict):
        arguments = {"input": arguments}
    raw = json.dumps([first])
    return _Call(str(function.get("name", "")), arguments, str(first.get("id", "")), raw)


async def _use_tool(
    unit: Unit,
    talk: _Conversation,
    tools: dict[str, Tool],
    call: _Call,
    reply: Completion,
    calls_left: int,
    protocol: str,
) -> None:
    tool = tools.get(call.tool)
    refused = calls_left <= 0
    if refused:
        result = tool_error("no tool calls left: answer now with what you have")
    elif tool is None:
        result = tool_error(f"no tool named {call.tool!r} (tools: {', '.join(tools) or 'none'})")
    else:
        arguments = call.arguments
        if protocol == "text":
            arguments = {tool.spec.main_argument: call.arguments["input"]}
        result = await tool.run(arguments)
    talk.uses.append(ToolUse(call.tool, call.arguments, result, refused))
    events = unit.context.events
    if events.active:
        events.emit(
            ToolCalled(
                unit_id=unit.id,
                tool=call.tool,
                arguments=json.dumps(call.arguments),
                result=result,
                refused=refused,
                calls_left=max(0, calls_left - (not refused)),
            )
        )
    talk.messages.extend(_tool_messages(call, reply, result, protocol))


def _tool_messages(call: _Call, reply: Completion, result: str, protocol: str) -> list[Message]:
    if protocol == "native":
        assistant = Message("assistant", reply.text, (("tool_calls", call.raw),))
        return [assistant, Message("tool", result, (("tool_call_id", json.dumps(call.call_id)),))]
    head = reply.text[: reply.text.find(call.raw) + len(call.raw)] if call.raw in reply.text else reply.text
    return [Message("assistant", head.strip()), Message("user", f"{_RESULT} {result}")]


def _finish(
    talk: _Conversation,
    turns: int,
    extract: Callable[[str], str | None],
    reason: str,
    *,
    starved: bool = False,
) -> AgentOutcome:
    last = talk.replies[-1] if talk.replies else ""
    answer = extract(last) if last else None
    used = sum(not use.refused for use in talk.uses)
    return AgentOutcome(
        answer=answer,
        reason=f"{reason} after {turns} turns and {used} tool calls",
        turns=turns,
        replies=tuple(talk.replies),
        tool_uses=tuple(talk.uses),
        budget_lines=tuple(talk.lines),
        budget_exhausted=starved,
    )
