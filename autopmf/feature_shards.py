"""The frozen-feature cache's files: one folder per cache, rows in shards, a manifest last.

Folder layout (`folder` = cache_root()/features/<key>):
    <split>.text.00000.safetensors ...   rows of the text streams [n, L, d_text]
    <split>.image.00000.safetensors ...  rows of the image streams [n, Nv, d_image]
    <split>.index.safetensors            text_mask, image_index, labels
    manifest.json                        written last: its presence marks the cache complete

Each shard is written atomically (temp file + rename), so a shard that exists is whole; a
build killed part-way leaves whole shards and no manifest, and the next build keeps the
shards that hold what it would write (same rows, shape and dtype) and writes the rest. Shards
are read, not memory-mapped: a batch's rows are copied from the files (one positional read per
run of consecutive rows) into fresh memory, so the process holds the batch, not every shard
page an epoch touched (mapped pages would stay resident and count in its RSS); the files' pages
stay in the kernel's page cache, which the kernel reclaims as it needs.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from autopmf.files import atomic_write_json, save_tensors

MANIFEST = "manifest.json"
# Target bytes per shard: a build holds one shard of each stream in memory; 100k DINOv2-small
# images in bf16 (20 GB) make ~300 files. AUTOPMF_SHARD_BYTES overrides (tests: tiny shards).
SHARD_BYTES = 64 * 2**20
ROWS = "rows"  # the one tensor of a shard file
_SAFETENSORS_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}


def shard_bytes() -> int:
    return int(os.environ.get("AUTOPMF_SHARD_BYTES", SHARD_BYTES))


@dataclass(frozen=True)
class StreamPlan:
    """One stream of one split as shards: `rows` rows of `row_shape`, `rows_per_shard` a shard
    (a multiple of the build's batch size, so a resumed build starts on a batch boundary)."""

    split: str
    kind: str  # "text" or "image"
    rows: int
    row_shape: tuple[int, ...]
    dtype: torch.dtype
    rows_per_shard: int

    @classmethod
    def make(cls, split: str, kind: str, rows: int, row_shape: tuple[int, ...],
             dtype: torch.dtype, batch_size: int) -> "StreamPlan":
        per_batch = batch_size * math.prod(row_shape) * dtype.itemsize
        return cls(split, kind, rows, tuple(row_shape), dtype,
                   max(1, shard_bytes() // max(1, per_batch)) * batch_size)

    @property
    def nbytes(self) -> int:
        return self.rows * math.prod(self.row_shape) * self.dtype.itemsize

    @property
    def shards(self) -> int:
        return math.ceil(self.rows / self.rows_per_shard)

    def path(self, folder: Path, shard: int) -> Path:
        return shard_path(folder, self.split, self.kind, shard)

    def shard_shape(self, shard: int) -> tuple[int, ...]:
        rows = min(self.rows_per_shard, self.rows - shard * self.rows_per_shard)
        return (rows, *self.row_shape)

    def finished(self, folder: Path) -> int:
        """How many leading shards are already on disk as this plan would write them."""
        for shard in range(self.shards):
            if shard_header(self.path(folder, shard)) != (self.dtype, self.shard_shape(shard)):
                return shard
        return self.shards


class ShardWriter:
    """Takes a stream's rows in order (from shard `first` on) into one shard-sized buffer and
    writes each shard as it fills: memory holds one shard, whatever the data's size."""

    def __init__(self, plan: StreamPlan, folder: Path, first: int = 0):
        self.plan, self.folder, self.shard = plan, folder, first
        self.buffer: torch.Tensor | None = None
        self.pending_rows = 0

    @property
    def next_row(self) -> int:
        """The first row not yet written (where a resumed build starts)."""
        return self.shard * self.plan.rows_per_shard + self.pending_rows

    def add(self, rows: torch.Tensor) -> None:
        while len(rows):
            if self.buffer is None:
                self.buffer = torch.empty(self.plan.shard_shape(self.shard),
                                          dtype=self.plan.dtype)
            take = min(len(rows), len(self.buffer) - self.pending_rows)
            self.buffer[self.pending_rows:self.pending_rows + take] = rows[:take]
            self.pending_rows += take
            rows = rows[take:]
            if self.pending_rows == len(self.buffer):
                self.flush()

    def flush(self) -> None:
        if self.buffer is None or not self.pending_rows:
            return
        assert self.pending_rows == len(self.buffer), "a shard must be written whole"
        write_shard(self.plan.path(self.folder, self.shard), self.buffer)
        self.shard += 1
        self.buffer, self.pending_rows = None, 0


def shard_path(folder: Path, split: str, kind: str, shard: int) -> Path:
    return folder / f"{split}.{kind}.{shard:05d}.safetensors"


def index_path(folder: Path, split: str) -> Path:
    return folder / f"{split}.index.safetensors"


def open_streams(folder: Path, split: str, text_shards: int, image_shards: int
                 ) -> tuple[RowStore, RowStore] | None:
    """(text, image) rows of a split, read from the shards on demand; None if one is missing."""
    paths = {kind: [shard_path(folder, split, kind, i) for i in range(count)]
             for kind, count in (("text", text_shards), ("image", image_shards))}
    if not all(p.exists() for kind in paths.values() for p in kind):
        return None
    return (RowStore([open_shard(p) for p in paths["text"]]),
            RowStore([open_shard(p) for p in paths["image"]]))


def write_shard(path: Path, rows: torch.Tensor) -> None:
    save_tensors(path, {ROWS: rows})


def shard_header(path: Path) -> tuple[torch.dtype, tuple[int, ...]] | None:
    """(dtype, shape) of a shard file's rows, or None if it is missing or not a shard."""
    try:
        header, _ = _read_header(path)
        entry = header[ROWS]
        return _SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_header(path: Path) -> tuple[dict, int]:
    """(safetensors header, byte offset of the data)."""
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        if not 0 < size < 2**24:
            raise ValueError(f"{path}: not a safetensors file")
        header = json.loads(file.read(size))
    return header, 8 + size


def open_shard(path: Path) -> Shard:
    """A shard file's rows, read on demand (its header is read now)."""
    header, start = _read_header(path)
    entry = header[ROWS]
    return Shard(Path(path), _SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"]),
                 start + entry["data_offsets"][0])


class Shard:
    """One shard file's rows [rows, *row_shape], read by positional reads (`os.preadv`) from
    a descriptor opened on first use and closed with the object. A positional read moves no
    file offset, so processes forked after it opened (DataLoader workers, were a cache ever
    read in them: today none is) share it safely; a pickled copy (spawned workers) leaves it
    behind and opens its own."""

    def __init__(self, path: Path, dtype: torch.dtype, shape: tuple[int, ...], offset: int):
        self.path, self.dtype, self.shape, self.offset = path, dtype, shape, offset
        self.row_bytes = math.prod(shape[1:]) * dtype.itemsize
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)
            self._fd = None

    def read_into(self, out: torch.Tensor, first: int) -> None:
        """Fill `out` (contiguous, this shard's dtype and row shape) with rows `first`,
        `first + 1`, ... of the shard."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        buffer = memoryview(out.view(-1).view(torch.uint8).numpy())
        position, done = self.offset + first * self.row_bytes, 0
        while done < len(buffer):
            got = os.preadv(self._fd, [buffer[done:]], position + done)
            if got <= 0:
                raise OSError(f"{self.path}: shorter than its header says")
            done += got


class RowStore:
    """Rows of one stream spread over shard files, read like a tensor: `store[rows]` reads
    those rows from the files into a new tensor (nothing of the files stays mapped or held);
    `subset(rows)` is a view that reads nothing."""

    def __init__(self, shards: list[Shard], rows: torch.Tensor | None = None):
        self.shards = shards
        self.starts = torch.tensor([0] + [len(s) for s in shards]).cumsum(0)
        self.rows = rows  # the global rows this view shows, or None for all of them

    def __len__(self) -> int:
        return int(self.starts[-1]) if self.rows is None else len(self.rows)

    @property
    def dtype(self) -> torch.dtype:
        return self.shards[0].dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.shards[0].shape[1:])

    @property
    def nbytes(self) -> int:
        return len(self) * math.prod(self.shape[1:]) * self.dtype.itemsize

    def _global(self, index) -> torch.Tensor:
        local = torch.arange(len(self))[index]
        return local if self.rows is None else self.rows[local]

    def subset(self, index) -> "RowStore":
        return RowStore(self.shards, self._global(index))

    def __getitem__(self, index) -> torch.Tensor:
        rows = self._global(index)
        flat = rows.reshape(-1)
        wanted, inverse = torch.unique(flat, sorted=True, return_inverse=True)
        if len(wanted) == len(flat):  # distinct rows: each read straight to its place
            out = torch.empty((len(flat), *self.shape[1:]), dtype=self.dtype)
            place = torch.empty_like(inverse)
            place[inverse] = torch.arange(len(flat))  # wanted[k] goes to out[place[k]]
        else:  # repeated rows: each read once, then copied where asked for
            out = torch.empty((len(wanted), *self.shape[1:]), dtype=self.dtype)
            place = torch.arange(len(wanted))
        for begin, end, shard, first in self._runs(wanted, place):
            self.shards[shard].read_into(out[begin:end], first)
        if len(wanted) != len(flat):
            out = out[inverse]
        return out.reshape(*rows.shape, *self.shape[1:])

    def _runs(self, wanted: torch.Tensor, place: torch.Tensor
              ) -> list[tuple[int, int, int, int]]:
        """(begin, end, shard, first) for each run of the sorted, distinct rows `wanted` that
        lie in one shard and go to consecutive places: rows first, first + 1, ... of that
        shard go to out[begin:end]."""
        if not len(wanted):
            return []
        shard_of = torch.searchsorted(self.starts, wanted, right=True) - 1
        breaks = ((wanted[1:] - wanted[:-1] != 1) | (place[1:] - place[:-1] != 1)
                  | (shard_of[1:] != shard_of[:-1])).nonzero().reshape(-1) + 1
        begins = [0, *breaks.tolist()]
        ends = [*begins[1:], len(wanted)]
        firsts = (wanted - self.starts[shard_of]).tolist()
        places, shards = place.tolist(), shard_of.tolist()
        return [(places[b], places[b] + e - b, shards[b], firsts[b])
                for b, e in zip(begins, ends)]


def write_manifest(folder: Path, manifest: dict) -> None:
    atomic_write_json(folder / MANIFEST, manifest)


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
