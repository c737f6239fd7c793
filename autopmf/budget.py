"""The training-memory budget: which architectures of a space fit it, and how to move one into it.

A `Budget` pairs a space with the memory model's estimate for one training setting (built once,
here) and a limit in bytes. The search repairs every candidate into it; the supernet trains only
what it allows, starting from its largest subnet or a cover of its slots. Without a limit every
architecture fits. Nothing here needs NNI.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Callable, Mapping

from autopmf.memory import (GIB, MemoryProfile, check_budget, estimate_bytes, load_profile,
                            reference_within_budget)
from autopmf.space import Architecture, SearchSpace
from supernet.sampling import WARMUP_RULES

Estimate = Callable[[Mapping[str, int]], int]  # architecture -> predicted peak bytes


def device_kind(device: str) -> str:
    """The memory model's device kind ("cpu" or "cuda") for a torch device name."""
    return "cuda" if device.startswith("cuda") else "cpu"


@dataclass(frozen=True)
class Budget:
    space: SearchSpace
    limit_bytes: int | None  # None: no budget, everything fits
    profile: MemoryProfile | None = None  # the memory model of the space's training setting

    @classmethod
    def load(cls, space: SearchSpace, budget_gb: float | None, num_classes: int,
             device: str = "cpu") -> "Budget":
        """`budget_gb` GiB of training memory on `device`'s kind, as the memory model predicts
        it for this space's training setting; None: no budget (and no memory model loaded)."""
        if budget_gb is None:
            return cls(space, None)
        profile = load_profile(space, device=device_kind(device), num_classes=num_classes)
        return cls(space, int(budget_gb * GIB), profile)

    @property
    def limited(self) -> bool:
        return self.limit_bytes is not None

    def estimate(self, arch: Mapping[str, int]) -> int:
        """Predicted peak training memory of `arch` in bytes (0 without a budget)."""
        return 0 if self.profile is None else estimate_bytes(self.space, arch, self.profile)

    def check_feasible(self) -> None:
        """AutopmfError naming the smallest memory any architecture needs, if none fits."""
        if self.limited:
            check_budget(self.space, self.limit_bytes, self.profile)

    def repair(self, arch: Mapping[str, int]) -> Architecture | None:
        """`arch` stepped down into the budget (None: nothing near it fits)."""
        return repair(self.space, arch, self.estimate, self._limit())

    def largest(self) -> Architecture | None:
        return largest_within(self.space, self.estimate, self._limit())

    def warmup(self, rule: str) -> list[Architecture]:
        """The fixed subnets a supernet's warm-up trains: the largest within the budget
        ("largest"), subnets that between them fuse every slot ("cover"), or the first of
        those, which fuses the lowest slots that fit at the shortest prompts ("lowest")."""
        if rule not in WARMUP_RULES:
            raise ValueError(f"warm-up rule {rule!r} is not one of {WARMUP_RULES}")
        if rule == "largest":
            return [self.largest()]
        cover = covering_within(self.space, self.estimate, self._limit())
        return cover if rule == "cover" else cover[:1]

    def pmf_reference(self) -> tuple[int, int, Architecture] | None:
        """(n, M, arch): the PMF paper's design (the top n fusable slots fused, one prompt
        length M) that fits (`reference_within_budget`): the most top slots, then the longest
        prompt. None: not even the top slot fuses within the budget, or there is no budget."""
        if not self.limited:
            return None
        found = reference_within_budget(self.space, self.limit_bytes, self.profile)
        if found is None:
            return None
        arch = found[0]
        fused = self.space.fused_slots(arch)
        return len(fused), self.space.slot_configs(arch, 0)[fused[0]].query_len, arch

    def designs_within(self, exact_up_to: int = 20_000, samples: int = 4_000
                       ) -> tuple[int, int, bool]:
        """(fitting, total, exact): how many distinct designs (canonical architectures) of
        the space fit. Counted one by one up to `exact_up_to` designs; beyond, estimated from
        `samples` designs drawn uniformly (seeded), then `exact` is False."""
        per_slot = [_slot_designs(self.space, j) for j in self.space.fusable_slots]
        total = math.prod(len(options) for options in per_slot)
        if total <= exact_up_to:
            designs = (dict(kv for part in parts for kv in part.items())
                       for parts in itertools.product(*per_slot))
            return sum(self.estimate(a) <= self._limit() for a in designs), total, True
        rng = random.Random(0)
        hits = sum(self.estimate(dict(kv for options in per_slot
                                      for kv in rng.choice(options).items())) <= self._limit()
                   for _ in range(samples))
        return round(total * hits / samples), total, False

    def _limit(self) -> int:
        return 0 if self.limit_bytes is None else self.limit_bytes  # unlimited: estimates are 0


def _slot_designs(space: SearchSpace, slot: int) -> list[dict[str, int]]:
    """The distinct settings of one slot's choices: off (its other choices do not matter),
    or on with each combination of them."""
    keys = [k for k in space.choices() if k.rsplit("_", 1)[1] == str(slot)]
    others = [k for k in keys if not k.startswith("fusion_")]
    choices = space.choices()
    off = {k: (0 if k.startswith("fusion_") else choices[k][0]) for k in keys}
    on = [{f"fusion_{slot}": 1, **dict(zip(others, values))}
          for values in itertools.product(*(choices[k] for k in others))]
    return [off, *on]


def repair(space: SearchSpace, arch: Mapping[str, int], estimate: Estimate,
           budget_bytes: int) -> Architecture | None:
    """Step choices down until the estimate fits: each round takes the single one-step-down
    change that fits with the most memory left in use (the smallest change), or else the one
    that saves the most. None when even all-off does not fit."""
    choices = space.choices()
    arch = space.canonical(arch)
    need = estimate(arch)
    while need > budget_bytes:
        moves = []
        for key, values in choices.items():
            i = values.index(arch[key])
            slot_fuses = arch[f"fusion_{key.rsplit('_', 1)[1]}"]
            if i == 0 or not slot_fuses:
                continue  # already lowest, or a choice of a slot that does not fuse
            moved = space.canonical({**arch, key: values[i - 1]})
            moves.append((estimate(moved), key, moved))
        if not moves:
            return None
        fitting = [m for m in moves if m[0] <= budget_bytes]
        need, _, arch = max(fitting, key=lambda m: m[0]) if fitting else min(
            moves, key=lambda m: m[0])
    return arch


def largest_within(space: SearchSpace, estimate: Estimate, budget_bytes: int
                   ) -> Architecture | None:
    """A largest architecture that fits — the most choices stepped up: from nothing fused,
    repeatedly take the cheapest one-step-up change (fuse a slot at its shortest prompts, or
    lengthen a fused slot's prompts) that still fits, until none fits. Cheapest first fuses
    the top slots before the memory-hungry low ones and grows prompts last. (Repairing the
    space's largest architecture instead drops whole slots, far below the budget.)"""
    choices = space.choices()
    arch = space.canonical({key: min(values) for key, values in choices.items()})
    if estimate(arch) > budget_bytes:
        return None
    while True:
        moves = []
        for key, values in choices.items():
            i = values.index(arch[key])
            slot_fuses = arch[f"fusion_{key.rsplit('_', 1)[1]}"]
            if i == len(values) - 1 or not (slot_fuses or key.startswith("fusion_")):
                continue  # already largest, or a choice of a slot that does not fuse
            moved = space.canonical({**arch, key: values[i + 1]})
            need = estimate(moved)
            if need <= budget_bytes:
                moves.append((need, key, moved))
        if not moves:
            return arch
        arch = min(moves, key=lambda m: m[0])[2]


def covering_within(space: SearchSpace, estimate: Estimate, budget_bytes: int
                    ) -> list[Architecture]:
    """Subnets within the budget, at the shortest prompts, that between them fuse every
    fusable slot that can fuse within it. Each takes the lowest slots not yet covered while
    they fit (low slots are the memory-hungry ones), then any other slot that still fits,
    top first. A warm-up that cycles through them trains every slot's prompt bank, where the
    largest subnet within the budget trains only the few top slots it fuses."""
    # Every choice at its smallest: nothing fused (fusion_j = 0), the shortest prompts.
    nothing = space.canonical({key: min(values) for key, values in space.choices().items()})
    uncovered = sorted(space.fusable_slots)
    cover = []
    while uncovered:
        arch = dict(nothing)
        for slot in uncovered + sorted(set(space.fusable_slots) - set(uncovered), reverse=True):
            trial = space.canonical({**arch, f"fusion_{slot}": 1})
            if estimate(trial) <= budget_bytes:
                arch = trial
        fused = set(space.fused_slots(arch))
        if not fused & set(uncovered):
            break  # the slots left cannot fuse within the budget at all
        cover.append(arch)
        uncovered = [slot for slot in uncovered if slot not in fused]
    return cover
