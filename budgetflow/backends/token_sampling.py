"""Next-token sampling from raw logits: greedy, temperature and nucleus (top-p), one seeded
generator per sequence so that a seeded request is reproducible sample by sample.

The nucleus is found without sorting the vocabulary: tokens within a factor `_CANDIDATE_RATIO`
of the most likely one form a top set; when that set already holds `top_p` of the mass, the
nucleus lies inside it (every excluded token is less likely than every included one), and only
the set is sorted. Otherwise the whole vocabulary is sorted. The result is exact either way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["sample_next_token", "sequence_generator", "token_logprob"]

_CANDIDATE_RATIO = 1e-4

FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]


def sequence_generator(seed: int | None, sequence_index: int) -> np.random.Generator:
    """The generator for sample `sequence_index` of a request with `seed` (fresh entropy if None)."""
    if seed is None:
        return np.random.default_rng()
    return np.random.default_rng([seed, sequence_index])


def sample_next_token(
    logits: FloatArray, *, temperature: float, top_p: float, generator: np.random.Generator
) -> int:
    """Draw one token id from `logits` (shape `[vocab]`)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    weights = np.exp(scaled - scaled.max())
    if top_p >= 1.0:
        return _draw(None, weights, generator)
    candidates = _nucleus(weights, top_p)
    return _draw(candidates, weights[candidates], generator)


def token_logprob(logits: FloatArray, token: int) -> float:
    """log P(token) under the model's own distribution (softmax of the raw logits, no temperature)."""
    values = np.asarray(logits, dtype=np.float64)
    top = values.max()
    return float(values[token] - top - np.log(np.exp(values - top).sum()))


def _nucleus(weights: npt.NDArray[np.float64], top_p: float) -> npt.NDArray[np.intp]:
    """Indices, most likely first, of the smallest top set holding at least `top_p` of the mass."""
    total = weights.sum()
    candidates = np.flatnonzero(weights > _CANDIDATE_RATIO)  # the maximum weight is 1
    if weights[candidates].sum() < top_p * total:
        candidates = np.arange(weights.size)
    order = candidates[np.argsort(-weights[candidates], kind="stable")]
    shares = np.cumsum(weights[order]) / total
    keep = min(int(np.searchsorted(shares, top_p)) + 1, order.size)
    return order[:keep]


def _draw(
    indices: npt.NDArray[np.intp] | None, weights: npt.NDArray[np.float64], generator: np.random.Generator
) -> int:
    cumulative = np.cumsum(weights)
    point = generator.random() * cumulative[-1]
    position = min(int(np.searchsorted(cumulative, point, side="right")), weights.size - 1)
    return position if indices is None else int(indices[position])
