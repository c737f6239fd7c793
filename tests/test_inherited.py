"""Inherited scores: a subnet's own probe on its [CLS] pair, the supernet's shared heads, or
that probe then a short epoch of training."""

import pytest
import torch

from autopmf.baselines import select_probe
from autopmf.data.registry import load_dataset
from autopmf.features import SlotCaches, build_feature_cache, encode_split
from autopmf.head_init import cls_pairs, fit_heads
from autopmf.inherited import InheritedScorer, probe_sample
from autopmf.metrics import score
from autopmf.train import TrainConfig, evaluate
from supernet.sampling import largest_arch
from supernet.supernet import Supernet

DATA = "digits:examples_per_image=1"


@pytest.fixture(scope="module")
def setup(space, backbone):
    data = load_dataset(DATA, seed=0, image_size=space.image_size)
    torch.manual_seed(0)
    supernet = Supernet(space, backbone, num_classes=2)
    slots = {name: SlotCaches(build_feature_cache(encode_split(split, backbone, space),
                                                  backbone, supernet.lowest_fusable_slot),
                              backbone)
             for name, split in data.splits().items()}
    return supernet, slots


def scorer(setup, scoring, probe_examples=24):
    supernet, slots = setup
    return InheritedScorer(supernet, slots["train"].at(supernet.lowest_fusable_slot),
                           slots["val"], TrainConfig(seed=3),
                           "accuracy", 2, scoring, probe_examples)


def test_probe_score_is_the_best_probe_of_the_subnets_own_features(setup, space):
    supernet, slots = setup
    arch = space.validate(space.reference_arch(1, 2))
    probe = scorer(setup, "probe")
    start = min(space.fused_slots(arch))

    def features(cache, rows):
        return supernet.features(cache.streams(rows), cache.slot, arch)

    train = slots["train"].at(start).subset(probe.rows)
    val = slots["val"].at(start)
    expected = select_probe(cls_pairs(features, train), train.labels, cls_pairs(features, val),
                            val.labels, 2, "accuracy")
    assert probe(arch) == expected.val
    assert len(probe.rows) == 24 and torch.equal(probe.rows, probe.rows.sort().values)


def test_heads_score_is_the_supernets_own_prediction(setup, space):
    supernet, slots = setup
    arch = space.validate(largest_arch(space))
    val = slots["val"].at(min(space.fused_slots(arch)))
    with torch.no_grad():
        logits = supernet(val.streams(torch.arange(len(val))), val.slot, arch)
    assert scorer(setup, "heads")(arch) == pytest.approx(score("accuracy", logits, val.labels))


def test_the_two_scorings_differ_where_the_shared_heads_do_not_fit_the_subnet(setup, space):
    """Random shared heads sit near chance; a probe of the same features does not have to.
    (Guards against both scorings silently being the same function.)"""
    arch = space.validate(space.reference_arch(1, 2))
    assert scorer(setup, "probe")(arch) != scorer(setup, "heads")(arch)


def test_finetune_scores_the_better_of_the_fitted_start_and_a_short_epoch(setup, space):
    supernet, slots = setup
    arch = space.validate(space.reference_arch(2, 2))
    before = {k: v.clone() for k, v in supernet.state_dict().items()}
    finetune = scorer(setup, "finetune", probe_examples=64)
    value = finetune(arch)
    # The supernet is not trained by scoring: the subnet is a copy.
    assert all(torch.equal(before[k], v) for k, v in supernet.state_dict().items())
    assert finetune(arch) == value  # deterministic
    # Its start: the inherited subnet with heads fitted as a probe on the same examples.
    start = min(space.fused_slots(arch))
    model = supernet.extract(arch)
    train = slots["train"].at(start).subset(finetune.rows)
    val = slots["val"].at(start)
    fit_heads(model.heads, lambda c, rows: model.features_from(c.streams(rows), c.slot),
              train, val, 2, "accuracy")
    model.eval()
    fitted_start = evaluate(lambda c, rows: model.forward_from(c.streams(rows), c.slot), val,
                            TrainConfig(), "accuracy")
    assert value >= fitted_start and 0 <= value <= 1


def test_finetune_trains_one_epoch_of_the_probe_sample_at_its_own_rate(setup, space,
                                                                        monkeypatch):
    import autopmf.inherited as inherited

    calls = []

    def spy(model, forward, train, val, cfg, metric):
        result = real_fit(model, forward, train, val, cfg, metric)
        calls.append((len(train), cfg, result))
        return result
    real_fit = inherited.fit
    monkeypatch.setattr(inherited, "fit", spy)
    value = scorer(setup, "finetune", probe_examples=64)(space.validate(
        space.reference_arch(2, 2)))
    (examples, cfg, result), = calls
    assert examples == 64 and cfg.epochs == 1 and cfg.lr == inherited.FINETUNE_LR
    assert len(result.history) == 1 and result.start_val is not None
    assert value == result.best_val == max(result.start_val,
                                           result.history[0]["val_accuracy"])


def test_finetune_takes_its_rate_and_epochs_from_the_scorer(setup, space, monkeypatch):
    import autopmf.inherited as inherited

    calls = []

    def spy(model, forward, train, val, cfg, metric):
        result = real_fit(model, forward, train, val, cfg, metric)
        calls.append((cfg, result))
        return result
    real_fit = inherited.fit
    monkeypatch.setattr(inherited, "fit", spy)
    supernet, slots = setup
    scorer = InheritedScorer(supernet, slots["train"].at(supernet.lowest_fusable_slot),
                             slots["val"], TrainConfig(seed=3), "accuracy", 2, "finetune",
                             probe_examples=64, finetune_lr=1e-3, finetune_epochs=2)
    value = scorer(space.validate(space.reference_arch(2, 2)))
    (cfg, result), = calls
    assert cfg.lr == 1e-3 and cfg.epochs == 2 and len(result.history) == 2
    assert value == max([result.start_val] + [h["val_accuracy"] for h in result.history])


def test_probe_sample_is_fixed_by_seed_and_never_larger_than_the_split(setup):
    supernet, slots = setup
    train = slots["train"].at(supernet.lowest_fusable_slot)
    a, b = probe_sample(train, 10, seed=1), probe_sample(train, 10, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, probe_sample(train, 10, seed=2))
    assert torch.equal(probe_sample(train, 10**6, seed=1), torch.arange(len(train)))


def test_unknown_scoring_is_refused(setup):
    with pytest.raises(ValueError, match="inherited scoring"):
        scorer(setup, "oracle")


def test_search_refuses_an_unknown_inherited_score_and_writes_nothing(tmp_path):
    from autopmf.errors import AutopmfError
    from autopmf.search import SearchConfig, run_search
    from tests.conftest import tiny_space

    with pytest.raises(AutopmfError,
                       match="--inherited-score 'oracle': use probe or heads or finetune"):
        run_search(tiny_space(), DATA, tmp_path / "run",
                   SearchConfig(budget_gb=1.0, inherited_score="oracle"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_search_refuses_fewer_than_one_probe_example_and_writes_nothing(tmp_path):
    from autopmf.errors import AutopmfError
    from autopmf.search import SearchConfig, run_search
    from tests.conftest import tiny_space

    with pytest.raises(AutopmfError, match="--probe-examples must be at least 1, got 0"):
        run_search(tiny_space(), DATA, tmp_path / "run",
                   SearchConfig(budget_gb=1.0, probe_examples=0))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_probe_examples_name_a_search_only_when_not_the_default():
    from autopmf.choices import PROBE_EXAMPLES
    from autopmf.search import SearchConfig, _run_identity
    from tests.conftest import tiny_space

    default = _run_identity(tiny_space(), DATA, SearchConfig(budget_gb=1.0))
    assert "probe_examples" not in default  # searches from before the option still resume
    other = _run_identity(tiny_space(), DATA, SearchConfig(budget_gb=1.0, probe_examples=4096))
    assert other == dict(default, probe_examples=4096) and PROBE_EXAMPLES != 4096
