"""Baselines: the linear probes are converged logistic regressions (checked against
scikit-learn on the same features), on real data and on a tiny-encoder task."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from autopmf.baselines import (ClsFeatures, fit_logistic, frozen_feature_baselines,
                               late_fusion_verdict, linear_probe, select_probe,
                               standardiser)
from autopmf.build import build_backbone
from autopmf.data.registry import load_dataset
from autopmf.features import build_feature_cache, encode_split
from autopmf.metrics import score
from tests.conftest import tiny_space


def sklearn_accuracy(x_train, y_train, x_test, y_test, c):
    model = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit(x_train, y_train)
    return model.score(x_test, y_test), model


@pytest.mark.parametrize("c", [0.01, 1.0])
def test_probe_matches_scikit_learn_on_real_pixels(c):
    # scikit-learn's 8x8 digits: 10 classes, 64 real features; the same objective, solved by
    # two different solvers, must give the same classifier.
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float64)
    y = torch.tensor(y)
    scale = standardiser(x[:1200])
    xs = scale(x)
    weight, bias = fit_logistic(xs[:1200], y[:1200], 10, c)
    ours = score("accuracy", xs[1200:] @ weight.T + bias, y[1200:])
    theirs, model = sklearn_accuracy(xs[:1200].numpy(), y[:1200].numpy(), xs[1200:].numpy(),
                                     y[1200:].numpy(), c)
    assert abs(ours - theirs) <= 0.01
    # Softmax weights are defined up to a shared shift per feature: compare centred ones.
    ours_w = (weight - weight.mean(0)).numpy()
    theirs_w = model.coef_ - model.coef_.mean(0)
    assert np.abs(ours_w - theirs_w).max() <= 1e-3 * max(1.0, np.abs(theirs_w).max())


def test_probe_beats_chance_by_far_where_the_features_carry_the_label():
    # A probe trained with a fused model's schedule reached 0.48 on a task where this reaches
    # 0.8+; here, a separable problem must be solved almost perfectly.
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (5, 20))
    labels = rng.integers(0, 5, 600)
    x = torch.tensor(centres[labels] + rng.normal(0, 1, (600, 20)))
    feats = {s: ClsFeatures(x[r], x[r, :3], torch.tensor(labels[r]))
             for s, r in (("train", slice(0, 400)), ("val", slice(400, 500)),
                          ("test", slice(500, 600)))}
    assert linear_probe(feats, "text", 5, "accuracy")["test"] >= 0.97


def test_multilabel_probe_is_scored_by_f1():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(0, 1, (300, 8)))
    labels = torch.stack([(x[:, 0] > 0), (x[:, 1] + x[:, 2] > 0)], 1).float()
    feats = {s: ClsFeatures(x[r], x[r], labels[r])
             for s, r in (("train", slice(0, 200)), ("val", slice(200, 250)),
                          ("test", slice(250, 300)))}
    assert linear_probe(feats, "late_fusion", 2, "f1_macro")["test"] >= 0.9


def test_baselines_of_a_tiny_task_match_scikit_learn_on_the_same_features():
    space = tiny_space()
    backbone = build_backbone(space)
    data = load_dataset("easyvqa:image_fraction=0.05,max_questions_per_image=4", seed=0,
                        image_size=space.image_size) if _has_easyvqa() else \
        load_dataset("digits:examples_per_image=1", seed=0, image_size=space.image_size)
    top = {name: build_feature_cache(encode_split(split, backbone, space), backbone,
                                     backbone.num_slots)
           for name, split in data.splits().items()}
    n = len(data.label_names)
    results = frozen_feature_baselines(backbone, top, n, "accuracy")
    assert set(results) == {"text_only", "image_only", "late_fusion"}
    from autopmf.baselines import cls_features
    feats = {s: cls_features(backbone, c) for s, c in top.items()}
    for name, which in (("text_only", "text"), ("image_only", "image"),
                        ("late_fusion", "late_fusion")):
        scale = standardiser(feats["train"].view(which))
        xs = {s: scale(f.view(which)).numpy() for s, f in feats.items()}
        theirs, _ = sklearn_accuracy(xs["train"], feats["train"].labels.numpy(), xs["test"],
                                     feats["test"].labels.numpy(), results[name]["C"])
        assert abs(results[name]["test"] - theirs) <= 0.01, name


def _has_easyvqa():
    import importlib.util
    return importlib.util.find_spec("easy_vqa") is not None


def test_verdict_says_whether_fusion_beats_late_fusion():
    baselines = {"late_fusion": {"val": 0.80, "test": 0.79}}
    assert "beats late fusion" in late_fusion_verdict(0.85, baselines)
    assert late_fusion_verdict(0.75, baselines).startswith("note: the fused model does not")


def test_a_feature_that_varies_only_by_rounding_gets_no_giant_weight():
    # Column 2 varies by 1e-7 (float noise beside the others' ~1): standardised at its own std
    # it would be unit-variance noise, and its raw-space weight would be ~1e7.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=g, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    x[:, 2] = 5.0 + 1e-7 * torch.randn(400, generator=g, dtype=torch.float64)
    probe = select_probe(x[:300], y[:300], x[300:], y[300:], 2, "accuracy")
    assert probe.val >= 0.9  # the real signal is still read
    assert probe.weight[:, 2].abs().max() < 1e3  # at most 1 / (1e-3 * median std) amplified
    assert probe.weight[:, 0].abs().max() > 1.0


def test_final_cls_features_from_a_low_slot_or_no_cache_equal_those_of_the_top():
    from autopmf.baselines import cls_features
    from autopmf.live_features import LiveFeatures

    space = tiny_space()
    backbone = build_backbone(space)
    data = load_dataset("digits:examples_per_image=2", seed=0, image_size=space.image_size)
    encoded = encode_split(data.splits()["val"], backbone, space)
    full = build_feature_cache(encoded, backbone, backbone.num_slots)
    top = cls_features(backbone, full)
    assert top.text.shape == (len(encoded), full.text.shape[-1])
    assert top.image.shape == (len(encoded), full.image.shape[-1])
    for cache in (build_feature_cache(encoded, backbone, 0), LiveFeatures(encoded, backbone, 1)):
        got = cls_features(backbone, cache)
        torch.testing.assert_close(got.text, top.text, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got.image, top.image, atol=1e-5, rtol=1e-5)
        assert torch.equal(got.labels, top.labels)
    assert not torch.equal(top.image[0], top.image[-1])  # features differ between images

