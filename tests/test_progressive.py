"""Progressive shrinking (--sampling progressive): the shared heads are refitted as each
stage starts, a resumed run repeats that exactly, and few-shot splits are refused."""

import json

import pytest
import torch

from autopmf import supernet_train
from autopmf.errors import AutopmfError
from autopmf.files import load_tensors
from autopmf.supernet_train import SupernetConfig, stage_head_subnets, train_supernet
from supernet.sampling import ArchSampler, largest_arch
from tests.conftest import tiny_space

DATA = "digits:examples_per_image=1"


def config(**kw):
    return SupernetConfig(**{"epochs": 2, "batch_size": 16, "lr": 5e-3, "progress": False,
                             "sampling": "progressive", "distill": True, **kw})


def test_a_stage_refits_the_heads_on_the_largest_and_its_first_distinct_draws():
    space = tiny_space()
    sampler = ArchSampler(space, "progressive", seed=0, total_steps=90)
    archs = stage_head_subnets(sampler, 30)  # the second stage: the largest's slots only
    largest = space.canonical(largest_arch(space))
    assert archs[0] == largest
    assert len(archs) == supernet_train.HEAD_FIT_SUBNETS
    assert len({json.dumps(a, sort_keys=True) for a in archs}) == len(archs)
    assert all(space.fused_slots(a) == space.fused_slots(largest) for a in archs)
    draws = [json.dumps(sampler.sample(s), sort_keys=True) for s in range(30, 90)]
    assert all(json.dumps(a, sort_keys=True) in draws for a in archs[1:])


def test_the_heads_are_refitted_as_each_later_stage_starts(tmp_path, cache_dir, monkeypatch):
    refits, fits = [], []
    real_refit = supernet_train.SupernetSteps.refit_heads
    real_fit = supernet_train.fit_shared_heads

    def spying_refit(self, step):
        refits.append((step, self.sampler.stage(step - 1), self.sampler.stage(step)))
        before = {k: v.clone() for k, v in self.supernet.heads.state_dict().items()}
        real_refit(self, step)
        after = self.supernet.heads.state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)

    monkeypatch.setattr(supernet_train.SupernetSteps, "refit_heads", spying_refit)
    monkeypatch.setattr(supernet_train, "fit_shared_heads",
                        lambda shot, archs, *a, **k: (fits.append(archs),
                                                      real_fit(shot, archs, *a, **k))[1])
    run = train_supernet(tiny_space(), DATA, tmp_path / "ps", config())
    steps = 2 * run.metrics["steps_per_epoch"]
    assert [(before, after) for _, before, after in refits] == [(0, 1), (1, 2)]
    assert [step for step, _, _ in refits] == [-(-steps // 3), -(-2 * steps // 3)]
    assert len(fits) == 3  # the start's fit, then one per later stage
    assert all(len(archs) > 1 for archs in fits[1:])


def test_a_resumed_progressive_run_ends_with_the_same_weights(tmp_path, cache_dir,
                                                              monkeypatch):
    space = tiny_space()
    clean = train_supernet(space, DATA, tmp_path / "clean", config())
    real_order = supernet_train.SupernetSteps.order

    def dies_in_second_epoch(self, epoch):  # the second epoch holds the last stage's start
        if epoch == 1:
            raise KeyboardInterrupt
        return real_order(self, epoch)

    monkeypatch.setattr(supernet_train.SupernetSteps, "order", dies_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(space, DATA, tmp_path / "cut", config())
    monkeypatch.setattr(supernet_train.SupernetSteps, "order", real_order)
    resumed = train_supernet(space, DATA, tmp_path / "cut", config(), resume=True)
    a = load_tensors(tmp_path / "clean" / "supernet.safetensors")
    b = load_tensors(tmp_path / "cut" / "supernet.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ([h["val"] for h in resumed.metrics["history"]]
            == [h["val"] for h in clean.metrics["history"]])


def test_progressive_shrinking_of_a_few_shot_supernet_is_refused(tmp_path):
    with pytest.raises(AutopmfError, match="--few-shot none"):
        train_supernet(tiny_space(), DATA, tmp_path / "run",
                       config(few_shot="top-slot", distill=False))
    assert not (tmp_path / "run").exists()
