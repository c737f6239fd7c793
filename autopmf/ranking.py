"""Rank statistics for judging a ranking of designs: against another ranking (a supernet's
inherited scores against standalone training) or against itself (seed against seed).

Kendall's tau-b and Spearman's rho follow scipy's definitions (the tests check them against
scipy on fixed numbers); the bootstrap resamples *designs*, since the question is how the
ranking of designs would hold up on another set of designs like these.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 2000
CI_LEVEL = 0.90


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks 1..n; tied values share the mean of the ranks they span."""
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    start = 0
    while start < len(x):
        end = start
        while end + 1 < len(x) and x[order[end + 1]] == x[order[start]]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the average ranks; NaN when either side is constant."""
    rx, ry = average_ranks(x) - (len(x) + 1) / 2, average_ranks(y) - (len(y) + 1) / 2
    denom = math.sqrt(float(rx @ rx) * float(ry @ ry))
    return float(rx @ ry) / denom if denom > 0 else math.nan


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in
    y), so ties on either side neither count for nor against; NaN when a side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    i, j = np.triu_indices(len(x), k=1)
    sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
    denom = math.sqrt(float(np.count_nonzero(sx)) * float(np.count_nonzero(sy)))
    return float(np.sum(sx * sy)) / denom if denom > 0 else math.nan


def _finite_mean(values: Sequence[float]) -> float:
    """The mean of the defined (finite) values; NaN when none is."""
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def seed_agreement(per_seed: Sequence[Sequence[float]]) -> float:
    """Mean Kendall tau-b over every pair of seeds (rows: designs, columns: seeds): how alike
    two trainings that differ only in their seed rank the designs. NaN with one seed, or when
    no pair is defined."""
    return mean_agreement(per_seed, 1)


def single_run_tau(per_seed: Sequence[Sequence[float]]) -> float:
    """Mean over seeds of Kendall tau-b between that seed's scores and the mean of the other
    seeds' (rows: designs, columns: seeds): how well one standalone training ranks designs
    against the seed mean. A cheaper proxy of standalone training (a supernet's inherited
    scores, a short fine-tune) can hardly beat it. NaN with fewer than two seeds."""
    table = np.asarray(per_seed, dtype=float)
    if table.shape[1] < 2:
        return math.nan
    return _finite_mean([kendall_tau_b(table[:, s], np.delete(table, s, axis=1).mean(axis=1))
                         for s in range(table.shape[1])])


def mean_agreement(per_seed: Sequence[Sequence[float]], k: int) -> float:
    """Mean Kendall tau-b between the seed means of two disjoint groups of k seeds, over
    every such pair of groups (rows: designs, columns: seeds): how alike two yardsticks that
    each average k trainings rank the designs (k = 1: two single seeds). NaN when there
    are fewer than 2k seeds."""
    table = np.asarray(per_seed, dtype=float)
    seeds = range(table.shape[1])
    taus = []
    for first in itertools.combinations(seeds, k):
        rest = [s for s in seeds if s not in first]
        for second in itertools.combinations(rest, k):
            if first < second:  # each unordered pair of groups once
                taus.append(kendall_tau_b(table[:, list(first)].mean(axis=1),
                                          table[:, list(second)].mean(axis=1)))
    return _finite_mean(taus)


def within_design_correlation(x: Sequence[Sequence[float]], y: Sequence[float]) -> float:
    """Pearson correlation of two scores of the same runs (rows: designs, columns: seeds)
    after removing each design's mean of each: how much of a design's seed-to-seed spread in
    y goes with its spread in x (e.g. the score a run starts from and the one it ends at).
    NaN when either has no spread within designs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx = (x - x.mean(axis=1, keepdims=True)).ravel()
    dy = (y - y.mean(axis=1, keepdims=True)).ravel()
    scale = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / scale if scale > 0 else math.nan


def bootstrap_ci(statistic: Callable[[np.ndarray], float], n: int,
                 samples: int = BOOTSTRAP_SAMPLES, level: float = CI_LEVEL, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile interval of `statistic(rows)` over `samples` resamples of the n designs'
    indices with replacement (a resample whose statistic is undefined is skipped)."""
    rng = np.random.default_rng(seed)
    values = [statistic(rng.integers(0, n, size=n)) for _ in range(samples)]
    values = np.array([v for v in values if math.isfinite(v)])
    if not len(values):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def seed_agreement_ci(per_seed: Sequence[Sequence[float]], **kwargs) -> tuple[float, float]:
    table = np.asarray(per_seed, dtype=float)
    return bootstrap_ci(lambda rows: seed_agreement(table[rows]), len(table), **kwargs)


def correlation_ci(x: Sequence[float], y: Sequence[float],
                   correlation: Callable = kendall_tau_b, **kwargs) -> tuple[float, float]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    return bootstrap_ci(lambda rows: correlation(x[rows], y[rows]), len(x), **kwargs)


def summarize_designs(per_seed: Sequence[Sequence[float]]) -> dict:
    """Spread and noise of a designs x seeds table of scores.

    spread: best design's mean - worst design's mean; mean_seed_std: the mean over designs of
    the standard deviation across seeds (ddof=1). A ranking is usable when the spread is
    several times the noise and the seeds agree."""
    table = np.asarray(per_seed, dtype=float)
    means = table.mean(axis=1)
    stds = table.std(axis=1, ddof=1) if table.shape[1] > 1 else np.zeros(len(table))
    lo, hi = seed_agreement_ci(table)
    return {"spread": float(means.max() - means.min()),
            "mean_seed_std": float(stds.mean()),
            "seed_tau": seed_agreement(table), "seed_tau_ci": [lo, hi],
            "single_run_tau": single_run_tau(table),
            # Two yardsticks of k seeds each, for every k the seeds allow (k = 1: seed_tau).
            "mean_of_k_tau": {k: mean_agreement(table, k)
                              for k in range(1, table.shape[1] // 2 + 1)},
            "means": means.tolist(), "stds": stds.tolist()}


def top_k_hit(predicted: Sequence[float], actual: Sequence[float], k: int) -> bool:
    """Is the design ranked first by `predicted` among the k best by `actual`?"""
    best = int(np.argmax(predicted))
    return best in set(np.argsort(-np.asarray(actual, dtype=float), kind="stable")[:k])


def regret(predicted: Sequence[float], actual: Sequence[float]) -> float:
    """The best actual score in the set minus the actual score of the predicted winner."""
    actual = np.asarray(actual, dtype=float)
    return float(actual.max() - actual[int(np.argmax(predicted))])
