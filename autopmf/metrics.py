"""Task metrics. Higher is better for every metric here (the search maximises it)."""

from __future__ import annotations

import torch

METRICS = ("accuracy",)


def score(metric: str, logits: torch.Tensor, labels: torch.Tensor) -> float:
    if metric == "accuracy":
        return (logits.argmax(dim=-1) == labels).float().mean().item()
    raise ValueError(f"unknown metric {metric!r}; known: {METRICS}")


def loss_fn(metric: str, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits.float(), labels)
