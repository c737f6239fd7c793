"""Which subnet trains at each supernet step.

Sampling is a pure function of (seed, step): every distributed rank draws the same subnet
without talking to the others, and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import random
from typing import Callable, Mapping

from autopmf.space import Architecture, SearchSpace

SAMPLING_RULES = ("uniform", "sandwich")
Feasible = Callable[[Mapping[str, int]], bool]


def largest_arch(space: SearchSpace) -> Architecture:
    """Every fusable slot fused, every choice at its largest value."""
    return {key: max(values) for key, values in space.choices().items()}


def smallest_arch(space: SearchSpace) -> Architecture:
    """Only the top fusable slot fused, every choice at its smallest value (the smallest subnet
    that still fuses: the all-off subnet trains nothing but the heads)."""
    arch = {key: min(values) for key, values in space.choices().items()}
    arch[f"fusion_{max(space.fusable_slots)}"] = 1
    return arch


class ArchSampler:
    """uniform: every choice uniformly at random. sandwich: the largest, the smallest and a
    uniform subnet in turn (AutoFormer's sandwich rule, one subnet per step).
    `feasible` (e.g. "within the memory budget") restricts the draws; a bounded number of
    redraws, then the smallest subnet."""

    MAX_REDRAWS = 100

    def __init__(self, space: SearchSpace, rule: str = "uniform", seed: int = 0,
                 feasible: Feasible | None = None):
        if rule not in SAMPLING_RULES:
            raise ValueError(f"sampling rule {rule!r} is not one of {SAMPLING_RULES}")
        self.space, self.rule, self.seed, self.feasible = space, rule, seed, feasible

    def sample(self, step: int) -> Architecture:
        rng = random.Random(f"autopmf-sampler:{self.seed}:{step}")
        if self.rule == "sandwich" and step % 3 == 0:
            arch = largest_arch(self.space)
        elif self.rule == "sandwich" and step % 3 == 1:
            arch = smallest_arch(self.space)
        else:
            arch = self.space.random_arch(rng)
        for _ in range(self.MAX_REDRAWS):
            if self.feasible is None or self.feasible(arch):
                return self.space.canonical(arch)
            arch = self.space.random_arch(rng)
        return self.space.canonical(smallest_arch(self.space))


def reference_subnets(space: SearchSpace, seed: int = 0, n_random: int = 3
                      ) -> dict[str, Architecture]:
    """The fixed subnets validated after every supernet epoch: comparable across epochs."""
    rng = random.Random(f"autopmf-reference:{seed}")
    subnets = {"largest": largest_arch(space), "smallest": smallest_arch(space)}
    for i in range(n_random):
        subnets[f"random_{i}"] = space.canonical(space.random_arch(rng))
    return subnets
