"""`--head-init probe`: the heads start as the best linear probe of the untrained model's
[CLS] pair, split exactly into PMF's two heads; `paper` leaves them as constructed."""

import pytest
import torch

from autopmf.baselines import select_probe
from autopmf.build import build_backbone
from autopmf.data.registry import load_dataset
from autopmf.features import build_feature_cache, encode_split
from autopmf.head_init import cls_pairs, fit_heads, load_probe_into_heads
from autopmf.metrics import score
from supernet.backbone import TwoHeads
from tests.conftest import model_for

DATA = "digits:examples_per_image=1"


@pytest.fixture(scope="module")
def caches(space, backbone):
    data = load_dataset(DATA, seed=0, image_size=space.image_size)
    return {name: build_feature_cache(encode_split(split, backbone, space), backbone, 1)
            for name, split in data.splits().items()}


def features_of(model):
    return lambda cache, rows: model.features_from(cache.streams(rows), cache.slot)


def test_the_two_heads_reproduce_the_probe_exactly():
    torch.manual_seed(0)
    heads = TwoHeads(6, 4, 3).double()
    train_x, val_x = torch.randn(80, 10, dtype=torch.float64), torch.randn(40, 10,
                                                                           dtype=torch.float64)
    labels = (train_x[:, 0] + 2 * train_x[:, 7] > 0).long() + (train_x[:, 3] > 1).long()
    probe = select_probe(train_x, labels, val_x, labels[:40], 3, "accuracy")
    load_probe_into_heads(heads, probe)
    assert torch.allclose(heads(val_x[:, :6], val_x[:, 6:]), probe.logits(val_x), atol=1e-10)


def test_fitted_heads_score_what_the_probe_scored(space, backbone, caches):
    model = model_for(space, backbone, space.reference_arch(2, 2), num_classes=2)
    model.eval()
    probe = fit_heads(model.heads, features_of(model), caches["train"], caches["val"], 2,
                      "accuracy")
    val = caches["val"]
    logits = torch.cat([model.forward_from(val.streams(torch.arange(i, min(i + 256, len(val)))),
                                           val.slot) for i in range(0, len(val), 256)])
    assert score("accuracy", logits, val.labels) == pytest.approx(probe.val, abs=1e-9)
    pairs = cls_pairs(features_of(model), val)
    assert torch.equal(probe.logits(pairs).argmax(1), logits.argmax(1))


def test_head_fit_is_deterministic_and_draws_no_randomness(space, backbone, caches):
    heads = []
    for _ in range(2):
        model = model_for(space, backbone, space.reference_arch(1, 1), num_classes=2, seed=4)
        torch.manual_seed(9)
        fit_heads(model.heads, features_of(model), caches["train"], caches["val"], 2,
                  "accuracy")
        heads.append((model.heads.state_dict(), torch.rand(2)))
    (a, ra), (b, rb) = heads
    assert all(torch.equal(a[k], b[k]) for k in a) and torch.equal(ra, rb)
    torch.manual_seed(9)
    assert torch.equal(torch.rand(2), ra)  # the global generator was not touched


def test_train_with_paper_heads_keeps_the_constructed_heads(space, tmp_path):
    from autopmf.files import load_tensors
    from autopmf.train import TrainConfig
    from autopmf.train_arch import train_architecture

    arch = space.reference_arch(1, 1)
    # epochs=1 at lr 0: weights never move, so the saved heads are the starting ones.
    paper = TrainConfig(epochs=1, lr=0.0, batch_size=4, progress=False, head_init="paper")
    probe = TrainConfig(epochs=1, lr=0.0, batch_size=4, progress=False, head_init="probe")
    train_architecture(space, arch, DATA, tmp_path / "paper", paper, baselines=False)
    train_architecture(space, arch, DATA, tmp_path / "probe", probe, baselines=False)
    built = model_for(space, build_backbone(space), arch, num_classes=2, seed=0)
    saved = load_tensors(tmp_path / "paper" / "weights.safetensors")
    assert torch.equal(saved["heads.text.weight"], built.heads.text.weight)
    fitted = load_tensors(tmp_path / "probe" / "weights.safetensors")
    assert not torch.equal(fitted["heads.text.weight"], built.heads.text.weight)
    assert torch.equal(fitted["heads.image.bias"], torch.zeros_like(fitted["heads.image.bias"]))


def test_jointly_fitted_heads_are_the_probe_of_the_pooled_pairs(space, backbone, caches):
    """Shared heads (the supernet's): one probe of several models' [CLS] pairs together."""
    from autopmf.head_init import fit_heads_jointly

    models = [model_for(space, backbone, space.reference_arch(n, 1), num_classes=2, seed=n)
              for n in (1, 2)]
    for m in models:
        m.eval()
    sources = [(features_of(m), caches["train"], caches["val"]) for m in models]
    heads = TwoHeads(*(h.in_features for h in (models[0].heads.text, models[0].heads.image)),
                     2).double()
    probe = fit_heads_jointly(heads, sources, 2, "accuracy")
    pooled = {name: torch.cat([cls_pairs(features_of(m), caches[name]) for m in models])
              for name in ("train", "val")}
    expected = select_probe(pooled["train"], caches["train"].labels.repeat(2), pooled["val"],
                            caches["val"].labels.repeat(2), 2, "accuracy")
    assert probe.c == expected.c and probe.val == expected.val
    assert torch.allclose(probe.weight, expected.weight) and torch.allclose(probe.bias,
                                                                            expected.bias)


def test_the_supernets_heads_are_fitted_on_the_warmup_and_the_first_sandwich_draws():
    from autopmf.supernet_train import HEAD_FIT_SUBNETS, shared_head_subnets
    from supernet.sampling import ArchSampler, largest_arch, smallest_arch
    from supernet.supernet import Supernet

    from tests.conftest import tiny_space

    space = tiny_space()
    warmup = space.validate(space.reference_arch(2, 2))  # neither the largest nor smallest
    sampler = ArchSampler(space, "sandwich", seed=0, warmup_steps=10, warmup_archs=[warmup])
    supernet = Supernet(space, build_backbone(space), 2)
    [(shot, archs)] = shared_head_subnets(sampler, supernet)
    assert shot is supernet
    assert archs[0] == space.canonical(warmup)
    # The sandwich's turn is step % 3: step 10 draws the smallest, step 12 the largest.
    assert archs[1] == space.canonical(smallest_arch(space))
    assert space.canonical(largest_arch(space)) in archs
    keys = [str(sorted(a.items())) for a in archs]
    assert len(keys) == len(set(keys)) <= 1 + HEAD_FIT_SUBNETS  # each subnet once
    uniform = ArchSampler(space, "uniform", seed=0)
    draws = {str(sorted(uniform.sample(i).items())) for i in range(HEAD_FIT_SUBNETS)}
    [(_, archs)] = shared_head_subnets(uniform, supernet)
    assert {str(sorted(a.items())) for a in archs} == draws
