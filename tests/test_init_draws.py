"""Several random starts, the best kept (`init_draws`): deterministic by seed, scored on
training examples only, the kept draw is the best-scoring one, and one draw is exactly
today's initialisation."""

import pytest
import torch

from autopmf.build import initialise_fusion
from autopmf.data.registry import load_dataset
from autopmf.features import build_feature_cache, encode_split
from autopmf.init_draws import draw_seed, keep_best_draw, probe_score, scoring_halves
from autopmf.run_dir import run_settings
from autopmf.train import TrainConfig
from autopmf.train_arch import initialise_training
from tests.conftest import model_for

DATA = "digits:examples_per_image=1"


@pytest.fixture(scope="module")
def caches(space, backbone):
    dataset = load_dataset(DATA, seed=0, image_size=space.image_size)
    return {name: build_feature_cache(encode_split(split, backbone, space), backbone, 0)
            for name, split in (("train", dataset.train), ("val", dataset.val))}


def fresh(space, backbone, seed=0):
    return model_for(space, backbone, space.reference_arch(2, 2), num_classes=2, seed=seed)


def slots_of(model):
    return {j: model.fusion[str(j)] for j in model.slot_configs}


def features_of(model):
    return lambda cache, rows: model.features_from(cache.streams(rows), cache.slot)


def paper(slots, seed):
    pass  # the constructors' draw as it is


def state(model):
    return {k: v.clone() for k, v in model.trainable_state_dict().items()}


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_draw_seeds_are_distinct_and_repeatable():
    seeds = {draw_seed(s, d) for s in range(20) for d in range(1, 20)}
    assert len(seeds) == 19 * 20
    assert draw_seed(3, 2) == draw_seed(3, 2)


def test_scoring_halves_are_disjoint_seeded_and_capped():
    fit, held = scoring_halves(100, seed=1, half=30)
    assert len(fit) == len(held) == 30 and not set(fit.tolist()) & set(held.tolist())
    again = scoring_halves(100, seed=1, half=30)
    assert torch.equal(fit, again[0]) and torch.equal(held, again[1])
    small = scoring_halves(9, seed=1, half=30)
    assert len(small[0]) == len(small[1]) == 4  # a small split: half of it each


def test_the_kept_draw_is_the_best_scoring_one(space, backbone, caches):
    model = fresh(space, backbone)
    before = state(model)
    scores = keep_best_draw(slots_of(model), features_of(model), caches["train"], 4, 0, 2,
                            "accuracy", paper)
    assert len(scores) == 4 and len(set(scores)) > 1  # the draws differ
    fit, held = scoring_halves(len(caches["train"]), 0)
    kept = probe_score(features_of(model), caches["train"].sample(fit),
                       caches["train"].sample(held), 2, "accuracy")
    assert kept == max(scores)
    best = scores.index(max(scores))
    after = state(model)
    # Draw 0 is the model as built; any other draw redraws the fused slots (their zero
    # biases stay zero), and nothing but the fused slots changes.
    fused = [k for k in after if k.startswith("fusion.")]
    assert fused and all(not k.startswith("fusion.") for k in set(after) - set(fused))
    assert all(torch.equal(after[k], before[k]) for k in after if k not in fused)
    assert any(not torch.equal(after[k], before[k]) for k in fused) == (best != 0)


def test_draws_are_deterministic_and_draw_no_global_random_numbers(space, backbone, caches):
    kept = []
    for _ in range(2):
        model = fresh(space, backbone, seed=5)
        torch.manual_seed(11)
        keep_best_draw(slots_of(model), features_of(model), caches["train"], 3, 5, 2,
                       "accuracy", paper)
        kept.append((state(model), torch.rand(3)))
    torch.manual_seed(11)
    assert same(kept[0][0], kept[1][0]) and torch.equal(kept[0][1], torch.rand(3))
    other = fresh(space, backbone, seed=6)
    keep_best_draw(slots_of(other), features_of(other), caches["train"], 3, 6, 2, "accuracy",
                   paper)
    assert not same(kept[0][0], state(other))


def test_every_draw_gets_the_prompt_init_rule_with_its_own_seed(space, backbone, caches):
    seen = []

    def centred(slots, seed):
        seen.append(seed)
        initialise_fusion(slots, backbone, caches["train"], "centred", seed)

    model = fresh(space, backbone)
    keep_best_draw(slots_of(model), features_of(model), caches["train"], 3, 2, 2, "accuracy",
                   centred)
    assert seen == [2, draw_seed(2, 1), draw_seed(2, 2)]


def test_one_draw_is_todays_initialisation(space, backbone, caches):
    cfg = TrainConfig(seed=4, head_init="paper", prompt_init="centred")
    model = fresh(space, backbone, seed=4)
    assert initialise_training(model, backbone, caches["train"], caches["val"], cfg, 2,
                               "accuracy") is None
    today = fresh(space, backbone, seed=4)
    initialise_fusion(slots_of(today), backbone, caches["train"], "centred", 4)
    assert same(state(model), state(today))
    assert "init_draws" not in run_settings(cfg)  # runs from before the option keep their id


def test_several_draws_through_initialise_training(space, backbone, caches):
    cfg = TrainConfig(seed=1, init_draws=3)
    model = fresh(space, backbone, seed=1)
    scores = initialise_training(model, backbone, caches["train"], caches["val"], cfg, 2,
                                 "accuracy")
    assert len(scores) == 3
    assert run_settings(cfg)["init_draws"] == 3
    # A start with no random part leaves nothing to draw again.
    with pytest.raises(ValueError, match="'fixed' has no random start to draw"):
        initialise_training(model, backbone, caches["train"], caches["val"],
                            TrainConfig(init_draws=3, prompt_init="fixed"), 2, "accuracy")


def test_fewer_than_one_draw_is_refused(space, backbone, caches):
    model = fresh(space, backbone)
    with pytest.raises(ValueError, match="init_draws must be 1 or more, got 0"):
        initialise_training(model, backbone, caches["train"], caches["val"],
                            TrainConfig(init_draws=0), 2, "accuracy")
