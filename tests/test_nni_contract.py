"""The contract with NNI: what autopmf/nni_space.py (the one module that talks to NNI) relies
on, checked against the installed release, so that an NNI upgrade that changes it fails here,
loudly, and not as a search that quietly evaluates nothing."""

import ast
import inspect
from pathlib import Path

import pytest

from autopmf import nni_space
from autopmf.budget import Budget
from tests.conftest import tiny_space

ROOT = Path(__file__).resolve().parent.parent


def test_only_the_adapter_imports_nni_or_sets_its_environment():
    offending = []
    for path in sorted([*(ROOT / "autopmf").rglob("*.py"), *(ROOT / "supernet").rglob("*.py")]):
        if path.name == "nni_space.py":
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offending += [f"{path.relative_to(ROOT)}: {n}" for n in names
                          if n.split(".")[0] == "nni"]
        if "NNI_FRAMEWORK" in text:
            offending.append(f"{path.relative_to(ROOT)}: NNI_FRAMEWORK")
    assert offending == []


def test_the_private_nni_names_relied_on_exist():
    from nni.nas.evaluator import Evaluator
    from nni.nas.strategy import RegularizedEvolution

    assert set(inspect.signature(RegularizedEvolution.__init__).parameters) >= {
        "population_size", "sample_size", "mutation_prob", "crossover", "seed"}
    strategy = nni_space.BudgetedEvolution({}, lambda arch: arch, population_size=4,
                                           sample_size=2, seed=0)
    nni_space.check_contract(strategy)  # raises, naming what is missing
    assert callable(strategy._dedup_helper.dedup) and callable(strategy._random_state.uniform)
    assert isinstance(strategy._individual_counter, int)
    for name in nni_space.RELIED_ON["Evaluator"]:
        assert name in vars(Evaluator), f"Evaluator.{name}"


def test_the_contract_check_names_what_changed():
    class Changed:
        mutation_prob = 0.1

    with pytest.raises(RuntimeError, match=r"no longer has RegularizedEvolution\._dedup_helper"):
        nni_space.check_contract(Changed())


class ToyBudget(Budget):
    """Memory = the sum of the prompt lengths of the fused slots, in bytes."""

    def estimate(self, arch):
        return sum(v for k, v in arch.items() if k.startswith("prompt_")
                   and arch[f"fusion_{k.rsplit('_', 1)[1]}"])


def test_a_search_runs_in_process_through_the_adapter():
    space = tiny_space()  # 3 fusable slots, prompt lengths 1, 2, 4
    budget = ToyBudget(space, limit_bytes=5)
    seen = []

    def score(arch):
        seen.append(arch)
        return sum(arch.values()) / 10

    nni_space.run_evolution(space, budget, score, trials=9, population=4, tournament=2,
                            mutation_prob=0.5, seed=0)
    assert len(seen) == 9  # every trial reached the scorer, as NNI's engine ran them
    assert all(set(arch) == set(space.choices()) for arch in seen)
    assert all(budget.estimate(arch) <= 5 for arch in seen)  # repaired into the budget
    keys = [tuple(sorted(space.canonical(arch).items())) for arch in seen]
    assert len(set(keys)) == len(keys)  # deduplicated
