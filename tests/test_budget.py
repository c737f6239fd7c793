"""The training-memory budget (autopmf.budget): one object, built once, that needs no NNI."""

import os
import subprocess
import sys

import pytest

from autopmf.budget import Budget
from autopmf.errors import AutopmfError
from autopmf.memory import GIB, estimate_bytes, load_profile, max_memory_arch, min_memory_arch
from supernet.sampling import largest_arch
from tests.conftest import tiny_space


def test_the_budget_supernet_training_and_search_module_import_no_nni():
    # NNI (and its NNI_FRAMEWORK setting) comes in only when a search runs.
    code = ("import os, sys, autopmf.budget, autopmf.supernet_train, autopmf.search, "
            "autopmf.cli; print(sorted(m for m in sys.modules if m.split('.')[0] == 'nni'), "
            "'NNI_FRAMEWORK' in os.environ)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={k: v for k, v in os.environ.items()
                                          if k != "NNI_FRAMEWORK"}).stdout
    assert out.strip() == "[] False"


def test_a_budget_estimates_with_the_memory_model_and_repairs_into_itself():
    space = tiny_space()
    profile = load_profile(space, device="cpu", num_classes=2)
    low, high = min_memory_arch(space, profile)[1], max_memory_arch(space, profile)[1]
    budget = Budget.load(space, (low + high) / 2 / GIB, num_classes=2, device="cpu")
    largest = largest_arch(space)
    assert budget.estimate(largest) == estimate_bytes(space, largest, profile)
    assert budget.estimate(largest) > budget.limit_bytes
    fixed = budget.repair(largest)
    assert budget.estimate(fixed) <= budget.limit_bytes and space.fused_slots(fixed)
    assert budget.estimate(budget.largest()) <= budget.limit_bytes
    budget.check_feasible()
    with pytest.raises(AutopmfError, match="raise the budget to at least"):
        Budget.load(space, low / 2 / GIB, num_classes=2).check_feasible()


def test_without_a_budget_everything_fits():
    space = tiny_space()
    budget = Budget.load(space, None, num_classes=2)
    assert not budget.limited and budget.profile is None  # no memory model needed
    largest = space.canonical(largest_arch(space))
    assert budget.repair(largest) == largest and budget.largest() == largest
    budget.check_feasible()
    with pytest.raises(ValueError, match="warm-up rule"):
        budget.warmup("widest")
