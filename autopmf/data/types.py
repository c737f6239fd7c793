"""Raw multimodal classification data: images, texts and labels, split by image.

Tokenisation and image normalisation belong to the encoders, not here. A packaged dataset
holds its images as a uint8 array; an on-disk one as `ImageFiles`, decoded per batch at a
common size (images.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from autopmf.data.images import ImageFiles


@dataclass(frozen=True)
class Split:
    """One split. Examples share images through `image_index`, so each image is stored once."""

    # uint8 [n_images, H, W, 3] RGB, the distinct images of this split: an array, or files
    # decoded on access (ImageFiles) for on-disk datasets
    images: np.ndarray | ImageFiles
    image_index: np.ndarray  # int64 [n_examples], row of `images` for each example
    texts: list[str]  # n_examples
    # int64 [n_examples] class ids, or float32 [n_examples, n_classes] multi-hot (multi-label)
    labels: np.ndarray

    def __post_init__(self) -> None:
        # Catch construction bugs early; these are programming errors, not user errors.
        assert self.images.dtype == np.uint8 and len(self.images.shape) == 4
        assert self.images.shape[3] == 3
        assert self.image_index.dtype == np.int64
        assert (self.labels.dtype == np.int64 and self.labels.ndim == 1) or (
            self.labels.dtype == np.float32 and self.labels.ndim == 2)
        assert len(self.image_index) == len(self.texts) == len(self.labels)
        assert len(self.image_index) == 0 or (
            0 <= self.image_index.min() and self.image_index.max() < len(self.images)
        )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    label_names: list[str]
    metric: str = "accuracy"
    # Examples the loader could not use (unreadable image, missing text), all splits: for the
    # start-up line; not part of the content (`fingerprint`).
    skipped: int = field(default=0, compare=False)

    @property
    def multilabel(self) -> bool:
        """Each example has a set of labels (multi-hot), scored with sigmoid/BCE and F1."""
        return self.train.labels.ndim == 2

    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def fingerprint(self) -> str:
        """Short sha256 hex of the full content; a cache key for anything derived from it.
        Image files count by path, size and modification time (not decoded)."""
        digest = hashlib.sha256()

        def add(part: bytes) -> None:
            # Length-prefix each part so that different contents can never concatenate equal.
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)

        add(self.name.encode())
        add(self.metric.encode())
        add("\0".join(self.label_names).encode())
        for split in (self.train, self.val, self.test):
            add(str(split.images.shape).encode())
            add(split.images.identity() if isinstance(split.images, ImageFiles)
                else np.ascontiguousarray(split.images).tobytes())
            add(np.ascontiguousarray(split.image_index).tobytes())
            add("\0".join(split.texts).encode())
            add(np.ascontiguousarray(split.labels).tobytes())
        return digest.hexdigest()[:16]
