"""Baselines a fused model must beat: linear probes on the frozen encoders' [CLS] features.

- text-only: the text encoder's final [CLS];
- image-only: the image encoder's final [CLS];
- late fusion: both, concatenated (the cheapest way to use both modalities, with no
  interaction inside the encoders).

Each probe is fitted to convergence, not trained with the fused model's schedule: a model that
is nothing but a head, trained for a few epochs at the heads' small learning rate, stops far
short of what its features allow (image-only 0.48 against 0.82 for a converged logistic
regression, on a real-image task). Here: features standardised with the train split's
statistics, L2-regularised logistic regression (softmax, or one sigmoid per class for
multi-label data) solved by full-batch L-BFGS, the regularisation strength picked on the
validation split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch.nn import functional as F

from autopmf.features import FeatureCache, advanced_streams, inference_rows
from autopmf.metrics import score
from supernet.backbone import FrozenBackbone

# Inverse regularisation strengths tried (scikit-learn's C: the loss is summed over examples,
# the penalty is ||w||^2 / 2); the best on validation is kept.
C_GRID = (0.01, 0.1, 1.0, 10.0)
MAX_ITER = 500


@dataclass
class ClsFeatures:
    """Final [CLS] features of both modalities for every example of a split."""

    text: torch.Tensor
    image: torch.Tensor
    labels: torch.Tensor

    def view(self, which: str) -> torch.Tensor:
        return {"text": self.text, "image": self.image,
                "late_fusion": torch.cat([self.text, self.image], dim=1)}[which]


@torch.no_grad()
def cls_features(backbone: FrozenBackbone, cache: FeatureCache) -> ClsFeatures:
    """The encoders' final [CLS] features of every example of `cache` (at any slot): run to
    the top a batch at a time, keeping only the [CLS] rows, so a split of any size fits."""
    top = backbone.num_slots
    if getattr(cache, "live", False):  # no cache: computed from the inputs per batch
        pairs = [backbone.cls_features(cache.at_slot(top).streams(rows))
                 for rows in torch.arange(len(cache)).split(inference_rows(
                     cache.tokens_per_example))]
        text, image = (torch.cat(part) for part in zip(*pairs))
    else:
        text, image = advanced_streams(cache, backbone, top, keep_text=backbone.text.cls_feature,
                                       keep_image=backbone.image.cls_feature)
        image = image[cache.image_index]
    return ClsFeatures(text.double(), image.double(), cache.labels)


def fit_logistic(x: torch.Tensor, labels: torch.Tensor, num_classes: int, c: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise C * sum(loss) + ||W||^2 / 2 (the bias unpenalised), as scikit-learn's
    LogisticRegression does; -> (W [num_classes, D], b [num_classes]). Deterministic."""
    x = x.double()
    weight = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=MAX_ITER,
                                  tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")
    multilabel = labels.dim() == 2
    # Dividing the objective by C * N keeps its scale (and L-BFGS's tolerances) independent
    # of the data size; the minimiser is the same.
    n = len(labels)

    def objective():
        optimizer.zero_grad()
        logits = x @ weight.T + bias
        if multilabel:
            loss = F.binary_cross_entropy_with_logits(logits, labels.double(), reduction="sum")
        else:
            loss = F.cross_entropy(logits, labels, reduction="sum")
        total = (loss + weight.pow(2).sum() / (2 * c)) / n
        total.backward()
        return total
    optimizer.step(objective)
    return weight.detach(), bias.detach()


# A feature is never scaled up by more than 1 / (STD_FLOOR * the median feature's spread).
# Why: some [CLS] dimensions of a fused model vary across examples only by float rounding
# (std 1e-7 against a median of 0.1 on the demo task). Standardised at their own std, that
# noise becomes unit-variance input the probe fits, and folded back into raw space its weight
# is ~1e7: heads loaded from such a probe (`--head-init probe`) had a text weight of norm
# 3e7 that turned every later change of those dimensions into huge logits.
STD_FLOOR = 1e-3


def feature_scale(train_x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per feature of the training split, the std floored (see STD_FLOOR)."""
    std = train_x.std(0)
    floor = max(1e-8, STD_FLOOR * float(std.median())) if std.numel() else 1e-8
    return train_x.mean(0), std.clamp_min(floor)


def standardiser(train_x: torch.Tensor):
    mean, std = feature_scale(train_x)
    return lambda x: (x - mean) / std


@dataclass
class Probe:
    """A fitted linear probe on raw features: logits = x @ weight.T + bias (the training
    split's standardisation folded in)."""

    weight: torch.Tensor
    bias: torch.Tensor
    c: float
    val: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return x.double() @ self.weight.T + self.bias


def select_probe(train_x: torch.Tensor, train_labels: torch.Tensor, val_x: torch.Tensor,
                 val_labels: torch.Tensor, num_classes: int, metric: str,
                 c_grid: Sequence[float] = C_GRID) -> Probe:
    """Fit on standardised train features for each C; keep the best on val (first on ties)."""
    train_x, val_x = train_x.double(), val_x.double()
    mean, std = feature_scale(train_x)
    best = None
    for c in c_grid:
        weight, bias = fit_logistic((train_x - mean) / std, train_labels, num_classes, c)
        probe = Probe(weight / std, bias - (weight / std) @ mean, c, 0.0)
        probe.val = score(metric, probe.logits(val_x), val_labels)
        if best is None or probe.val > best.val:
            best = probe
    return best


def linear_probe(features: dict[str, ClsFeatures], which: str, num_classes: int, metric: str,
                 c_grid: Sequence[float] = C_GRID) -> dict[str, float]:
    """Fit on train for each C, keep the best on val; -> {"val", "test", "C"}."""
    train, val, test = features["train"], features["val"], features["test"]
    probe = select_probe(train.view(which), train.labels, val.view(which), val.labels,
                         num_classes, metric, c_grid)
    return {"val": probe.val, "C": probe.c,
            "test": score(metric, probe.logits(test.view(which)), test.labels)}


BASELINES = {"text_only": "text", "image_only": "image", "late_fusion": "late_fusion"}


def frozen_feature_baselines(backbone: FrozenBackbone, caches: dict[str, FeatureCache],
                             num_classes: int, metric: str) -> dict[str, dict[str, float]]:
    """-> {"text_only": {"val", "test", "C"}, "image_only": ..., "late_fusion": ...}, from
    each split's cache at any slot."""
    features = {split: cls_features(backbone, cache) for split, cache in caches.items()}
    return {name: linear_probe(features, which, num_classes, metric)
            for name, which in BASELINES.items()}


def late_fusion_verdict(fused_val: float, baselines: dict[str, dict[str, float]]) -> str:
    """One line for the user: does the fused model beat a linear probe on both [CLS]
    features (on validation, where both were selected)?"""
    late = baselines["late_fusion"]["val"]
    if fused_val > late:
        return (f"the fused model beats late fusion on validation by "
                f"{fused_val - late:+.4f}")
    return (f"note: the fused model does not beat late fusion on validation ({fused_val:.4f} "
            f"vs {late:.4f}): a linear probe on the two frozen [CLS] features does as well; "
            "train longer, or fuse other slots")
