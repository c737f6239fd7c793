"""Trainable weights of a model over frozen encoders: only those are saved and loaded."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach() for name, p in module.named_parameters() if p.requires_grad}


def load_trainable_state(module: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy `tensors` into `module`'s trainable parameters; ValueError naming the first
    mismatch (missing or unexpected name, wrong shape) before anything is copied."""
    own = dict(module.named_parameters())
    expected = {n for n, p in own.items() if p.requires_grad}
    if set(tensors) != expected:
        missing = sorted(expected - set(tensors))
        extra = sorted(set(tensors) - expected)
        raise ValueError(f"weights do not match this model (missing {missing[:3]}, "
                         f"unexpected {extra[:3]})")
    for name, value in tensors.items():
        if own[name].shape != value.shape:
            raise ValueError(f"weights for {name} have shape {tuple(value.shape)}, "
                             f"this model needs {tuple(own[name].shape)}")
        if own[name].dtype != value.dtype:  # copy_ would cast, e.g. int32 bits to floats
            raise ValueError(f"weights for {name} are {value.dtype}, this model needs "
                             f"{own[name].dtype}")
    with torch.no_grad():
        for name, value in tensors.items():
            own[name].copy_(value)
