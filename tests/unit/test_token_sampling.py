from __future__ import annotations

import numpy as np

from budgetflow.backends.token_sampling import sample_next_token, sequence_generator, token_logprob


def _logits(values: list[float], size: int = 1000) -> np.ndarray:
    logits = np.full(size, -30.0, dtype=np.float32)
    logits[: len(values)] = values
    return logits


def test_zero_temperature_is_argmax() -> None:
    logits = _logits([1.0, 3.0, 2.0])
    assert sample_next_token(logits, temperature=0, top_p=1.0, generator=sequence_generator(0, 0)) == 1


def test_top_p_never_leaves_the_nucleus() -> None:
    # probabilities ~ [0.62, 0.23, 0.08, 0.03, ...]: top_p=0.8 keeps tokens 0 and 1 only
    logits = _logits([4.0, 3.0, 2.0, 1.0])
    generator = sequence_generator(1, 0)
    drawn = {sample_next_token(logits, temperature=1.0, top_p=0.8, generator=generator) for _ in range(500)}
    assert drawn == {0, 1}


def test_full_distribution_is_sampled_in_proportion() -> None:
    logits = _logits([np.log(3.0), 0.0], size=2)
    generator = sequence_generator(2, 0)
    draws = [sample_next_token(logits, temperature=1.0, top_p=1.0, generator=generator) for _ in range(4000)]
    assert 0.70 < draws.count(0) / len(draws) < 0.80  # expected 0.75


def test_flat_distribution_falls_back_to_a_full_sort() -> None:
    logits = np.zeros(5000, dtype=np.float32)
    generator = sequence_generator(3, 0)
    drawn = {sample_next_token(logits, temperature=1.0, top_p=0.5, generator=generator) for _ in range(300)}
    assert len(drawn) > 100  # about half the vocabulary is eligible


def test_seeded_generators_are_reproducible_and_distinct_per_sequence() -> None:
    logits = _logits([0.0] * 50)

    def draws(seed: int, index: int) -> list[int]:
        generator = sequence_generator(seed, index)
        return [sample_next_token(logits, temperature=1.0, top_p=0.9, generator=generator) for _ in range(20)]

    assert draws(7, 0) == draws(7, 0)
    assert draws(7, 0) != draws(7, 1)
    assert draws(7, 0) != draws(8, 0)


def test_token_logprob_is_the_log_softmax_of_the_raw_logits() -> None:
    logits = _logits([2.0, 1.0, 0.5], size=50)
    values = [token_logprob(logits, token) for token in range(50)]
    assert np.isclose(np.logaddexp.reduce(values), 0.0)  # probabilities sum to one
    assert values[0] > values[1] > values[2] > values[3]
    assert np.isclose(values[0] - values[1], 1.0)  # differences are logit differences
