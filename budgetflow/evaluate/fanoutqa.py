"""FanOutQA's dev set as a decomposition benchmark: a planner's sub-questions against the gold
decomposition trees.

The dev set is read straight from the `fanoutqa` wheel's JSON (installed with `--no-deps`; its
own code, which fetches Wikipedia, is never imported). A decomposition is a list of
sub-questions with the ids they depend on. The score of a predicted decomposition against the
gold one (0-1) is the mean of two F1 scores: sub-questions, matched one to one by word overlap
(greedy on the best pairs; a pair's credit is its token F1), and dependency edges, kept when
both ends are matched pairs. The gold decomposition scores 1.0 against itself.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from budgetflow.errors import DatasetError

__all__ = [
    "FanOutQuestion",
    "SubQuestion",
    "decomposition_score",
    "load_fanoutqa_dev",
    "scrambled_decomposition",
    "sub_questions_of_plan",
]

_WORD: Final = re.compile(r"[a-z0-9]+")
_STOP: Final = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "is",
        "are",
        "was",
        "were",
        "what",
        "who",
        "which",
        "how",
        "many",
        "for",
        "and",
        "or",
        "by",
    ]
)


@dataclass(frozen=True, slots=True)
class SubQuestion:
    id: str
    question: str
    depends_on: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class FanOutQuestion:
    id: str
    question: str
    decomposition: tuple[SubQuestion, ...]
    answer: Any


def load_fanoutqa_dev(path: Path | None = None) -> list[FanOutQuestion]:
    """The 310 dev questions with their gold decompositions (nested ones flattened: a nested
    sub-question depends on what its parent depends on)."""
    source = path or _packaged_dev()
    try:
        entries = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DatasetError(f"{source}: cannot read the FanOutQA dev set: {error}") from error
    return [
        FanOutQuestion(e["id"], e["question"], tuple(_flatten(e["decomposition"], ())), e["answer"])
        for e in entries
    ]


def _packaged_dev() -> Path:
    spec = importlib.util.find_spec("fanoutqa")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "the FanOutQA dev set needs the fanoutqa wheel: pip install --no-deps fanoutqa==1.1.1"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "fanout-final-dev.json"


def _flatten(entries: Sequence[dict[str, Any]], inherited: tuple[str, ...]) -> list[SubQuestion]:
    found: list[SubQuestion] = []
    for entry in entries:
        depends = tuple(dict.fromkeys([*inherited, *entry.get("depends_on", [])]))
        found.append(SubQuestion(entry["id"], entry["question"], depends))
        found.extend(_flatten(entry.get("decomposition") or [], depends))
    return found


def scrambled_decomposition(gold: Sequence[SubQuestion], rng: random.Random) -> list[SubQuestion]:
    """A floor for the scorer: the gold sub-questions' words shuffled across them, and their
    dependencies rewired at random (as many edges per sub-question as the gold has)."""
    words = [word for q in gold for word in q.question.split()]
    rng.shuffle(words)
    size = max(1, len(words) // max(1, len(gold)))
    ids = [q.id for q in gold]
    return [
        SubQuestion(
            q.id,
            " ".join(words[index * size : (index + 1) * size]),
            tuple(rng.sample(ids, k=min(len(q.depends_on), len(ids)))),
        )
        for index, q in enumerate(gold)
    ]


def sub_questions_of_plan(nodes: Sequence[Any]) -> list[SubQuestion]:
    """A plan's nodes (anything with `id`, `prompt`, `dependencies`) as sub-questions."""
    return [SubQuestion(node.id, node.prompt, tuple(node.dependencies)) for node in nodes]


def _words(text: str) -> Counter[str]:
    return Counter(word for word in _WORD.findall(text.lower()) if word not in _STOP)


def _token_f1(a: Counter[str], b: Counter[str]) -> float:
    common = sum((a & b).values())
    if common == 0:
        return 0.0
    precision, recall = common / sum(a.values()), common / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def _f1(matched: float, predicted: int, gold: int) -> float:
    if predicted == 0 and gold == 0:
        return 1.0
    if predicted == 0 or gold == 0:
        return 0.0
    precision, recall = matched / predicted, matched / gold
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _match(predicted: Sequence[SubQuestion], gold: Sequence[SubQuestion]) -> dict[str, tuple[str, float]]:
    """Predicted id -> (gold id, similarity), one to one, best pairs first."""
    words = {("p", q.id): _words(q.question) for q in predicted} | {
        ("g", q.id): _words(q.question) for q in gold
    }
    pairs = sorted(
        ((_token_f1(words[("p", p.id)], words[("g", g.id)]), p.id, g.id) for p in predicted for g in gold),
        key=lambda pair: -pair[0],
    )
    taken_p: set[str] = set()
    taken_g: set[str] = set()
    matched: dict[str, tuple[str, float]] = {}
    for similarity, p_id, g_id in pairs:
        if similarity <= 0 or p_id in taken_p or g_id in taken_g:
            continue
        matched[p_id] = (g_id, similarity)
        taken_p.add(p_id)
        taken_g.add(g_id)
    return matched


def decomposition_score(predicted: Sequence[SubQuestion], gold: Sequence[SubQuestion]) -> float:
    """0-1: the mean of the sub-question F1 and the dependency-edge F1 (see the module)."""
    matched = _match(predicted, gold)
    nodes = _f1(sum(similarity for _, similarity in matched.values()), len(predicted), len(gold))
    gold_edges = {(d, q.id) for q in gold for d in q.depends_on}
    predicted_edges = {(d, q.id) for q in predicted for d in q.depends_on}
    mapped = {(matched[d][0], matched[q][0]) for d, q in predicted_edges if d in matched and q in matched}
    edges = _f1(len(mapped & gold_edges), len(predicted_edges), len(gold_edges))
    return (nodes + edges) / 2
