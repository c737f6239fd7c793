"""The one module that talks to NNI 3.0: the search space as NNI sees it, the budget-aware
evolution strategy, the evaluator, and running them in-process (`run_evolution`).

NNI facts this relies on (DESIGN 5): a space is a `MutableDict` of `Categorical`s plus a
`Constraint`; upstream initial sampling is pure rejection sampling, which under a tight budget
evaluates nothing and says nothing — so `BudgetedEvolution` samples freely, then *repairs*
each sample into the budget (stepping choices down, `autopmf.budget`), and only then asks NNI
to validate it.

It also relies on NNI internals that are not public API, listed in `RELIED_ON`;
`check_contract` (run before every search, and by tests/test_nni_contract.py) fails loudly
when an NNI release changes them. Importing this module imports NNI; the rest of autopmf
imports it only when a search runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("NNI_FRAMEWORK", "none")  # else importing strategies needs lightning

import inspect  # noqa: E402
from typing import Callable, Mapping  # noqa: E402

import nni  # noqa: E402
from nni.mutable import Categorical, Constraint, ConstraintViolation, MutableDict  # noqa: E402
from nni.nas.evaluator import Evaluator  # noqa: E402
from nni.nas.execution import SequentialExecutionEngine  # noqa: E402
from nni.nas.space import RawFormatModelSpace  # noqa: E402
from nni.nas.strategy import RegularizedEvolution  # noqa: E402

from autopmf.budget import Budget, Estimate  # noqa: E402
from autopmf.space import Architecture, SearchSpace  # noqa: E402

BUDGET_LABEL = "memory_budget"
# NNI's private names this module uses: attributes of a RegularizedEvolution after __init__,
# and the methods an Evaluator subclass must provide (NNI calls `_execute` per candidate).
RELIED_ON = {
    "RegularizedEvolution instance": ("_dedup_helper", "_random_state", "_individual_counter",
                                      "mutation_prob", "best_parent"),
    "Evaluator": ("_execute", "_dump", "_load"),
}


def check_contract(strategy: RegularizedEvolution | None = None) -> None:
    """RuntimeError naming what changed, if this NNI lacks what `RELIED_ON` lists."""
    missing = []
    if strategy is not None:
        missing += [f"RegularizedEvolution.{name}"
                    for name in RELIED_ON["RegularizedEvolution instance"]
                    if not hasattr(strategy, name)]
        helper = getattr(strategy, "_dedup_helper", None)
        if helper is not None and not callable(getattr(helper, "dedup", None)):
            missing.append("RegularizedEvolution._dedup_helper.dedup")
        if not callable(getattr(getattr(strategy, "_random_state", None), "uniform", None)):
            missing.append("RegularizedEvolution._random_state.uniform")
    missing += [f"Evaluator.{name}" for name in RELIED_ON["Evaluator"]
                if not hasattr(Evaluator, name)]
    if "model" not in inspect.signature(Evaluator._execute).parameters:
        missing.append("Evaluator._execute(model)")
    if missing:
        raise RuntimeError(
            f"nni {nni.__version__} no longer has {', '.join(missing)}, which autopmf's search "
            "uses (autopmf/nni_space.py); install the NNI release setup.cfg allows "
            "(nni>=3.0,<4) or adapt that module")


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


def score_each(score: Callable[[Architecture], float]) -> Evaluator:
    """An NNI evaluator that scores each candidate with `score(arch)` and reports it."""

    class ScoreEach(Evaluator):
        def _execute(self, model) -> None:  # NNI calls it with the frozen model
            arch = {k: v for k, v in model.sample.items() if k != BUDGET_LABEL}
            nni.report_final_result(score(arch))

        def _dump(self):
            return {}

        @staticmethod
        def _load(**kwargs):
            raise NotImplementedError

    return ScoreEach()


def run_evolution(space: SearchSpace, budget: Budget, score: Callable[[Architecture], float],
                  *, trials: int, population: int, tournament: int, mutation_prob: float,
                  seed: int) -> None:
    """NNI's RegularizedEvolution, in-process, for `trials` candidates of `space`: each one
    repaired into `budget`, deduplicated, and scored by `score(arch)`, in order."""
    quiet_nni()
    nni_space, choices = build_nni_space(space, budget.estimate, budget.limit_bytes)
    strategy = BudgetedEvolution(choices, budget.repair, population_size=population,
                                 sample_size=tournament, mutation_prob=mutation_prob, seed=seed)
    check_contract(strategy)
    engine = SequentialExecutionEngine(max_model_count=trials)
    strategy(RawFormatModelSpace(nni_space, score_each(score)), engine)
