"""Images on disk, decoded when a batch needs them, never all at once.

An on-disk dataset's split holds an `ImageFiles`: the paths of its distinct images and the
size they are decoded at. Indexing it decodes those images only; a packaged dataset keeps a
uint8 array instead, and both are read the same way (`len`, `[i]`, `.shape`), so everything
downstream streams either.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np

# What a file that is not a readable image raises in Pillow.
IMAGE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError)


def load_image(path: Path, size: int) -> np.ndarray:
    """uint8 [size, size, 3]: shorter side resized to `size`, centre-cropped. Raises OSError
    (or ValueError) for a missing, truncated or undecodable file."""
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
        fitted = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BICUBIC)
        return np.asarray(fitted, dtype=np.uint8)


def check_image(path: Path) -> None:
    """Raise (as `load_image` would) unless `path` opens as an image: reads its header only,
    so an index of many files is checked without decoding them."""
    from PIL import Image

    with Image.open(path) as image:
        image.size  # noqa: B018 (the header was parsed)


class ImageFiles:
    """The distinct images of one split, as files decoded on access to uint8
    [size, size, 3] (see `load_image`). Reads like a uint8 [n, size, size, 3] array."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, paths: Sequence[Path], size: int):
        self.paths = [Path(p) for p in paths]
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.paths), self.size, self.size, 3)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return load_image(self.paths[index], self.size)
        rows = np.arange(len(self))[index]  # a slice, a list or an index array
        return np.stack([load_image(self.paths[i], self.size) for i in rows.reshape(-1)]
                        ).reshape(*rows.shape, self.size, self.size, 3)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every image decoded: for small splits and tests only."""
        return self[:].astype(dtype or np.uint8, copy=False)

    def identity(self) -> bytes:
        """What the decoded images depend on (paths, file sizes and modification times, the
        decode size), cheaply: a cache key, without reading the pixels."""
        digest = hashlib.sha256(f"size={self.size}".encode())
        for path in self.paths:
            stat = path.stat()
            digest.update(f"\0{path}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
        return digest.digest()
