"""In-place distillation in supernet training (--distill): the loss, and which steps use it."""

import math

import pytest
import torch

from autopmf import supernet_train
from autopmf.metrics import distillation_loss
from autopmf.run_dir import run_settings
from autopmf.supernet_train import SupernetConfig, train_supernet
from tests.conftest import tiny_space

DATA = "digits:examples_per_image=1"


def test_the_loss_is_cross_entropy_to_the_teachers_probabilities():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    p = teacher.softmax(-1)
    expected = -(p * student.log_softmax(-1)).sum(-1).mean()
    labels = torch.tensor([0, 1])  # single labels: softmax; their values play no part
    assert distillation_loss(student, teacher, labels).item() == pytest.approx(expected.item())
    multi = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    expected_multi = torch.nn.functional.binary_cross_entropy_with_logits(
        student, teacher.sigmoid())
    assert distillation_loss(student, teacher, multi).item() == pytest.approx(
        expected_multi.item())


def test_a_student_that_matches_its_teacher_gets_no_gradient():
    teacher = torch.randn(4, 3)
    student = teacher.clone().requires_grad_()
    distillation_loss(student, teacher, torch.tensor([0, 1, 2, 0])).backward()
    assert student.grad.abs().max().item() < 1e-6
    assert distillation_loss(teacher.clone().requires_grad_(), torch.randn(4, 3),
                             torch.zeros(4, dtype=torch.long)).requires_grad


def config(**kw):
    return SupernetConfig(**{"epochs": 1, "batch_size": 16, "lr": 5e-3, "progress": False,
                             **kw})


@pytest.mark.parametrize("sampling", ["sandwich", "progressive"])
def test_every_subnet_but_the_largest_learns_the_largests_predictions(tmp_path, cache_dir,
                                                                        monkeypatch, sampling):
    """Sandwich (and progressive shrinking's) steps: the largest's own steps take the labels;
    every other step's loss is the distillation loss against the largest's logits on the
    same rows, computed with the weights of that step and without a gradient."""
    seen = []
    real_loss = supernet_train.SupernetSteps.loss

    def spying_loss(self, logits, labels, metric):
        largest = self.supernet.space.canonical(self.sampler.largest)
        is_largest = self.supernet.space.canonical(self.arch) == largest
        loss = real_loss(self, logits, labels, metric)
        if self.teacher is None:
            expected = supernet_train.LoopHooks.loss(self, logits, labels, metric)
        else:
            assert not self.teacher.requires_grad
            expected = distillation_loss(logits, self.teacher, labels)
        seen.append((is_largest, self.teacher is None, torch.equal(loss, expected)))
        return loss

    monkeypatch.setattr(supernet_train.SupernetSteps, "loss", spying_loss)
    run = train_supernet(tiny_space(), DATA, tmp_path / "kd",
                         config(sampling=sampling, distill=True))
    assert seen and all(match for _, _, match in seen)
    assert all(is_largest == no_teacher for is_largest, no_teacher, _ in seen)
    assert {is_largest for is_largest, _, _ in seen} == {True, False}
    assert math.isfinite(run.metrics["history"][0]["loss"])
    assert run.metrics["config"]["distill"] is True


def test_distillation_changes_the_training_and_the_default_keeps_fingerprints(tmp_path,
                                                                            cache_dir):
    from autopmf.files import load_tensors
    space = tiny_space()
    train_supernet(space, DATA, tmp_path / "ce", config())
    train_supernet(space, DATA, tmp_path / "kd", config(distill=True))
    ce = load_tensors(tmp_path / "ce" / "supernet.safetensors")
    kd = load_tensors(tmp_path / "kd" / "supernet.safetensors")
    assert any(not torch.equal(ce[k], kd[k]) for k in ce)
    assert "distill" not in run_settings(config())
    assert run_settings(config(distill=True))["distill"] is True


def test_cli_distill_reaches_the_supernet_config():
    from autopmf.cli import _supernet_config, build_parser

    def parsed(*extra):
        return build_parser().parse_args(["supernet", "--space", "tiny", "--data", "digits",
                                          "--out", "x", *extra])
    assert _supernet_config(parsed(), tiny_space()).distill is False
    assert _supernet_config(parsed("--distill"), tiny_space()).distill is True


def test_distillation_without_the_sandwich_is_refused_before_anything_is_written(tmp_path,
                                                                                 cache_dir):
    from autopmf.errors import AutopmfError
    with pytest.raises(AutopmfError, match="--distill needs --sampling sandwich"):
        train_supernet(tiny_space(), DATA, tmp_path / "run",
                       config(sampling="top-slot", distill=True))
    assert not (tmp_path / "run").exists()
    from autopmf.search import SearchConfig, run_search
    with pytest.raises(AutopmfError, match="--distill needs --sampling sandwich"):
        run_search(tiny_space(), DATA, tmp_path / "search", SearchConfig(
            budget_gb=1.0, supernet=config(sampling="edges", distill=True)))
    assert not (tmp_path / "search").exists()


def test_the_demo_with_another_sampling_says_to_add_no_distill(tmp_path, capsys):
    """The demo distils by default: another --sampling alone is one line naming the fix."""
    from autopmf.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--sampling", "top-slot"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--no-distill" in error[0]
    assert not out.exists()


def test_warmup_steps_train_on_the_labels(tmp_path, cache_dir, monkeypatch):
    teachers = []
    real_forward = supernet_train.SupernetSteps.forward

    def spying_forward(self, step, rows):
        out = real_forward(self, step, rows)
        teachers.append((step < self.sampler.warmup_steps, self.teacher is None))
        return out

    monkeypatch.setattr(supernet_train.SupernetSteps, "forward", spying_forward)
    train_supernet(tiny_space(), DATA, tmp_path / "run",
                   config(epochs=2, warmup_epochs=1, warmup="lowest", distill=True))
    assert any(w for w, _ in teachers) and any(not w for w, _ in teachers)
    assert all(no_teacher for warm, no_teacher in teachers if warm)
    assert not all(no_teacher for warm, no_teacher in teachers if not warm)
