"""The search space as NNI 3.0 sees it, and the budget-aware evolution strategy.

NNI facts this relies on (DESIGN 5): a space is a `MutableDict` of `Categorical`s plus a
`Constraint`; upstream initial sampling is pure rejection sampling, which under a tight budget
evaluates nothing and says nothing — so `BudgetedEvolution` samples freely, then *repairs*
each sample into the budget (stepping choices down), and only then asks NNI to validate it.
"""

from __future__ import annotations

import os

os.environ.setdefault("NNI_FRAMEWORK", "none")  # else importing strategies needs lightning

from typing import Callable, Mapping  # noqa: E402

import nni  # noqa: E402
from nni.mutable import Categorical, Constraint, ConstraintViolation, MutableDict  # noqa: E402
from nni.nas.strategy import RegularizedEvolution  # noqa: E402

from autopmf.space import Architecture, SearchSpace  # noqa: E402

BUDGET_LABEL = "memory_budget"
Estimate = Callable[[Mapping[str, int]], int]


def quiet_nni() -> None:
    """NNI logs INFO to stdout; keep the terminal for our own progress."""
    import logging

    from nni.runtime.log import silence_stdout

    silence_stdout()
    # Its warnings and errors only ever narrate an exception that reaches us anyway (it runs
    # with continue_on_failure off): left on, they print before our one-line error.
    logging.getLogger("nni").setLevel(logging.CRITICAL)


class MemoryBudget(Constraint):
    """Rejects architectures whose predicted training memory exceeds the budget."""

    def __init__(self, choices: Mapping[str, Categorical], estimate: Estimate,
                 budget_bytes: int):
        super().__init__()
        self.label = BUDGET_LABEL
        self.choices = dict(choices)
        self.estimate = estimate
        self.budget_bytes = budget_bytes

    def leaf_mutables(self, is_leaf):
        for choice in self.choices.values():
            yield from choice.leaf_mutables(is_leaf)
        yield self

    def check_contains(self, sample):
        arch = {k: sample[k] for k in self.choices}
        need = self.estimate(arch)
        if need > self.budget_bytes:
            return ConstraintViolation(f"needs {need} bytes, over the budget {self.budget_bytes}")
        return None


def build_nni_space(space: SearchSpace, estimate: Estimate, budget_bytes: int
                    ) -> tuple[MutableDict, dict[str, Categorical]]:
    choices = {key: Categorical(list(values), label=key)
               for key, values in space.choices().items()}
    return MutableDict({**choices, BUDGET_LABEL: MemoryBudget(choices, estimate, budget_bytes)}
                       ), choices


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


class BudgetedEvolution(RegularizedEvolution):
    """RegularizedEvolution whose new individuals (random or mutated) are repaired into the
    budget and deduplicated as canonical architectures."""

    def __init__(self, choices: Mapping[str, Categorical],
                 fix: Callable[[dict], Architecture | None], **kwargs):
        super().__init__(crossover=False, **kwargs)
        self._choices = dict(choices)
        self._fix = fix

    def random(self):
        sample = {key: c.random(random_state=self._random_state)
                  for key, c in self._choices.items()}
        return self._admit(sample)

    def new_individual(self):
        sample = dict(self.best_parent())
        sample.pop(BUDGET_LABEL, None)
        for key, choice in self._choices.items():
            if self._random_state.uniform(0, 1) < self.mutation_prob:
                sample[key] = choice.random(random_state=self._random_state)
        return self._admit(sample)

    def _admit(self, sample: dict):
        fixed = self._fix(sample)
        if fixed is None:
            raise ConstraintViolation("no architecture fits the budget")
        if self._dedup_helper is not None:
            self._dedup_helper.dedup(fixed)  # raises on a repeat: the strategy redraws
        model = self.model_space.freeze(dict(fixed))  # NNI validates choices and budget
        self._individual_counter += 1
        return model


def report(score: float) -> None:
    nni.report_final_result(score)
