"""Rank statistics (autopmf.ranking), checked against scipy on fixed numbers."""

import math

import numpy as np
import pytest
from scipy import stats

from autopmf.ranking import (average_ranks, bootstrap_ci, correlation_ci, kendall_tau_b, regret,
                             mean_agreement, seed_agreement, seed_agreement_ci,
                             single_run_tau, spearman_rho, summarize_designs, top_k_hit,
                             within_design_correlation)


# ----- rank correlation ------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(20))
def test_tau_b_and_rho_match_scipy_on_data_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 40))
    x = rng.integers(0, 6, n).astype(float)  # few distinct values: many ties
    y = np.round(x * rng.uniform(-1, 1) + rng.normal(0, 2, n))
    if len(set(x)) == 1 or len(set(y)) == 1:
        pytest.skip("constant side: covered by its own test")
    assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
    assert spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_hand_computed_cases():
    # (1,2,3) vs (1,3,2): 2 concordant pairs, 1 discordant; rank differences 0,1,1.
    assert kendall_tau_b([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    assert spearman_rho([1, 2, 3], [1, 3, 2]) == pytest.approx(1 - 6 * 2 / (3 * 8))
    assert list(average_ranks([5, 1, 5, 3])) == [3.5, 1.0, 3.5, 2.0]
    # One tie in x: tau-b = (C - D) / sqrt(untied x pairs * untied y pairs) = 2 / sqrt(2 * 3).
    assert kendall_tau_b([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


def test_a_constant_side_has_no_correlation():
    assert math.isnan(kendall_tau_b([1, 2, 3], [4, 4, 4]))
    assert math.isnan(spearman_rho([2, 2, 2], [1, 2, 3]))


def test_seed_agreement_is_the_mean_tau_over_pairs_of_seeds():
    # Rows: architectures; columns: seeds a, b, c.
    per_seed = [[0.5, 0.6, 0.9], [0.7, 0.8, 0.6], [0.6, 0.5, 0.7], [0.9, 0.7, 0.8]]
    a, b, c = zip(*per_seed)
    pairs = [stats.kendalltau(a, b)[0], stats.kendalltau(a, c)[0], stats.kendalltau(b, c)[0]]
    assert seed_agreement(per_seed) == pytest.approx(np.mean(pairs))
    assert math.isnan(seed_agreement([[0.5], [0.7]]))  # one seed: nothing to agree with
    assert math.isnan(seed_agreement([[0.5, 0.5], [0.5, 0.5]]))  # constant: undefined, not 0


def test_mean_agreement_compares_the_means_of_disjoint_groups_of_seeds():
    rng = np.random.default_rng(0)
    per_seed = rng.random((6, 4))  # 6 designs, 4 seeds
    # k = 2: the three ways to split 4 seeds into two pairs.
    splits = [((0, 1), (2, 3)), ((0, 2), (1, 3)), ((0, 3), (1, 2))]
    expected = np.mean([stats.kendalltau(per_seed[:, list(a)].mean(1),
                                         per_seed[:, list(b)].mean(1))[0] for a, b in splits])
    assert mean_agreement(per_seed, 2) == pytest.approx(expected)
    assert mean_agreement(per_seed, 1) == pytest.approx(seed_agreement(per_seed))
    assert math.isnan(mean_agreement(per_seed, 3))  # 4 seeds hold no two groups of 3
    summary = summarize_designs(per_seed)["mean_of_k_tau"]
    assert summary.keys() == {1, 2} and summary[2] == pytest.approx(expected)


def test_single_run_tau_is_each_seed_against_the_mean_of_the_others():
    per_seed = [[0.5, 0.6, 0.9], [0.7, 0.8, 0.6], [0.6, 0.5, 0.7], [0.9, 0.7, 0.8]]
    a, b, c = (np.array(col) for col in zip(*per_seed))
    expected = np.mean([stats.kendalltau(a, (b + c) / 2)[0], stats.kendalltau(b, (a + c) / 2)[0],
                        stats.kendalltau(c, (a + b) / 2)[0]])
    assert single_run_tau(per_seed) == pytest.approx(expected)
    # Two seeds: each against the other, which is their pairwise tau.
    two = [row[:2] for row in per_seed]
    assert single_run_tau(two) == pytest.approx(seed_agreement(two))
    assert math.isnan(single_run_tau([[0.5], [0.7]]))


# ----- bootstrap intervals and the designs x seeds summary -------------------------------
PER_SEED = [[0.91, 0.89, 0.93], [0.72, 0.80, 0.75], [0.55, 0.52, 0.60], [0.83, 0.86, 0.79],
            [0.64, 0.70, 0.61], [0.50, 0.51, 0.49]]


def test_bootstrap_interval_is_the_percentiles_of_the_resampled_statistic():
    # The same resamples recomputed with scipy: the interval must be their 5th/95th percentile.
    table = np.asarray(PER_SEED)
    rng = np.random.default_rng(7)
    expected = []
    for _ in range(300):
        rows = rng.integers(0, len(table), size=len(table))
        cols = table[rows].T
        taus = [stats.kendalltau(cols[a], cols[b]).statistic
                for a, b in ((0, 1), (0, 2), (1, 2))]
        taus = [t for t in taus if math.isfinite(t)]
        if taus:
            expected.append(np.mean(taus))
    lo, hi = seed_agreement_ci(PER_SEED, samples=300, seed=7)
    assert lo == pytest.approx(np.percentile(expected, 5), abs=1e-12)
    assert hi == pytest.approx(np.percentile(expected, 95), abs=1e-12)
    assert lo <= seed_agreement(PER_SEED) <= hi


def test_correlation_interval_brackets_the_statistic_and_narrows_with_agreement():
    x = np.arange(12, dtype=float)
    lo, hi = correlation_ci(x, x + 0.0)
    assert lo == hi == pytest.approx(1.0)  # perfect agreement survives every resample
    noisy = x + np.random.default_rng(0).normal(0, 4, 12)
    lo2, hi2 = correlation_ci(x, noisy)
    assert lo2 < kendall_tau_b(x, noisy) < hi2 and hi2 - lo2 > 0.1


def test_bootstrap_of_an_always_undefined_statistic_is_nan():
    assert all(math.isnan(v) for v in bootstrap_ci(lambda rows: math.nan, 5, samples=10))


def test_summary_spread_noise_and_seed_tau():
    s = summarize_designs(PER_SEED)
    means = np.mean(PER_SEED, axis=1)
    assert s["spread"] == pytest.approx(means.max() - means.min())
    assert s["mean_seed_std"] == pytest.approx(np.mean(np.std(PER_SEED, axis=1, ddof=1)))
    assert s["seed_tau"] == pytest.approx(seed_agreement(PER_SEED))
    assert s["seed_tau_ci"][0] <= s["seed_tau"] <= s["seed_tau_ci"][1]
    assert s["seed_tau"] > 0.8  # these designs are well separated relative to seed noise
    assert s["single_run_tau"] == pytest.approx(single_run_tau(PER_SEED))


def test_top_k_hit_and_regret():
    predicted, actual = [0.6, 0.9, 0.7, 0.5], [0.80, 0.78, 0.85, 0.60]
    assert regret(predicted, actual) == pytest.approx(0.85 - 0.78)
    assert not top_k_hit(predicted, actual, 2) and top_k_hit(predicted, actual, 3)
    assert regret(actual, actual) == 0.0


def test_within_design_correlation_ignores_each_designs_level():
    start = [[0.60, 0.70, 0.65], [0.80, 0.90, 0.85]]
    # The second design is better everywhere; within designs, y follows x exactly...
    assert within_design_correlation(start, [[0.1, 0.3, 0.2], [5.0, 5.2, 5.1]]) == \
        pytest.approx(1.0)
    # ... or against it; and a design's level alone correlates with nothing.
    assert within_design_correlation(start, [[0.3, 0.1, 0.2], [0.3, 0.1, 0.2]]) == \
        pytest.approx(-1.0)
    assert math.isnan(within_design_correlation(start, [[1, 1, 1], [2, 2, 2]]))
    x = np.random.default_rng(0).normal(size=(4, 5))
    y = x + np.random.default_rng(1).normal(size=(4, 5))
    dx, dy = x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True)
    assert within_design_correlation(x, y) == pytest.approx(
        np.corrcoef(dx.ravel(), dy.ravel())[0, 1])
