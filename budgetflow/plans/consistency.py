"""How far the outputs a node merges agree, and which of them disagree.

Typed outputs (numbers, lists, JSON) agree when their normalised answers are equal: agreement is
the share holding the most common one, and the others disagree. Free text rarely repeats word for
word: agreement is the mean word overlap (Jaccard) between pairs, and a source disagrees when its
mean overlap with the others is below the threshold.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from budgetflow.answers.voting import answer_key
from budgetflow.plans.outputs import render

__all__ = ["agreement"]

_WORD = re.compile(r"\w+")


def agreement(values: Sequence[object], *, text: bool, threshold: float) -> tuple[float, list[int]]:
    """(agreement in [0, 1], indices of the values that disagree) of `values`."""
    if len(values) < 2:
        return 1.0, []
    if text:
        return _overlap(values, threshold)
    keys = [answer_key(render(value)) for value in values]
    counts = Counter(key for key in keys if key is not None)
    if not counts:
        return 0.0, list(range(len(values)))
    modal, count = counts.most_common(1)[0]
    return count / len(values), [index for index, key in enumerate(keys) if key != modal]


def _overlap(values: Sequence[object], threshold: float) -> tuple[float, list[int]]:
    words = [set(_WORD.findall(render(value).lower())) for value in values]
    means = []
    for index, own in enumerate(words):
        others = [_jaccard(own, other) for position, other in enumerate(words) if position != index]
        means.append(sum(others) / len(others))
    score = sum(means) / len(means)
    return score, [index for index, mean in enumerate(means) if mean < threshold]


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)
