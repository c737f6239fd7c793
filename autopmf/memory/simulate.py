"""Allocator simulation: run real model code on fake tensors and count the bytes it keeps.

Under `FakeTensorMode` every op runs its shape/dtype logic only, so a layer costs no compute and
no memory and sees no weight values. `LiveBytes` watches every op's outputs and, through a weak
reference on each new storage, every release: it keeps the running total of live storage bytes
and its peak, which is what an allocator's "allocated bytes" counter reports. The profile that
the estimator composes is built from such runs of single slots (profiling.py). Scratch that a
kernel allocates and frees inside itself is not seen: in fp32 on CPU the simulation reproduces
the torch profiler's allocation record of a training step byte for byte, under bf16 autocast
oneDNN's packed weight copies are missing.

CUDA is emulated on CPU fake tensors (the autograd engine cannot run CUDA fake tensors without a
GPU): same ops and saved tensors, CUDA's 512-byte allocation granule. See profiling.py and
profile.py for the CUDA-only terms (cuBLAS workspaces, foreach AdamW).
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Iterator

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CUDA_GRANULE = 512  # the CUDA caching allocator rounds every block up to a multiple of this


def _storages(values) -> list[torch.UntypedStorage]:
    return [t.untyped_storage() for t in tree_flatten(values)[0] if isinstance(t, torch.Tensor)]


class LiveBytes(TorchDispatchMode):
    """Running total of the bytes of storages allocated by ops run under this mode."""

    def __init__(self, granule: int = 1):
        super().__init__()
        self.granule = granule
        self.live = 0
        self.peak = 0
        self._tracked: set[int] = set()  # ids of the StorageImpls being counted

    def _size(self, storage: torch.UntypedStorage) -> int:
        return -(-storage.nbytes() // self.granule) * self.granule

    def track(self, storage: torch.UntypedStorage) -> None:
        key = storage._cdata
        if key in self._tracked or storage.nbytes() == 0:
            return
        size = self._size(storage)
        self._tracked.add(key)
        weakref.finalize(storage, self._release, key, size)
        self.live += size
        self.peak = max(self.peak, self.live)

    def _release(self, key: int, size: int) -> None:
        self._tracked.discard(key)
        self.live -= size

    def begin(self) -> int:
        """Start a segment: reset the peak to the current level and return that level."""
        self.peak = self.live
        return self.live

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Views and in-place ops return storages they were given: only new storages count.
        given = {s._cdata for s in _storages((args, kwargs))}
        for storage in _storages(out):
            if storage._cdata not in given:
                self.track(storage)
        return out


@contextlib.contextmanager
def fake_parameters(module: nn.Module) -> Iterator[None]:
    """Swap `module`'s parameters and buffers for fake tensors of the same shapes (call inside
    FakeTensorMode); the real ones are put back on exit. The fakes carry no values."""
    saved = []
    for owner in module.modules():
        for table in (owner._parameters, owner._buffers):
            for name, value in table.items():
                if value is None:
                    continue
                fake = torch.empty_strided(value.shape, value.stride(), dtype=value.dtype)
                if isinstance(value, nn.Parameter):
                    fake = nn.Parameter(fake, requires_grad=value.requires_grad)
                saved.append((table, name, value))
                table[name] = fake
    try:
        yield
    finally:
        for table, name, value in saved:
            table[name] = value


def fake_mode() -> FakeTensorMode:
    return FakeTensorMode(allow_non_fake_inputs=False)


def fake_like(t: torch.Tensor, requires_grad: bool = False) -> torch.Tensor:
    """A fake tensor shaped like `t` (call inside FakeTensorMode)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).requires_grad_(requires_grad)


def storage_bytes(tensors, granule: int = 1) -> int:
    """Bytes of the distinct storages behind `tensors` (rounded up to `granule` each)."""
    sizes = {s._cdata: s.nbytes() for s in _storages(list(tensors))}
    return sum(-(-n // granule) * granule for n in sizes.values())
