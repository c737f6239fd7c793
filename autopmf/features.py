"""Encoder inputs and the frozen-feature cache.

`EncodedSplit` holds one split ready for the encoders (token ids; images decoded per batch).
Below the first fused slot the model is a pure function of the input, so `FeatureCache`
computes the two residual streams at a given slot once (image streams once per distinct
image) and training starts every step from there. A cache's streams are tensors in memory or
shards on disk read per batch (feature_shards.RowStore), stored in the training precision and
handed out as float32.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import numpy as np
import torch

from autopmf.choices import DEFAULT_SLOT_BYTES
from autopmf.data.images import ImageFiles
from autopmf.data.types import Split
from autopmf.image_batches import image_batches
from autopmf.space import SearchSpace
from supernet.backbone import FrozenBackbone
from supernet.fusion import Streams


@dataclass
class EncodedSplit:
    """One split ready for the encoders: its texts tokenised (once), its distinct images
    still raw (uint8 array or files), decoded and normalised per batch (`pixel_batches`)."""

    input_ids: torch.Tensor  # [N, L]
    attention_mask: torch.Tensor  # [N, L]
    images: np.ndarray | ImageFiles  # [n_images, H, W, 3] uint8, one row per distinct image
    image_index: torch.Tensor  # [N]
    labels: torch.Tensor  # [N]
    image_size: int  # the encoder's input size
    # uint8 [B, H, W, 3] -> normalised float [B, 3, S, S], as the image encoder was trained
    preprocess: Callable[[np.ndarray], torch.Tensor]

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised pixels of these distinct images (rows of `images`), decoded now."""
        return self.preprocess(np.stack([np.asarray(self.images[int(i)]) for i in images]))

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's input for examples `rows` (their images decoded now)."""
        images, inverse = self.image_index[rows].unique(return_inverse=True)
        return {"input_ids": self.input_ids[rows], "attention_mask": self.attention_mask[rows],
                "pixels": self.pixels(images)[inverse], "labels": self.labels[rows]}


def encode_split(split: Split, backbone: FrozenBackbone, space: SearchSpace) -> EncodedSplit:
    tokens = backbone.text.tokenize(split.texts, space.max_text_len)
    return EncodedSplit(tokens["input_ids"], tokens["attention_mask"], split.images,
                        torch.from_numpy(split.image_index), torch.from_numpy(split.labels),
                        space.image_size,
                        functools.partial(backbone.image.preprocess, image_size=space.image_size))


def without_padding_columns(encoded: EncodedSplit) -> EncodedSplit:
    """The split without its trailing token positions that are padding in every example.
    Padding is a masked key that no real token attends to, and only real tokens' outputs are
    read, so the model computes the same outputs for less work (the demo's statements use 9
    of their 16 positions). Training memory then falls below the memory model's figure,
    which assumes max_text_len: for benchmarks of training quality, not of memory."""
    real = encoded.attention_mask.any(0).nonzero()
    used = int(real.max()) + 1 if len(real) else 0
    return replace(encoded, input_ids=encoded.input_ids[:, :used],
                   attention_mask=encoded.attention_mask[:, :used])


def pixel_batches(encoded: EncodedSplit, batch_size: int, start: int = 0,
                  device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Normalised pixels [B, 3, S, S] of images `start`.. in order, one batch at a time, on
    `device` (a batch is copied there as uint8, from pinned memory on CUDA, then normalised)."""
    for raw in image_batches(encoded.images, batch_size, start, device):
        yield encoded.preprocess(raw.to(device, non_blocking=True))


@torch.no_grad()
def frozen_stream_batches(encoded: EncodedSplit, backbone: FrozenBackbone, slot: int,
                          batch_size: int = 64, device: torch.device | str = "cpu",
                          dtype: torch.dtype = torch.float32, text_start: int = 0,
                          image_start: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """("text", streams) for examples text_start.. then ("image", streams) for images
    image_start.., `batch_size` rows at a time, on the CPU in `dtype`: the frozen encoders
    run up to `slot` once, texts per example, images per image."""
    mask = encoded.attention_mask.bool()
    for r in _row_batches(len(encoded), batch_size, text_start):
        yield "text", backbone.encode_text_until(encoded.input_ids[r].to(device),
                                                 mask[r].to(device), slot).to("cpu", dtype)
    for pixels in pixel_batches(encoded, batch_size, image_start, device):
        yield "image", backbone.encode_image_until(pixels, slot).to("cpu", dtype)


@dataclass
class FeatureCache:
    """The streams entering slot `slot` for every example of one split."""

    slot: int
    text: torch.Tensor  # [N, L, d_text] (or a RowStore of it)
    text_mask: torch.Tensor  # [N, L] bool
    image: torch.Tensor  # [n_images, Nv, d_image] (or a RowStore of it)
    image_index: torch.Tensor  # [N]
    labels: torch.Tensor  # [N]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        """The streams' size as stored (the mask, index and labels are small)."""
        return sum(_nbytes(t) for t in (self.text, self.text_mask, self.image))

    @property
    def tokens_per_example(self) -> int:
        """Tokens of its longer stream: what sizes an inference batch (`inference_rows`)."""
        return max(self.text.shape[1], self.image.shape[1])

    def streams(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> Streams:
        return Streams(self.text[rows].to(device, torch.float32),
                       self.text_mask[rows].to(device),
                       self.image[self.image_index[rows]].to(device, torch.float32))

    def subset(self, rows: torch.Tensor) -> "FeatureCache":
        """These examples and their distinct images only (rows of a store on disk stay
        there), so that advancing a subset runs the frozen slots on its own images alone."""
        images, image_index = self.image_index[rows].unique(return_inverse=True)
        return FeatureCache(self.slot, _rows(self.text, rows), self.text_mask[rows],
                            _rows(self.image, images), image_index, self.labels[rows])

    def sample(self, rows: torch.Tensor, device: torch.device | str = "cpu") -> "FeatureCache":
        """These examples and their distinct images in memory (float32, on `device`)."""
        images, image_index = self.image_index[rows].unique(return_inverse=True)
        return FeatureCache(self.slot, self.text[rows].to(device, torch.float32),
                            self.text_mask[rows].to(device),
                            self.image[images].to(device, torch.float32), image_index.to(device),
                            self.labels[rows])


def _rows(t, rows: torch.Tensor):
    """Those rows of a tensor (a copy), or of a RowStore (a view that reads nothing)."""
    return t.subset(rows) if hasattr(t, "subset") else t[rows]


def _nbytes(t) -> int:
    """A tensor's bytes, or a RowStore's (the one that has `subset`)."""
    return t.nbytes if hasattr(t, "subset") else t.numel() * t.element_size()


def build_feature_cache(encoded: EncodedSplit, backbone: FrozenBackbone, slot: int,
                        batch_size: int = 64, device: torch.device | str = "cpu",
                        dtype: torch.dtype = torch.float32) -> FeatureCache:
    """The streams entering `slot`, kept in memory in `dtype` (see frozen_stream_batches)."""
    parts: dict[str, list[torch.Tensor]] = {"text": [], "image": []}
    for kind, streams in frozen_stream_batches(encoded, backbone, slot, batch_size, device,
                                               dtype):
        parts[kind].append(streams)
    text, image = (torch.cat(parts[kind]) if parts[kind] else torch.zeros(0)
                   for kind in ("text", "image"))
    return FeatureCache(slot, text, encoded.attention_mask.bool(), image, encoded.image_index,
                        encoded.labels)


def _row_batches(n: int, batch_size: int, start: int = 0) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(start, n, batch_size)]


# Tokens (of the longest stream) that one no-grad batch through the frozen encoders carries
# at most. Each MLP activation of a ViT-S (width 1536) is then ~100 MB in float32; 256 rows
# of 224-px DINOv2 streams (257 tokens) made 0.4 GB ones, the peak of a search at that size
# (BENCHMARKS.md, "Inference batches sized by tokens"). Small inputs keep 256 rows.
INFERENCE_TOKENS = 2**14
MAX_INFERENCE_ROWS = 256


def inference_rows(tokens_per_example: int) -> int:
    """Rows per inference batch for examples of this many tokens."""
    return max(1, min(MAX_INFERENCE_ROWS, INFERENCE_TOKENS // max(1, tokens_per_example)))


@torch.no_grad()
def advance_feature_cache(cache: FeatureCache, backbone: FrozenBackbone, slot: int,
                          batch_size: int | None = None) -> FeatureCache:
    """The same examples' streams entering a higher `slot`, by running the plain slots between
    (texts per example, images per image, as in `build_feature_cache`); in memory, float32.
    Without a cache (live_features), they are computed from the inputs."""
    if getattr(cache, "live", False):
        return cache.at_slot(slot).sample(torch.arange(len(cache)))
    text, image = advanced_streams(cache, backbone, slot, batch_size)
    return FeatureCache(slot, text, cache.text_mask, image, cache.image_index, cache.labels)


def _unchanged(x: torch.Tensor) -> torch.Tensor:
    return x


@torch.no_grad()
def advanced_streams(cache: FeatureCache, backbone: FrozenBackbone, slot: int,
                     batch_size: int | None = None, keep_text: Callable = _unchanged,
                     keep_image: Callable = _unchanged) -> tuple[torch.Tensor, torch.Tensor]:
    """(text per example, image per distinct image): `cache`'s streams run up to `slot` a
    batch at a time, and of each batch only what `keep_text` / `keep_image` return is kept
    (the whole streams by default; the [CLS] rows alone hold a split's final features in
    little memory). `batch_size`: rows per batch (default: `inference_rows`)."""
    # The cache stays where it is (host memory, or on disk); each batch runs on
    # the backbone's device and comes back.
    device = next(backbone.parameters()).device

    def run(tensor, layer_index, run_layer, keep, mask=None):
        out = None  # filled batch by batch: no second copy of the result, as a cat would make
        for r in _row_batches(len(tensor), batch_size or inference_rows(tensor.shape[1])):
            rows = tensor[r]
            x = rows.float().to(device)
            for s in range(cache.slot, slot):
                x = run_layer(layer_index(s), x, None if mask is None else mask[r].to(device))
            x = keep(x)
            if out is None:
                out = torch.empty((len(tensor), *x.shape[1:]), dtype=x.dtype,
                                  device=rows.device)
            out[r] = x
        return out

    return (run(cache.text, backbone.text_layer_index, backbone.text.run_layer, keep_text,
                cache.text_mask),
            run(cache.image, backbone.image_layer_index, backbone.image.run_layer, keep_image))


class RamBudget:
    """Bytes of advanced slot streams that the SlotCaches sharing it may hold in RAM
    together (one budget per run bounds its memory whatever the dataset's size). A
    SlotCaches gives its bytes back when it is dropped."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.used = 0

    def take(self, nbytes: int) -> bool:
        if self.used + nbytes > self.max_bytes:
            return False
        self.used += nbytes
        return True

    def give_back(self, nbytes: int) -> None:
        self.used -= nbytes


class SlotCaches:
    """Streams of one split entering each slot, built on demand from the lowest one.

    A subnet whose first fused slot is s starts from the streams entering s, so the frozen
    slots below it are never run again. Higher slots are kept in RAM (float32) only while
    `budget` (bytes, or a RamBudget shared with other SlotCaches) has room; past that, a
    subnet starts from the highest kept slot below its own first fused slot (still correct:
    those slots then run without autograd)."""

    def __init__(self, lowest: FeatureCache, backbone: FrozenBackbone,
                 budget: int | RamBudget = DEFAULT_SLOT_BYTES):
        self.backbone = backbone
        self.budget = budget if isinstance(budget, RamBudget) else RamBudget(budget)
        self._by_slot = {lowest.slot: lowest}
        self._live = getattr(lowest, "live", False)  # no cache: every slot costs nothing

    def at(self, slot: int) -> FeatureCache:
        """The cache to start a subnet whose first fused slot is `slot` from."""
        if slot in self._by_slot:
            return self._by_slot[slot]
        if self._live:
            lowest = self._by_slot[min(self._by_slot)]
            return self._by_slot.setdefault(slot, lowest.at_slot(slot))
        below = self._by_slot[max(s for s in self._by_slot if s < slot)]
        # An advanced cache is float32 in memory, whatever `below` is stored in (bf16: twice).
        nbytes = below.nbytes * 4 // below.text.dtype.itemsize
        if not self.budget.take(nbytes):
            return below
        weakref.finalize(self, self.budget.give_back, nbytes)
        self._by_slot[slot] = advance_feature_cache(below, self.backbone, slot)
        return self._by_slot[slot]


INIT_SAMPLE = 256  # examples a data-dependent initialisation looks at


def stream_sampler(cache: FeatureCache, backbone: FrozenBackbone, seed: int,
                   device: torch.device | str = "cpu", n: int = INIT_SAMPLE
                   ) -> Callable[[int], Streams]:
    """`at(slot)`: the frozen streams entering `slot` (>= cache.slot) for a seeded sample of
    `cache`'s examples; each slot is computed once, from the highest one below it."""
    rows = torch.randperm(len(cache), generator=torch.Generator().manual_seed(seed))[:n]
    by_slot = {cache.slot: cache.sample(rows, device)}

    def at(slot: int) -> Streams:
        if slot not in by_slot:
            below = max(s for s in by_slot if s < slot)
            by_slot[slot] = advance_feature_cache(by_slot[below], backbone, slot)
        return by_slot[slot].streams(torch.arange(len(by_slot[slot])), device)
    return at
