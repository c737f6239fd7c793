"""No feature cache: the frozen streams entering a slot, recomputed from the inputs per batch.

`LiveFeatures` answers what a `FeatureCache` answers (`streams(rows, device)`, `subset`,
`sample`, `slot`, `labels`, `image_index`), but keeps only token ids and the raw image store:
each batch decodes its distinct images and runs the frozen encoders up to the slot. On a GPU
this can cost less than reading cached streams back (`--feature-cache off`).
"""

from __future__ import annotations

from functools import cached_property

import torch

from autopmf.features import EncodedSplit, FeatureCache
from supernet.backbone import FrozenBackbone
from supernet.fusion import Streams


class LiveFeatures:
    live = True  # read by SlotCaches and advance_feature_cache
    nbytes = 0  # nothing is kept

    def __init__(self, encoded: EncodedSplit, backbone: FrozenBackbone, slot: int,
                 rows: torch.Tensor | None = None):
        self.encoded, self.backbone, self.slot = encoded, backbone, slot
        self.rows = torch.arange(len(encoded)) if rows is None else rows
        self.labels = encoded.labels[self.rows]
        self.image_index = encoded.image_index[self.rows]
        self.text_mask = encoded.attention_mask[self.rows].bool()

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def tokens_per_example(self) -> int:
        """Tokens of its longer stream (one image is run to find its length)."""
        device = next(self.backbone.parameters()).device
        return max(self.text_mask.shape[1], self._images(self.image_index[:1], device).shape[1])

    def at_slot(self, slot: int) -> "LiveFeatures":
        return LiveFeatures(self.encoded, self.backbone, slot, self.rows)

    def subset(self, rows: torch.Tensor) -> "LiveFeatures":
        return LiveFeatures(self.encoded, self.backbone, self.slot, self.rows[rows])

    @torch.no_grad()
    def sample(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> FeatureCache:
        """These examples and their distinct images, computed once and kept in memory."""
        images, image_index = self.image_index[rows].unique(return_inverse=True)
        text, mask = self._text(rows, device)
        return FeatureCache(self.slot, text, mask, self._images(images, device),
                            image_index.to(device), self.labels[rows])

    @torch.no_grad()
    def streams(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> Streams:
        images, image_index = self.image_index[rows].unique(return_inverse=True)
        text, mask = self._text(rows, device)
        return Streams(text, mask, self._images(images, device)[image_index.to(device)])

    def _text(self, rows: torch.Tensor, device) -> tuple[torch.Tensor, torch.Tensor]:
        mask = self.text_mask[rows].to(device)
        ids = self.encoded.input_ids[self.rows[rows]].to(device)
        return self.backbone.encode_text_until(ids, mask, self.slot).float(), mask

    def _images(self, images: torch.Tensor, device) -> torch.Tensor:
        pixels = self.encoded.pixels(images).to(device)
        return self.backbone.encode_image_until(pixels, self.slot).float()
