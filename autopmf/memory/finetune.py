"""The full fine-tuning baseline that PMF's memory is compared with: the same two encoders and
heads, every weight trained, the whole depth of both encoders run with autograd."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from supernet.backbone import FrozenBackbone, TwoHeads
from supernet.fusion import Streams


class FullFineTune(nn.Module):
    def __init__(self, backbone: FrozenBackbone, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.heads = TwoHeads(backbone.text.hidden_size, backbone.image.hidden_size, num_classes)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        text_enc, image_enc = self.backbone.text, self.backbone.image
        mask = batch["attention_mask"].bool()
        text = text_enc.embed({"input_ids": batch["input_ids"]})
        for i in range(text_enc.depth):
            text = text_enc.run_layer(i, text, mask)
        image = image_enc.embed(batch["pixels"])
        for i in range(image_enc.depth):
            image = image_enc.run_layer(i, image, None)
        return self.heads(*self.backbone.cls_features(Streams(text, mask, image)))


@contextlib.contextmanager
def unfrozen(backbone: FrozenBackbone) -> Iterator[None]:
    """Make the frozen encoders trainable for the duration (they are shared: re-freeze)."""
    params = list(backbone.parameters())
    for p in params:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
