"""The search space as NNI 3.0 sees it, and the budget-aware evolution strategy.

NNI facts this relies on (DESIGN 5): a space is a `MutableDict` of `Categorical`s plus a
`Constraint`; upstream initial sampling is pure rejection sampling, which under a tight budget
evaluates nothing and says nothing — so `BudgetedEvolution` samples freely, then *repairs*
each sample into the budget (stepping choices down, `autopmf.budget`), and only then asks NNI
to validate it.
"""

from __future__ import annotations

import os

os.environ.setdefault("NNI_FRAMEWORK", "none")  # else importing strategies needs lightning

from typing import Callable, Mapping  # noqa: E402

import nni  # noqa: E402
from nni.mutable import Categorical, Constraint, ConstraintViolation, MutableDict  # noqa: E402
from nni.nas.strategy import RegularizedEvolution  # noqa: E402

from autopmf.budget import Estimate  # noqa: E402
from autopmf.space import Architecture, SearchSpace  # noqa: E402

BUDGET_LABEL = "memory_budget"


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
