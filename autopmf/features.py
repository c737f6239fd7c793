"""Encoder inputs and the frozen-feature cache.

`EncodedSplit` holds one split ready for the encoders (token ids, normalised pixels). Below the
first fused slot the model is a pure function of the input, so `FeatureCache` computes the two
residual streams at a given slot once (image streams once per distinct image) and training
starts every step from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from autopmf.data.types import Split
from autopmf.space import SearchSpace
from supernet.backbone import FrozenBackbone
from supernet.fusion import Streams


@dataclass
class EncodedSplit:
    input_ids: torch.Tensor  # [N, L]
    attention_mask: torch.Tensor  # [N, L]
    pixels: torch.Tensor  # [n_images, 3, S, S], one row per distinct image
    image_index: torch.Tensor  # [N]
    labels: torch.Tensor  # [N]

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's input for examples `rows`."""
        return {"input_ids": self.input_ids[rows], "attention_mask": self.attention_mask[rows],
                "pixels": self.pixels[self.image_index[rows]], "labels": self.labels[rows]}


def encode_split(split: Split, backbone: FrozenBackbone, space: SearchSpace) -> EncodedSplit:
    tokens = backbone.text.tokenize(split.texts, space.max_text_len)
    return EncodedSplit(tokens["input_ids"], tokens["attention_mask"],
                        backbone.image.preprocess(split.images, space.image_size),
                        torch.from_numpy(split.image_index), torch.from_numpy(split.labels))


@dataclass
class FeatureCache:
    """The streams entering slot `slot` for every example of one split."""

    slot: int
    text: torch.Tensor  # [N, L, d_text]
    text_mask: torch.Tensor  # [N, L] bool
    image: torch.Tensor  # [n_images, Nv, d_image]
    image_index: torch.Tensor  # [N]
    labels: torch.Tensor  # [N]

    def __len__(self) -> int:
        return len(self.labels)

    def streams(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> Streams:
        return Streams(self.text[rows].to(device), self.text_mask[rows].to(device),
                       self.image[self.image_index[rows]].to(device))

    def subset(self, rows: torch.Tensor) -> "FeatureCache":
        """These examples only (their images stay shared, indexed as before)."""
        return FeatureCache(self.slot, self.text[rows], self.text_mask[rows], self.image,
                            self.image_index[rows], self.labels[rows])


@torch.no_grad()
def build_feature_cache(encoded: EncodedSplit, backbone: FrozenBackbone, slot: int,
                        batch_size: int = 64, device: torch.device | str = "cpu"
                        ) -> FeatureCache:
    """Run the frozen encoders up to `slot` once: texts per example, images per image."""
    mask = encoded.attention_mask.bool()
    text = torch.cat([
        backbone.encode_text_until(encoded.input_ids[r].to(device), mask[r].to(device),
                                   slot).cpu()
        for r in _row_batches(len(encoded), batch_size)])
    image = torch.cat([
        backbone.encode_image_until(encoded.pixels[r].to(device), slot).cpu()
        for r in _row_batches(len(encoded.pixels), batch_size)])
    return FeatureCache(slot, text, mask, image, encoded.image_index, encoded.labels)


def _row_batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def advance_feature_cache(cache: FeatureCache, backbone: FrozenBackbone, slot: int,
                          batch_size: int = 256) -> FeatureCache:
    """The same examples' streams entering a higher `slot`, by running the plain slots between
    (texts per example, images per image, as in `build_feature_cache`)."""
    def run(tensor, layer_index, run_layer, mask=None):
        parts = []
        for r in _row_batches(len(tensor), batch_size):
            x = tensor[r]
            for s in range(cache.slot, slot):
                x = run_layer(layer_index(s), x, None if mask is None else mask[r])
            parts.append(x)
        return torch.cat(parts)

    text = run(cache.text, backbone.text_layer_index, backbone.text.run_layer, cache.text_mask)
    image = run(cache.image, backbone.image_layer_index, backbone.image.run_layer)
    return FeatureCache(slot, text, cache.text_mask, image, cache.image_index, cache.labels)


class SlotCaches:
    """Streams of one split entering each slot, built on demand from the lowest one.

    A subnet whose first fused slot is s starts from the streams entering s, so the frozen
    slots below it are never run again. Higher slots are kept only while the total stays
    under `max_bytes`; past that, a subnet starts from the highest kept slot below its own
    first fused slot (still correct: those slots then run without autograd)."""

    def __init__(self, lowest: FeatureCache, backbone: FrozenBackbone,
                 max_bytes: int = 2 * 2**30):
        self.backbone = backbone
        self.max_bytes = max_bytes
        self._by_slot = {lowest.slot: lowest}

    @staticmethod
    def _nbytes(cache: FeatureCache) -> int:
        return sum(t.numel() * t.element_size() for t in (cache.text, cache.image))

    def at(self, slot: int) -> FeatureCache:
        """The cache to start a subnet whose first fused slot is `slot` from."""
        if slot in self._by_slot:
            return self._by_slot[slot]
        below = self._by_slot[max(s for s in self._by_slot if s < slot)]
        used = sum(self._nbytes(c) for c in self._by_slot.values())
        if used + self._nbytes(below) > self.max_bytes:
            return below
        self._by_slot[slot] = advance_feature_cache(below, self.backbone, slot)
        return self._by_slot[slot]


INIT_SAMPLE = 256  # examples a data-dependent initialisation looks at


def stream_sampler(cache: FeatureCache, backbone: FrozenBackbone, seed: int,
                   device: torch.device | str = "cpu", n: int = INIT_SAMPLE
                   ) -> Callable[[int], Streams]:
    """`at(slot)`: the frozen streams entering `slot` (>= cache.slot) for a seeded sample of
    `cache`'s examples; each slot is computed once, from the highest one below it."""
    rows = torch.randperm(len(cache), generator=torch.Generator().manual_seed(seed))[:n]
    images, image_index = cache.image_index[rows].unique(return_inverse=True)
    by_slot = {cache.slot: FeatureCache(
        cache.slot, cache.text[rows].to(device), cache.text_mask[rows].to(device),
        cache.image[images].to(device), image_index.to(device), cache.labels[rows])}

    def at(slot: int) -> Streams:
        if slot not in by_slot:
            below = max(s for s in by_slot if s < slot)
            by_slot[slot] = advance_feature_cache(by_slot[below], backbone, slot)
        return by_slot[slot].streams(torch.arange(len(by_slot[slot])), device)
    return at
