"""Images in batches, decoded by DataLoader workers: a split's pixels are never all in memory.

A packaged dataset's uint8 array goes through the same loader, in the calling process (its
images are already decoded; workers would only add start-up time).
"""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from autopmf.data.images import IMAGE_ERRORS, ImageFiles
from autopmf.errors import AutopmfError

# Workers that decode on-disk images; AUTOPMF_WORKERS overrides (0: decode in this process).
MAX_WORKERS = 8


class _Rows(Dataset):
    """Rows start..stop-1 of an image store (uint8 array or ImageFiles), one image each."""

    def __init__(self, images, start: int, stop: int):
        self.images, self.start, self.stop = images, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> np.ndarray | str:
        """The image, or (decoding failed) a one-line reason naming its file."""
        try:
            return np.asarray(self.images[self.start + i])
        except IMAGE_ERRORS as exc:
            return f"{self.images.paths[self.start + i]}: {exc.__class__.__name__}: {exc}"


def _stack(images: list[np.ndarray | str]) -> torch.Tensor | str:
    failed = next((item for item in images if isinstance(item, str)), None)
    return failed if failed is not None else torch.from_numpy(np.stack(images))


def decode_workers(images) -> int:
    if not isinstance(images, ImageFiles):
        return 0
    if "AUTOPMF_WORKERS" in os.environ:
        return int(os.environ["AUTOPMF_WORKERS"])
    return max(1, min(MAX_WORKERS, (os.cpu_count() or 2) - 1))


def image_batches(images, batch_size: int, start: int = 0, device: torch.device | str = "cpu"
                  ) -> Iterator[torch.Tensor]:
    """uint8 [B, H, W, 3] batches of rows `start`.. of `images`, in order (pinned on CUDA,
    so that the copy to the device overlaps the next batch's decoding)."""
    workers = decode_workers(images)
    loader = DataLoader(_Rows(images, start, len(images)), batch_size=batch_size,
                        shuffle=False, num_workers=workers, collate_fn=_stack,
                        pin_memory=torch.device(device).type == "cuda",
                        prefetch_factor=2 if workers else None,
                        persistent_workers=False)
    for batch in loader:
        if isinstance(batch, str):  # its header read at load, its pixels do not decode
            raise AutopmfError(f"cannot decode image {batch.splitlines()[0]}; the file is "
                               "truncated or damaged: replace or remove it")
        yield batch
