"""The supernet's head-free objective: the supervised contrastive loss, and training with it."""

import math

import pytest
import torch

from autopmf.contrastive import (label_affinity, pair_embedding, supervised_contrastive_loss,
                                 contrastive_loss_of_pair)
from autopmf.errors import AutopmfError
from autopmf.files import load_tensors
from autopmf.run_dir import run_settings
from autopmf.supernet_train import SupernetConfig, train_supernet
from tests.conftest import tiny_space

DATA = "digits:examples_per_image=1"


def test_the_loss_is_supcons_mean_over_positives_of_minus_log_softmax():
    angles = torch.tensor([0.0, 0.3, 2.0, 2.5])
    embedding = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 1, 2])  # the last has no positive: not an anchor
    t = 0.5
    sim = (embedding @ embedding.T / t).tolist()
    expected = []
    for i in range(3):
        others = [j for j in range(4) if j != i]
        log_z = math.log(sum(math.exp(sim[i][j]) for j in others))
        positives = [j for j in others if labels[j] == labels[i]]
        if positives:
            expected.append(sum(log_z - sim[i][j] for j in positives) / len(positives))
    got = supervised_contrastive_loss(embedding, labels, temperature=t)
    assert len(expected) == 2
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-6)


def test_multi_hot_positives_weigh_by_label_overlap():
    labels = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    affinity = label_affinity(labels)
    assert affinity[0, 1].item() == pytest.approx(0.5)  # {0, 1} vs {0}
    assert affinity[0, 0].item() == 1 and affinity[2].abs().sum().item() == 0
    assert torch.equal(label_affinity(torch.tensor([3, 1, 3])),
                       torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]]))


def test_a_batch_without_positives_gives_zero_and_still_a_graph():
    embedding = torch.nn.functional.normalize(torch.randn(3, 4), dim=1).requires_grad_()
    loss = supervised_contrastive_loss(embedding, torch.tensor([0, 1, 2]))
    loss.backward()
    assert loss.item() == 0 and torch.equal(embedding.grad, torch.zeros(3, 4))


def separated(direction_dim: int, labels: torch.Tensor, dims: int = 8, seed: int = 0):
    """[CLS]-like features whose classes differ along one dimension only, on a large common
    offset (as raw [CLS] vectors have)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(labels), dims, generator=g) * 0.3 + 40.0
    x[:, direction_dim] += 3.0 * (2 * labels.float() - 1)
    return x


def test_each_subnet_may_separate_the_classes_in_its_own_direction():
    """The point of the objective: two subnets whose features separate the classes along
    different directions score the same, and far below features that do not separate them;
    a shared linear head fitted to one would read the other at chance."""
    labels = torch.arange(32) % 2
    text = separated(0, labels, seed=1)
    image = separated(2, labels)
    a = contrastive_loss_of_pair(text, image, labels)
    # Another subnet: the same features, its classes apart along dimensions 3 and 5.
    b = contrastive_loss_of_pair(text[:, [3, 1, 2, 0, 4, 5, 6, 7]],
                                 image[:, [0, 1, 5, 3, 4, 2, 6, 7]], labels)
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    mixed = contrastive_loss_of_pair(text, image, labels[torch.randperm(32)])
    assert a.item() < mixed.item() - 1.0
    # The embedding ignores the common offset and each dimension's scale.
    assert torch.allclose(pair_embedding(text, text), pair_embedding(3 * text - 7, text + 100),
                          atol=1e-4)
    assert torch.allclose(pair_embedding(text, text).norm(dim=1), torch.ones(32))


def config(**kw):
    return SupernetConfig(**{"epochs": 1, "batch_size": 16, "lr": 5e-3, "progress": False,
                             **kw})


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOPMF_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_contrastive_training_moves_the_prompts_and_leaves_the_heads_alone(tmp_path,
                                                                           cache_dir):
    space = tiny_space()
    start = load_tensors(train_supernet(space, DATA, tmp_path / "zero",
                                        config(epochs=0)) and tmp_path / "zero" /
                         "supernet.safetensors")
    run = train_supernet(space, DATA, tmp_path / "con", config(objective="contrastive"))
    trained = load_tensors(tmp_path / "con" / "supernet.safetensors")
    heads = [k for k in trained if k.startswith("heads.")]
    assert heads and all(torch.equal(trained[k], start[k]) for k in heads)  # nor fitted
    assert any(not torch.equal(trained[k], start[k]) for k in trained if k not in heads)
    record = run.metrics["history"][0]
    assert math.isfinite(record["loss"]) and record["loss"] > 0
    # The references are read by their own probes: real scores of a 3-class task.
    assert set(record["val"]) >= {"largest", "smallest"}
    assert all(0 <= v <= 1 for v in record["val"].values())
    assert run.metrics["config"]["objective"] == "contrastive"


def test_the_default_objective_keeps_older_runs_fingerprints():
    assert "objective" not in run_settings(config())
    assert run_settings(config(objective="contrastive"))["objective"] == "contrastive"


def test_cli_objective_reaches_the_supernet_and_heads_scoring_is_refused(tmp_path):
    from autopmf.cli import _supernet_config, build_parser, main

    def parsed(*extra):
        return build_parser().parse_args(["search", "--space", "tiny", "--data", "digits",
                                          "--budget-gb", "1", "--out", "x", *extra])
    assert _supernet_config(parsed(), tiny_space()).objective == "heads"
    assert _supernet_config(parsed("--objective", "contrastive"),
                            tiny_space()).objective == "contrastive"
    from autopmf.search import SearchConfig, run_search
    cfg = SearchConfig(budget_gb=1.0, inherited_score="heads",
                       supernet=config(objective="contrastive", budget_gb=1.0))
    with pytest.raises(AutopmfError, match="--objective contrastive leaves untrained"):
        run_search(tiny_space(), DATA, tmp_path / "run", cfg)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    assert main(["supernet", "--space", "tiny", "--data", DATA, "--out",
                 str(tmp_path / "bad"), "--objective", "softmax"]) == 2
