"""A training signal for the supernet that needs no shared classifier.

Why: through one pair of shared heads, every subnet of a demo supernet started at chance
(val 0.47-0.56), where heads fitted to each subnet alone read the same untrained features at
0.62-0.73: the direction that separates the classes differs from subnet to subnet
(BENCHMARKS.md, "Which subnets a sampler trains, and where the shared heads start them").
A supervised contrastive loss (Khosla et al., NeurIPS 2020) asks only that each subnet's own
[CLS] pairs gather by class. It is unchanged by any rotation of a subnet's features, so every
subnet may separate the classes in its own direction, which is what the search's per-subnet
probe (autopmf.inherited) then reads.
"""

from __future__ import annotations

import math

import torch

# The softmax temperature over cosine similarities: SupCon's 0.1.
TEMPERATURE = 0.1


def pair_embedding(text_cls: torch.Tensor, image_cls: torch.Tensor,
                   eps: float = 1e-5) -> torch.Tensor:
    """One unit vector per example from its (text, image) [CLS] pair: each modality is
    standardised over the batch, per dimension, then scaled to unit length, and the two
    halves are joined with weight 1/sqrt(2) each, so a similarity is the mean of the two
    modalities' cosines, as the two heads' logits are averaged. Standardising first matters:
    raw [CLS] vectors share a large common direction (cosines near 1 between any two
    examples), and a few dimensions hold most of their norm."""
    halves = []
    for x in (text_cls.float(), image_cls.float()):
        x = (x - x.mean(dim=0)) / (x.std(dim=0, unbiased=False) + eps)
        halves.append(torch.nn.functional.normalize(x, dim=1) / math.sqrt(2))
    return torch.cat(halves, dim=1)


def label_affinity(labels: torch.Tensor) -> torch.Tensor:
    """How much example j counts as a positive for anchor i: 1 when single labels agree (0
    otherwise); for multi-hot labels, the Jaccard overlap of their label sets."""
    if labels.dim() == 1:
        return (labels[:, None] == labels[None, :]).float()
    truth = (labels > 0.5).float()
    shared = truth @ truth.T
    union = truth.sum(1)[:, None] + truth.sum(1)[None, :] - shared
    return torch.where(union > 0, shared / union.clamp(min=1), 0.0)


def supervised_contrastive_loss(embedding: torch.Tensor, labels: torch.Tensor,
                                temperature: float = TEMPERATURE) -> torch.Tensor:
    """SupCon's L_out over a batch of unit vectors: for each anchor, the affinity-weighted
    mean of -log softmax over every other example of the batch, averaged over the anchors that
    have a positive. A batch where no anchor has one gives 0 (still a graph, so a step is
    a no-op rather than an error)."""
    n = embedding.shape[0]
    self_pair = torch.eye(n, dtype=torch.bool, device=embedding.device)
    logits = (embedding @ embedding.T / temperature).masked_fill(self_pair, -math.inf)
    log_prob = torch.log_softmax(logits, dim=1).masked_fill(self_pair, 0.0)
    weight = label_affinity(labels.to(embedding.device)).masked_fill(self_pair, 0.0)
    total = weight.sum(dim=1)
    anchors = total > 0
    if not anchors.any():
        return embedding.sum() * 0.0
    per_anchor = -(weight * log_prob).sum(dim=1)[anchors] / total[anchors]
    return per_anchor.mean()


def contrastive_loss_of_pair(text_cls: torch.Tensor, image_cls: torch.Tensor,
                             labels: torch.Tensor) -> torch.Tensor:
    """The supervised contrastive loss of a batch's [CLS] pairs."""
    return supervised_contrastive_loss(pair_embedding(text_cls, image_cls), labels)
