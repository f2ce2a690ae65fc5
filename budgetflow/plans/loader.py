"""Plans from YAML or JSON files (or dicts), every mistake named by file, line, node and field."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from budgetflow.errors import ConfigError
from budgetflow.plans.allocation import PlanAllocator
from budgetflow.plans.model import OUTPUT_TYPES, Consistency, FanIn, Limits, Node, Plan, Role
from budgetflow.plans.validate import PlanError, validate_plan
from budgetflow.types import AudioPart, ContentPart, ImagePart, VideoPart

__all__ = ["load_plan", "node_from_dict", "plan_from_dict"]

_LINE: Final = "__line__"
_NODE_FIELDS: Final = (
    "id", "prompt", "role", "strategy", "output", "schema", "map", "reduce", "fan_in", "after", "media",
    "limits", "value", "synthesis", "consistency",
)  # fmt: skip
_PLAN_FIELDS: Final = (
    "name", "nodes", "outputs", "budget_tokens", "roles", "max_executions", "allocator", "coupling",
    "min_bid_value",
)  # fmt: skip
_CONSISTENCY_FIELDS: Final = ("min_agreement", "redispatch")
_ALLOCATOR_FIELDS: Final = ("name", "cap", "min_gain", "temperature", "use_greedy", "reserve")
_LIMIT_FIELDS: Final = ("budget_share", "max_tokens", "timeout_seconds", "retries")
_ROLE_FIELDS: Final = (
    "name", "system", "modalities", "endpoint", "tools", "cost", "quality", "max_tool_calls", "tool_protocol",
)  # fmt: skip
_MEDIA_TYPES: Final = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
    ".webp": "image/webp",
}  # fmt: skip


class _LineLoader(yaml.SafeLoader):
    """Records the line each mapping starts on (as `__line__`), for error messages."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict[str, Any]:
    mapping = {str(key): value for key, value in loader.construct_mapping(node, deep=True).items()}
    mapping[_LINE] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def load_plan(path: Path, *, budget_tokens: int | None = None, allocator: str | None = None) -> Plan:
    """The validated plan in the YAML or JSON file `path`; `budget_tokens` and `allocator` (a
    name) replace the plan's own."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PlanError(f"{path}: cannot read the plan: {error}") from error
    try:
        document = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise PlanError(f"{path}{where}: not valid YAML/JSON: {getattr(error, 'problem', error)}") from None
    if not isinstance(document, Mapping):
        raise PlanError(f"{path}: a plan is a mapping with a 'nodes' list")
    return plan_from_dict(document, source=str(path), budget_tokens=budget_tokens, allocator=allocator)


def plan_from_dict(
    document: Mapping[str, Any],
    *,
    source: str = "<plan>",
    budget_tokens: int | None = None,
    allocator: str | None = None,
) -> Plan:
    """The validated plan described by `document` (the YAML/JSON shape); `budget_tokens` and
    `allocator` (a name, the plan's other allocator settings kept) replace the plan's own."""
    _known(document, _PLAN_FIELDS, f"{source}{_at(document)}: plan")
    nodes = document.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise PlanError(f"{source}{_at(document)}: 'nodes' must be a non-empty list")
    roles = tuple(_role(entry, source) for entry in document.get("roles") or [])
    plan = Plan(
        nodes=tuple(_node(entry, index, source) for index, entry in enumerate(nodes)),
        name=str(document.get("name", Path(source).stem)),
        outputs=tuple(_strings(document.get("outputs", []), f"{source}: outputs")),
        budget_tokens=budget_tokens
        if budget_tokens is not None
        else _optional_int(document.get("budget_tokens"), f"{source}: budget_tokens"),
        roles=roles if any(r.name == "default" for r in roles) else (Role("default", routable=False), *roles),
        max_executions=_optional_int(document.get("max_executions"), f"{source}: max_executions") or 10_000,
        allocator=_allocator(document.get("allocator"), allocator, source),
        coupling=_coupling(document.get("coupling", "loose"), source),
        min_bid_value=_fraction(document.get("min_bid_value", 0.5), f"{source}: min_bid_value"),
        source=source,
    )
    validate_plan(plan)
    return plan


def node_from_dict(entry: Any, index: int, source: str = "<plan>") -> Node:
    """One node from its YAML/JSON shape (a streaming planner's line, say); `PlanError` naming
    the node and field when it is malformed. Checks against the rest of a plan are
    `validate_plan`'s."""
    return _node(entry, index, source)


def _node(entry: Any, index: int, source: str) -> Node:
    if not isinstance(entry, Mapping):
        raise PlanError(f"{source}: nodes[{index}] must be a mapping with 'id' and 'prompt'")
    where = f"{source}{_at(entry)}: node {entry.get('id', f'#{index}')!r}"
    _known(entry, _NODE_FIELDS, where)
    literal = entry.get("value") is not None
    for required in ("id",) if literal else ("id", "prompt"):
        if not isinstance(entry.get(required), str) or not entry[required]:
            raise PlanError(f"{where}: '{required}' must be a non-empty string (or give a literal 'value')")
    output = entry.get("output", "text")
    if output not in OUTPUT_TYPES:
        raise PlanError(f"{where}: output must be one of {', '.join(OUTPUT_TYPES)}, got {output!r}")
    schema = entry.get("schema")
    if schema is not None and not isinstance(schema, Mapping):
        raise PlanError(f"{where}: schema must be a JSON Schema object")
    media = _media(entry.get("media", []), where, Path(source).parent)
    return Node(
        id=entry["id"],
        prompt=str(entry.get("prompt", "")),
        role=str(entry.get("role", "default")),
        strategy=str(entry.get("strategy", "single")),
        output=output,
        schema=_without_lines(schema) if schema is not None else None,
        map=entry.get("map"),
        reduce=str(entry.get("reduce", "list")),
        fan_in=_fan_in(entry.get("fan_in", "all"), where),
        after=tuple(_strings(entry.get("after", []), f"{where}: after")),
        media=tuple(item for item in media if isinstance(item, str)),
        parts=tuple(item for item in media if not isinstance(item, str)),
        limits=_limits(entry.get("limits") or {}, where),
        value=_without_lines(entry["value"]) if literal else None,
        synthesis=None if entry.get("synthesis") is None else str(entry["synthesis"]),
        consistency=_consistency(entry.get("consistency"), where),
        line=entry.get(_LINE),
    )


def _fan_in(value: Any, where: str) -> FanIn:
    """`all`, `first`, `quorum(k)` or {policy: quorum, k: 2}."""
    if isinstance(value, Mapping):
        policy, k = value.get("policy", "all"), value.get("k", 1)
    elif isinstance(value, str) and value.startswith("quorum(") and value.endswith(")"):
        policy, k = "quorum", value[len("quorum(") : -1]
    else:
        policy, k = value, 1
    if policy not in ("all", "first", "quorum"):
        raise PlanError(f"{where}: fan_in must be all, first or quorum(k), got {value!r}")
    try:
        count = int(k)
    except (TypeError, ValueError):
        raise PlanError(f"{where}: fan_in quorum needs a whole number k, got {k!r}") from None
    if count < 1:
        raise PlanError(f"{where}: fan_in quorum needs k >= 1, got {count}")
    return FanIn(policy, count)


def _limits(value: Any, where: str) -> Limits:
    if not isinstance(value, Mapping):
        raise PlanError(f"{where}: limits must be a mapping ({', '.join(_LIMIT_FIELDS)})")
    _known(value, _LIMIT_FIELDS, f"{where}: limits")
    share = value.get("budget_share")
    if share is not None and (not isinstance(share, int | float) or not 0 < share <= 1):
        raise PlanError(f"{where}: limits.budget_share must be a fraction in (0, 1], got {share!r}")
    timeout = value.get("timeout_seconds")
    if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
        raise PlanError(f"{where}: limits.timeout_seconds must be > 0, got {timeout!r}")
    retries = _optional_int(value.get("retries"), f"{where}: limits.retries") or 0
    return Limits(
        budget_share=None if share is None else float(share),
        max_tokens=_optional_int(value.get("max_tokens"), f"{where}: limits.max_tokens"),
        timeout_seconds=None if timeout is None else float(timeout),
        retries=retries,
    )


def _allocator(value: Any, name: str | None, source: str) -> PlanAllocator | None:
    """`allocator: online` or `allocator: {name: online, cap: 12, …}`; `name` replaces the name."""
    if value is None and name is None:
        return None
    settings = {"name": value} if isinstance(value, str) else value or {}
    if not isinstance(settings, Mapping):
        raise PlanError(f"{source}: allocator must be a name or a mapping ({', '.join(_ALLOCATOR_FIELDS)})")
    where = f"{source}{_at(settings)}: allocator"
    _known(settings, _ALLOCATOR_FIELDS, where)
    chosen: dict[str, Any] = {key: item for key, item in settings.items() if key != _LINE}
    if name is not None:
        chosen["name"] = name
    try:
        found = PlanAllocator(**chosen)
        found.build()  # an unknown name is refused here, with the known ones
    except (ConfigError, TypeError) as error:
        raise PlanError(f"{where}: {error}") from None
    return found


def _coupling(value: Any, source: str) -> Literal["loose", "tight"]:
    if value == "tight":
        return "tight"
    if value != "loose":
        raise PlanError(f"{source}: coupling must be loose or tight, got {value!r}")
    return "loose"


def _consistency(value: Any, where: str) -> Consistency | None:
    """`consistency: true` (the defaults) or {min_agreement: 0.6, redispatch: 1}."""
    if value is None or value is False:
        return None
    if value is True:
        return Consistency()
    if not isinstance(value, Mapping):
        raise PlanError(f"{where}: consistency must be true or a mapping ({', '.join(_CONSISTENCY_FIELDS)})")
    _known(value, _CONSISTENCY_FIELDS, f"{where}: consistency")
    defaults = Consistency()
    agreement = value.get("min_agreement", defaults.min_agreement)
    if not isinstance(agreement, int | float) or not 0 < agreement <= 1:
        raise PlanError(f"{where}: consistency.min_agreement must be in (0, 1], got {agreement!r}")
    redispatch = _optional_int(value.get("redispatch"), f"{where}: consistency.redispatch")
    return Consistency(float(agreement), defaults.redispatch if redispatch is None else redispatch)


def _role(entry: Any, source: str) -> Role:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise PlanError(f"{source}: each role needs a 'name'")
    where = f"{source}{_at(entry)}: role {entry['name']!r}"
    _known(entry, _ROLE_FIELDS, where)
    protocol = entry.get("tool_protocol", "text")
    if protocol not in ("text", "native"):
        raise PlanError(f"{where}: tool_protocol must be text or native, got {protocol!r}")
    cost = entry.get("cost", 1.0)
    if isinstance(cost, bool) or not isinstance(cost, int | float) or cost < 0:
        raise PlanError(f"{where}: cost must be a number >= 0 (per 1,000 tokens), got {cost!r}")
    calls = _optional_int(entry.get("max_tool_calls"), f"{where}: max_tool_calls")
    return Role(
        name=entry["name"],
        system=entry.get("system"),
        modalities=tuple(_strings(entry.get("modalities", ["text"]), f"{where}: modalities")),
        endpoint=str(entry.get("endpoint", "default")),
        tools=tuple(_strings(entry.get("tools", []), f"{where}: tools")),
        cost=float(cost),
        quality=_fraction(entry.get("quality", 1.0), f"{where}: quality"),
        max_tool_calls=4 if calls is None else calls,
        tool_protocol="native" if protocol == "native" else "text",
    )


def _fraction(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise PlanError(f"{where} must be a number in [0, 1], got {value!r}")
    return float(value)


def _media(value: Any, where: str, folder: Path) -> list[str | ContentPart]:
    """`media:` entries: a modality name (declared only), or {image: PATH_OR_URL},
    {audio: PATH} (wav or mp3), {video: URL}, {video: [FRAME, …]} (frames: sent as images)."""
    if not isinstance(value, list):
        raise PlanError(f"{where}: media must be a list")
    found: list[str | ContentPart] = []
    for index, item in enumerate(value):
        at = f"{where}: media[{index}]"
        if isinstance(item, str):
            found.append(item)
            continue
        entry = _without_lines(item) if isinstance(item, Mapping) else None
        if not isinstance(entry, dict) or len(entry) != 1:
            raise PlanError(f"{at}: a modality name or one of {{image: …}}, {{audio: …}}, {{video: …}}")
        ((kind, source),) = entry.items()
        found.extend(_part(kind, source, at, folder))
    return found


def _part(kind: str, source: Any, at: str, folder: Path) -> list[ContentPart]:
    if kind == "video" and isinstance(source, list):  # frames: a video as a sequence of images
        return [part for frame in source for part in _part("image", frame, at, folder)]
    if not isinstance(source, str) or not source:
        raise PlanError(f"{at}: {kind} needs a file path or URL")
    remote = source.startswith(("http://", "https://", "data:"))
    if kind == "image":
        return [ImagePart(url=source if remote else _data_url(_file(source, at, folder), at))]
    if kind == "video":
        return [VideoPart(url=source if remote else _data_url(_file(source, at, folder), at, "video/mp4"))]
    if kind == "audio":
        path = _file(source, at, folder)
        audio_format = path.suffix.lstrip(".").lower()
        if audio_format not in ("wav", "mp3"):
            raise PlanError(f"{at}: audio must be a .wav or .mp3 file, got {path.name}")
        return [AudioPart(data=base64.b64encode(path.read_bytes()).decode("ascii"), format=audio_format)]
    raise PlanError(f"{at}: unknown medium {kind!r} (image, audio or video)")


def _file(source: str, at: str, folder: Path) -> Path:
    path = Path(source) if Path(source).is_absolute() else folder / source
    if not path.is_file():
        raise PlanError(f"{at}: no such file {path}")
    return path


def _data_url(path: Path, at: str, fallback: str | None = None) -> str:
    mime = _MEDIA_TYPES.get(path.suffix.lower(), fallback)
    if mime is None:
        raise PlanError(f"{at}: cannot tell the image type of {path.name} (png, jpeg, gif or webp)")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _known(entry: Mapping[str, Any], fields: tuple[str, ...], where: str) -> None:
    unknown = sorted(key for key in entry if key not in fields and key != _LINE)
    if unknown:
        raise PlanError(f"{where}: unknown field {unknown[0]!r} (known: {', '.join(fields)})")


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PlanError(f"{where} must be a list of strings, got {value!r}")
    return list(value)


def _optional_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(f"{where} must be a whole number >= 0, got {value!r}")
    return value


def _at(entry: Mapping[str, Any]) -> str:
    line = entry.get(_LINE)
    return f" line {line}" if line else ""


def _without_lines(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _without_lines(item) for key, item in value.items() if key != _LINE}
    if isinstance(value, list):
        return [_without_lines(item) for item in value]
    return value
