"""An optimizer step that moves only what the step's subnet used.

With weight sharing, a step of one subnet must not move the weights of rows it never read:
AdamW would (decoupled weight decay, and momentum left from earlier steps). So the unused part
of every parameter, and of its optimizer state, is put back after the step.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


@torch.no_grad()
def step_used_only(optimizer: torch.optim.Optimizer, model: nn.Module,
                   regions: Mapping[str, tuple[slice, ...] | None]) -> None:
    saved = []
    for name, p in model.named_parameters():
        if not p.requires_grad or p.grad is None:
            continue  # the optimizer skips it anyway
        region = regions.get(name, (slice(None),))
        unused = torch.ones_like(p, dtype=torch.bool)
        if region is not None:
            unused[region] = False
        if not unused.any():
            continue
        state = {k: v.clone() for k, v in optimizer.state.get(p, {}).items()
                 if torch.is_tensor(v) and v.shape == p.shape}
        saved.append((p, unused, p.detach().clone(), state))
    optimizer.step()
    for p, unused, before, state in saved:
        p[unused] = before[unused]
        for key, value in optimizer.state[p].items():
            if key in state:
                value[unused] = state[key][unused]
            elif torch.is_tensor(value) and value.shape == p.shape:
                value[unused] = 0  # state created by this step: as if never touched
