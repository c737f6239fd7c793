"""The two frozen encoders paired into slots.

Slot j pairs text layer t(j) and image layer v(j), aligned from the top when the depths differ
(the deeper encoder's extra bottom layers always run plain). Everything below a given slot is a
pure function of the input: `encode_until` computes it without autograd, which is what makes
PMF cheap in memory and lets a feature cache stand in for it.
"""

from __future__ import annotations

import torch
from torch import nn

from supernet.encoder import ImageEncoder, TextEncoder
from supernet.fusion import Streams, kept_mask


class FrozenBackbone(nn.Module):
    def __init__(self, text: TextEncoder, image: ImageEncoder):
        super().__init__()
        self.text = text
        self.image = image
        self.num_slots = min(text.depth, image.depth)

    def text_layer_index(self, slot: int) -> int:
        return self.text.depth - self.num_slots + slot

    def image_layer_index(self, slot: int) -> int:
        return self.image.depth - self.num_slots + slot

    def text_layer_fn(self, slot: int):
        index = self.text_layer_index(slot)
        return lambda tokens, mask, rows=None: self.text.run_layer(index, tokens, mask, rows)

    def image_layer_fn(self, slot: int):
        index = self.image_layer_index(slot)
        return lambda tokens, mask, rows=None: self.image.run_layer(index, tokens, mask, rows)

    def rows_kept(self, slot: int) -> tuple[slice | None, slice | None]:
        """(text, image) rows of slot `slot`'s outputs that anything reads (None: all). Only
        the heads read the top slot, and only its [CLS] rows: computing just those is exact
        and skips most of the top layer's work, forward and backward."""
        if slot < self.num_slots - 1:
            return None, None
        return self.text.feature_rows, self.image.feature_rows

    def run_plain_slot(self, slot: int, streams: Streams,
                       keep: tuple[slice | None, slice | None] = (None, None)) -> Streams:
        """Slot `slot` without fusion; `keep`: the (text, image) output rows to compute."""
        text_rows, image_rows = keep
        return Streams(
            self.text.run_layer(self.text_layer_index(slot), streams.text, streams.text_mask,
                                text_rows),
            kept_mask(streams.text_mask, text_rows),
            self.image.run_layer(self.image_layer_index(slot), streams.image, None,
                                 image_rows))

    @torch.no_grad()
    def encode_until(self, batch: dict[str, torch.Tensor], slot: int) -> Streams:
        """Embeddings plus every layer below `slot` (slot == num_slots: the whole encoders)."""
        text_mask = batch["attention_mask"].bool()
        return Streams(self.encode_text_until(batch["input_ids"], text_mask, slot), text_mask,
                       self.encode_image_until(batch["pixels"], slot))

    @torch.no_grad()
    def encode_text_until(self, input_ids: torch.Tensor, text_mask: torch.Tensor,
                          slot: int) -> torch.Tensor:
        text = self.text.embed({"input_ids": input_ids})
        for i in range(self.text_layer_index(slot)):
            text = self.text.run_layer(i, text, text_mask)
        return text

    @torch.no_grad()
    def encode_image_until(self, pixels: torch.Tensor, slot: int) -> torch.Tensor:
        image = self.image.embed(pixels)
        for i in range(self.image_layer_index(slot)):
            image = self.image.run_layer(i, image, None)
        return image

    def cls_features(self, streams: Streams) -> tuple[torch.Tensor, torch.Tensor]:
        return self.text.cls_feature(streams.text), self.image.cls_feature(streams.image)


class TwoHeads(nn.Module):
    """A linear head on each encoder's [CLS]; the prediction is the mean of the two logits."""

    def __init__(self, d_text: int, d_image: int, num_classes: int):
        super().__init__()
        self.text = nn.Linear(d_text, num_classes)
        self.image = nn.Linear(d_image, num_classes)

    def forward(self, text_cls: torch.Tensor, image_cls: torch.Tensor) -> torch.Tensor:
        return (self.text(text_cls) + self.image(image_cls)) / 2
