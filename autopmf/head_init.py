"""Heads that start as a fitted linear probe (`--head-init probe`; linear probing, then
fine-tuning).

Why: a freshly built PMF model's final [CLS] pair already carries the task's signal, even on a
task that only fusion can solve: the frozen layers around a randomly initialised fused slot
mix the two modalities nonlinearly. On the demo task a logistic regression on the pair, read
off the untrained model, reaches 0.69 validation accuracy, where the model itself sits at
chance for hundreds of steps. The heads are what cannot read it yet: random, and trained at
a hundredth of the prompts' learning rate (which their unnormalised inputs need). Fitting
them first, in closed form, gives the prompts a gradient that points somewhere from step 0.

The probe is the late-fusion baseline's (autopmf.baselines): L2 logistic regression on the
concatenated pair, standardised with the training split, C picked on validation. PMF's
prediction is the mean of the two heads' logits, so the probe is split exactly into the two
heads (each gets twice its half of the weights; the text head carries the bias).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from autopmf.baselines import Probe, select_probe
from autopmf.features import FeatureCache, inference_rows
from supernet.backbone import TwoHeads

HEAD_INITS = ("probe", "paper")  # the first is the default

# (cache, rows) -> the (text, image) [CLS] features the heads read for those examples
Features = Callable[[FeatureCache, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def cls_pairs(features: Features, cache: FeatureCache) -> torch.Tensor:
    parts = []
    batch_size = inference_rows(cache.tokens_per_example)
    for start in range(0, len(cache), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(cache)))
        text, image = features(cache, rows)
        parts.append(torch.cat([text, image], dim=1).double().cpu())
    return torch.cat(parts)


@torch.no_grad()
def load_probe_into_heads(heads: TwoHeads, probe: Probe) -> None:
    """Make (text head(t) + image head(i)) / 2 equal the probe's logits on [t; i]."""
    d_text = heads.text.in_features
    dtype = heads.text.weight.dtype
    heads.text.weight.copy_(2 * probe.weight[:, :d_text].to(dtype))
    heads.image.weight.copy_(2 * probe.weight[:, d_text:].to(dtype))
    heads.text.bias.copy_(2 * probe.bias.to(dtype))
    heads.image.bias.zero_()


def fit_heads(heads: TwoHeads, features: Features, train: FeatureCache, val: FeatureCache,
              num_classes: int, metric: str) -> Probe:
    """Set `heads` to the best linear probe of the model's current [CLS] pair (deterministic:
    no randomness is drawn)."""
    return fit_heads_jointly(heads, [(features, train, val)], num_classes, metric)


def fit_heads_jointly(heads: TwoHeads,
                      sources: Iterable[tuple[Features, FeatureCache, FeatureCache]],
                      num_classes: int, metric: str) -> Probe:
    """Set `heads` to the best linear probe of several models' [CLS] pairs at once (each
    source: its features, training and validation examples; read once, in turn, so a
    generator keeps one source in memory at a time), fitted on their union: heads
    that several subnets share then read each of them, rather than one of them best and the
    others with logits far off scale."""
    pairs = {"train": [], "val": []}
    labels = {"train": [], "val": []}
    for features, *splits in sources:
        for name, cache in zip(("train", "val"), splits):
            pairs[name].append(cls_pairs(features, cache))
            labels[name].append(cache.labels)
    probe = select_probe(torch.cat(pairs["train"]), torch.cat(labels["train"]),
                         torch.cat(pairs["val"]), torch.cat(labels["val"]), num_classes, metric)
    load_probe_into_heads(heads, probe)
    return probe
