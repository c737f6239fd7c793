"""bench/search_quality.py's view of a space: the PMF reference it retrains and the count of
designs that fit, in the demo's kind of space (shared prompt lengths, listed one by one) and
in a larger one (split QP/QCP/FCP lengths plus mapping widths, too many to list)."""

import sys
from pathlib import Path

import pytest

from tests.conftest import tiny_space

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from search_quality import feasible_archs, feasible_count, reference_that_fits  # noqa: E402

LARGE = dict(prompt_lengths=[0, 1, 2, 4], prompt_mode="split", mapping_hidden=[16, 32])


@pytest.fixture(autouse=True)
def _own_cache(cache_dir):
    """The memory profiles go to this module's cache, not the user's."""


def budget_between(space, share: float) -> float:
    """A budget `share` of the way from the smallest design's memory to the largest's (GiB)."""
    from autopmf.memory import GIB, estimate_bytes, load_profile
    from autopmf.memory.estimator import max_memory_arch, min_memory_arch

    profile = load_profile(space, num_classes=2)
    low, high = min_memory_arch(space, profile)[1], max_memory_arch(space, profile)[1]
    assert estimate_bytes(space, max_memory_arch(space, profile)[0], profile) == high
    return (low + share * (high - low)) / GIB


def test_small_space_counts_every_design_that_fits_exactly():
    space = tiny_space()
    budget = budget_between(space, 0.5)
    count, exact = feasible_count(space, budget, num_classes=2)
    listed = feasible_archs(space, budget)
    assert exact and count == len(listed)
    assert 0 < count < 4 ** 3  # not every design fits (4 settings per slot: off, M1, M2, M4)


def test_large_space_estimates_the_count_it_cannot_list():
    space = tiny_space(**LARGE)
    per_slot = 1 + 3 * 4 * 4 * 2  # off, or on with QP x QCP x FCP x width
    budget = budget_between(space, 0.5)
    count, exact = feasible_count(space, budget, num_classes=2)
    assert not exact and 0 < count < per_slot ** 3
    everything, _ = feasible_count(space, budget_between(space, 1.0), num_classes=2)
    assert everything == per_slot ** 3  # every sampled design fits: the estimate is the total


@pytest.mark.parametrize("overrides", [{}, LARGE], ids=["shared", "split"])
def test_reference_names_its_fused_slots_and_prompt_length(overrides):
    space = tiny_space(**overrides)
    name, gib, arch = reference_that_fits(space, budget_between(space, 1.0), num_classes=2)
    assert name == "reference:3:4"  # every slot fused, the longest prompts
    configs = space.slot_configs(arch, 0)
    assert sorted(configs) == [0, 1, 2]
    assert {(c.query_len, c.query_context_len, c.fusion_context_len)
            for c in configs.values()} == {(4, 4, 4)}
    assert gib > 0


def test_reference_in_a_split_space_never_tries_a_prompt_length_of_0():
    """Where not every slot fits, the search goes down the lengths, past the 0 that a split
    space allows for its context prompts only, to fewer fused slots."""
    space = tiny_space(**LARGE)
    budget = budget_between(space, 0.3)
    name, gib, arch = reference_that_fits(space, budget, num_classes=2)
    fused = space.fused_slots(arch)
    assert 1 <= len(fused) < 3 and fused == [3 - len(fused) + k for k in range(len(fused))]
    assert name.startswith(f"reference:{len(fused)}:") and gib <= budget
