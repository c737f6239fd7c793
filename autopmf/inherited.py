"""How the search scores a subnet with the supernet's weights (its "inherited" score).

Three ways (`INHERITED_SCORINGS`, the first the default):
- "probe": the subnet's final [CLS] pair, computed with the supernet's shared prompts and
  mappings, is read by a linear probe fitted for this subnet alone (on a fixed sample of
  training examples, C picked on validation), and scored on validation.
- "heads": the supernet's shared heads read it, as the supernet itself predicts.
- "finetune": the subnet, extracted standalone with the supernet's weights, gets heads fitted
  as that probe, then trains one short epoch over the probe's sample (its own warm-up and
  cosine, at FINETUNE_LR), and scores the better of its start and its end on validation,
  as a standalone training does. It costs about probe_examples / batch_size training steps
  per candidate: the price of asking how a design *starts to learn*, which is what a short
  standalone training ranks designs by. On the demo task 1,024 examples (32 steps) end where
  they start, so they score as the probe does; 4,096 (128 steps) ranked the yardstick's
  designs best of every score measured (BENCHMARKS.md, "Scoring by a short fine-tune").

Why a probe: the heads are shared by every subnet, but each subnet's features are its own.
Through shared heads a subnet scores how well its features suit heads that were fitted and
trained for the mixture, not how much of the task its fused features carry. A subnet's own
probe asks the second question, and it is where a retrain starts (`--head-init probe` fits
the winner's heads the same way). It costs one forward pass over the probe's training sample
per candidate, beside the validation pass that both ways make.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import torch

from autopmf.baselines import select_probe
from autopmf.choices import INHERITED_SCORINGS, PROBE_EXAMPLES
from autopmf.features import FeatureCache, SlotCaches
from autopmf.head_init import cls_pairs, fit_heads
from autopmf.train import TrainConfig, evaluate, fit
from supernet.supernet import Supernet


def first_slot(supernet: Supernet, arch: Mapping[str, int]) -> int:
    """Where a subnet's computation starts: its lowest fused slot (the frozen slots below it
    are read from the cache)."""
    return min(supernet.space.fused_slots(arch), default=supernet.backbone.num_slots)


def heads_score(supernet: Supernet, arch: Mapping[str, int], val: SlotCaches,
                cfg: TrainConfig, metric: str) -> float:
    """The subnet's validation score through the supernet's shared heads."""
    cache = val.at(first_slot(supernet, arch))
    supernet.eval()
    return evaluate(lambda c, rows: supernet(c.streams(rows, cfg.device), c.slot, arch),
                    cache, cfg, metric)


def probe_sample(train: FeatureCache, n: int, seed: int) -> torch.Tensor:
    """The fixed training rows every candidate's probe is fitted on (sorted, seeded)."""
    if n >= len(train):
        return torch.arange(len(train))
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return order[:n].sort().values


def probe_score(supernet: Supernet, arch: Mapping[str, int], train: SlotCaches,
                val: SlotCaches, cfg: TrainConfig, metric: str, num_classes: int) -> float:
    """The best linear probe's validation score on the subnet's own [CLS] pair, fitted on
    all of `train` (the probe's sample of training examples)."""
    start = first_slot(supernet, arch)
    supernet.eval()

    def features(cache, batch_rows):
        return supernet.features(cache.streams(batch_rows, cfg.device), cache.slot, arch)

    train_cache = train.at(start)
    val_cache = val.at(start)
    probe = select_probe(cls_pairs(features, train_cache), train_cache.labels,
                         cls_pairs(features, val_cache), val_cache.labels, num_classes, metric)
    return probe.val


# The fine-tune's peak rate: the yardstick's (bench/ranking.py). At 3e-3 the first steps lose
# what the fitted heads read (BENCHMARKS.md, "Why every run first loses what the probe read").
FINETUNE_LR = 3e-4


def finetune_score(supernet: Supernet, arch: Mapping[str, int], train: SlotCaches,
                   val: SlotCaches, cfg: TrainConfig, metric: str, num_classes: int,
                   lr: float = FINETUNE_LR, epochs: int = 1) -> float:
    """The subnet's best validation score over its inherited start (heads fitted as a probe
    on `train`) and the end of each of `epochs` epochs of training on `train` at peak rate
    `lr`; the supernet is left as it was (the subnet is a copy)."""
    start = first_slot(supernet, arch)
    model = supernet.extract(arch)
    train_cache, val_cache = train.at(start), val.at(start)
    fit_heads(model.heads,
              lambda cache, rows: model.features_from(cache.streams(rows, cfg.device),
                                                      cache.slot),
              train_cache, val_cache, num_classes, metric)
    short = replace(cfg, epochs=epochs, lr=lr, head_init="probe", progress=False)
    return fit(model, lambda cache, rows: model.forward_from(cache.streams(rows, cfg.device),
                                                             cache.slot),
               train_cache, val_cache, short, metric).best_val


@dataclass
class InheritedScorer:
    """Scores subnets with the supernet's weights on the validation split (`scoring`: one of
    INHERITED_SCORINGS), each starting from cached streams at its first fused slot."""

    supernet: Supernet
    train_split: FeatureCache  # the training split at the lowest fusable slot
    val: SlotCaches
    cfg: TrainConfig
    metric: str
    num_classes: int
    scoring: str = INHERITED_SCORINGS[0]
    probe_examples: int = PROBE_EXAMPLES
    finetune_lr: float = FINETUNE_LR  # "finetune" only: its peak rate and its epochs
    finetune_epochs: int = 1

    def __post_init__(self):
        if self.scoring not in INHERITED_SCORINGS:
            raise ValueError(f"inherited scoring {self.scoring!r} is not one of "
                             f"{INHERITED_SCORINGS}")
        self.rows = probe_sample(self.train_split, self.probe_examples, self.cfg.seed)
        # Only the probe's sample is advanced to higher slots: its memory and time stay the
        # same whatever the training split's size. It shares the validation's RAM budget.
        self.train = SlotCaches(self.train_split.subset(self.rows), self.supernet.backbone,
                                self.val.budget)

    def __call__(self, arch: Mapping[str, int]) -> float:
        if self.scoring == "heads":
            return heads_score(self.supernet, arch, self.val, self.cfg, self.metric)
        if self.scoring == "finetune":
            return finetune_score(self.supernet, arch, self.train, self.val, self.cfg,
                                  self.metric, self.num_classes, self.finetune_lr,
                                  self.finetune_epochs)
        return probe_score(self.supernet, arch, self.train, self.val, self.cfg, self.metric,
                           self.num_classes)
