"""Unimodal baselines: a linear head on each frozen encoder's [CLS] feature alone.

They show what fusion adds: on the demo task each modality alone is uninformative by
construction, so these stay near chance while a fused model should not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autopmf.features import FeatureCache
from autopmf.train import TrainConfig, evaluate, fit
from supernet.backbone import FrozenBackbone


@dataclass
class ClsFeatures:
    """[CLS] features of one modality for every example of a split."""

    x: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@torch.no_grad()
def cls_features(backbone: FrozenBackbone, top: FeatureCache) -> dict[str, ClsFeatures]:
    """`top` must hold the encoders' final streams (slot == num_slots)."""
    assert top.slot == backbone.num_slots
    text = backbone.text.cls_feature(top.text)
    image = backbone.image.cls_feature(top.image)[top.image_index]
    return {"text": ClsFeatures(text, top.labels), "image": ClsFeatures(image, top.labels)}


def unimodal_baselines(backbone: FrozenBackbone, top: dict[str, FeatureCache], num_classes: int,
                       metric: str, cfg: TrainConfig) -> dict[str, dict[str, float]]:
    """-> {"text_only": {"val": .., "test": ..}, "image_only": {...}}"""
    feats = {split: cls_features(backbone, cache) for split, cache in top.items()}
    results = {}
    for modality in ("text", "image"):
        torch.manual_seed(cfg.seed)
        head = nn.Linear(feats["train"][modality].x.shape[1], num_classes)
        forward = lambda ex, rows: head(ex.x[rows])  # noqa: E731
        fit(head, forward, feats["train"][modality], feats["val"][modality], cfg, metric,
            desc=f"{modality}-only")
        results[f"{modality}_only"] = {
            split: evaluate(forward, feats[split][modality], cfg, metric)
            for split in ("val", "test")}
    return results
