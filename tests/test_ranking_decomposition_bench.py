"""bench/ranking_decomposition.py: τ split into top-against-rest, within-top and within-rest
pairs."""

import random

import pytest

from autopmf.ranking import kendall_tau_b
from bench.ranking_decomposition import decompose, mixed_tau


def test_the_three_kinds_of_pairs_give_back_kendall_tau_when_nothing_ties():
    rng = random.Random(0)
    for _ in range(50):
        standalone = rng.sample(range(100), 10)
        inherited = [rng.random() for _ in standalone]
        parts = decompose(inherited, standalone, 3)
        assert mixed_tau(10, 3, parts["separation"], parts["tau_top"], parts["tau_rest"]) == \
            pytest.approx(kendall_tau_b(inherited, standalone))


def test_a_separated_top_over_a_reversed_rest():
    standalone = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    inherited = [0.95, 0.9, 0.85, 0.1, 0.2, 0.3]  # top 3 right, the rest reversed
    parts = decompose(inherited, standalone, 3)
    assert parts["separation"] == 1.0 and parts["tau_top"] == 1.0
    assert parts["tau_rest"] == -1.0
    assert parts["top"] == [0, 1, 2] and parts["rest"] == [3, 4, 5]
    # Ten designs, the top three found and the rest at random: 24 of 45 pairs.
    assert mixed_tau(10, 3, 1.0, 1.0, 0.0) == pytest.approx(24 / 45)


def test_a_tie_across_the_split_counts_half():
    parts = decompose([0.5, 0.5, 0.1], [3, 2, 1], 1)
    assert parts["separation"] == 0.75
