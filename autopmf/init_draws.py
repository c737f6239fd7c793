"""Draw the fused slots' random start several times and keep the draw whose final [CLS] pair
a linear probe reads best (`TrainConfig.init_draws`; 1, the default, draws once, as the paper).

Why: on the demo task a design's score after two epochs follows its start. Across seeds of
one design, the fitted-heads probe of the untrained model ranges over up to 0.1 val accuracy,
and the trained score follows it (within-design correlation 0.68 over ten designs × six
seeds; BENCHMARKS.md, "Keeping the best of several random starts"). The draw of the mapping
MLPs and prompts decides how much of the frozen features the fused path carries at step 0.

The draws are scored on training examples only (the probe fitted on one half of a seeded
sample, scored on the other), so validation stays what selects epochs and reports scores.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from autopmf.baselines import select_probe
from autopmf.features import FeatureCache
from autopmf.head_init import Features, cls_pairs
from supernet.fusion import FusionSlot

# Examples in each half of the scoring sample. In a pilot on two demo designs, halves of
# 2,048 ranked the draws like their fitted-heads start (whole training split, read on
# validation) at r 0.75 and 0.96; halves of 1,024 at 0.79 and 0.20 (BENCHMARKS.md).
SCORE_EXAMPLES = 2048


def draw_seed(seed: int, draw: int) -> int:
    """The seed of draw `draw` (>= 1) of a run seeded `seed`: distinct for every pair."""
    return int(np.random.SeedSequence([seed, draw]).generate_state(1)[0])


def scoring_halves(n: int, seed: int, half: int = SCORE_EXAMPLES
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint seeded samples of range(n), each of min(half, n // 2) rows."""
    rows = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    size = min(half, n // 2)
    return rows[:size], rows[size:2 * size]


def probe_score(features: Features, fit: FeatureCache, held_out: FeatureCache,
                num_classes: int, metric: str) -> float:
    """How well a linear probe fitted on `fit` reads the [CLS] pair of `held_out` (the
    heads' own probe: a closed-form ridge classifier read the draws' order less faithfully)."""
    return select_probe(cls_pairs(features, fit), fit.labels, cls_pairs(features, held_out),
                        held_out.labels, num_classes, metric).val


def redraw(slots: dict[int, FusionSlot], seed: int) -> None:
    """Give every slot a fresh draw of the constructors' random initialisation, seeded (no
    global random numbers consumed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for slot in slots.values():
            fresh = FusionSlot(slot.text_query.shape[1], slot.image_query.shape[1], slot.size)
            slot.load_state_dict(fresh.state_dict())


def snapshot(slots: dict[int, FusionSlot]) -> dict[int, dict[str, torch.Tensor]]:
    return {j: {k: v.clone() for k, v in slot.state_dict().items()} for j, slot in slots.items()}


def keep_best_draw(slots: dict[int, FusionSlot], features: Features, train: FeatureCache,
                   draws: int, seed: int, num_classes: int, metric: str,
                   initialise: Callable[[dict[int, FusionSlot], int], None]) -> list[float]:
    """Score the slots' current parameters (draw 0) and draws - 1 fresh draws, each after
    `initialise(slots, seed)` (the prompt-init rule), by `probe_score` on training examples;
    leave the slots holding the best (the earliest on ties). -> every draw's score.

    Draws are deterministic by seed and consume no global random numbers. `features` must
    read the model the slots belong to.
    """
    fit_rows, held_rows = scoring_halves(len(train), seed)
    fit, held_out = train.sample(fit_rows), train.sample(held_rows)
    initialise(slots, seed)
    scores = [probe_score(features, fit, held_out, num_classes, metric)]
    best = snapshot(slots)
    for draw in range(1, draws):
        redraw(slots, draw_seed(seed, draw))
        initialise(slots, draw_seed(seed, draw))
        scores.append(probe_score(features, fit, held_out, num_classes, metric))
        if scores[-1] > max(scores[:-1]):
            best = snapshot(slots)
    for j, slot in slots.items():
        slot.load_state_dict(best[j])
    return scores
