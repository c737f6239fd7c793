"""Frozen-feature caches: where a command's streams entering a slot come from.

The streams entering a slot depend only on (encoders, image size, text length, slot, storage
dtype, data), so on disk they are kept under the cache directory keyed by a fingerprint of
exactly those, and shared across epochs, runs and the search. `mode` (--feature-cache):
  disk    shards read per batch (feature_shards.py), built in one streaming pass and resumed
          from the finished shards if a build was killed; never read before it is complete;
  memory  built the same way, kept in memory for this command only;
  off     no cache: the frozen prefix is recomputed every batch (live_features.py);
  auto    disk, except on CUDA for data whose images are already decoded in memory (the
          packaged datasets): the GPU recomputes the prefix faster than it reads it back.
Streams are stored in the training precision: bf16/fp16 when it is bf16/fp16, else fp32.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from autopmf.choices import FEATURE_CACHE_MODES
from autopmf.data.types import Dataset
from autopmf.errors import AutopmfError
from autopmf.feature_shards import (MANIFEST, ShardWriter, StreamPlan, index_path,
                                    open_streams, read_manifest, write_manifest)
from autopmf.features import (EncodedSplit, FeatureCache, build_feature_cache, encode_split,
                              frozen_stream_batches)
from autopmf.files import is_out_of_room, load_tensors, save_tensors
from autopmf.progress import announce_cache, announce_cache_start, say
from autopmf.space import SearchSpace
from autopmf.units import GIB, gib
from supernet.backbone import FrozenBackbone

CACHE_FORMAT = 2  # 2: sharded folders in the storage dtype (1: one float32 file)
BATCH = 64  # rows the frozen encoders run at a time while building
STORAGE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
ROOM_MARGIN = 1.02  # leave a little over the cache's size free


def cache_root() -> Path:
    return Path(os.environ.get("AUTOPMF_CACHE", Path.home() / ".cache" / "autopmf"))


def cache_key(space: SearchSpace, dataset: Dataset, slot: int, dtype: torch.dtype) -> str:
    parts = {"format": CACHE_FORMAT, "text": space.text_encoder, "image": space.image_encoder,
             "image_size": space.image_size, "max_text_len": space.max_text_len, "slot": slot,
             "dtype": str(dtype), "data": dataset.fingerprint()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def resolve_mode(mode: str, dataset: Dataset, device: str) -> str:
    """`mode`, with "auto" decided (see the module's docstring)."""
    if mode not in FEATURE_CACHE_MODES:
        raise AutopmfError(f"--feature-cache {mode!r}: use one of "
                           f"{', '.join(FEATURE_CACHE_MODES)}")
    if mode != "auto":
        return mode
    in_memory = all(isinstance(s.images, np.ndarray) for s in dataset.splits().values())
    return "off" if torch.device(device).type == "cuda" and in_memory else "disk"


def feature_caches(space: SearchSpace, dataset: Dataset, backbone: FrozenBackbone, slot: int,
                   device: str = "cpu", mode: str = "auto", precision: str | None = None
                   ) -> dict:
    """The streams entering `slot` for every split (FeatureCache, or LiveFeatures when
    `mode` is off), in `precision` (default: the space's)."""
    mode = resolve_mode(mode, dataset, device)
    dtype = STORAGE_DTYPES[precision or space.precision]
    folder = cache_root() / "features" / cache_key(space, dataset, slot, dtype)
    started = time.perf_counter()
    caches = open_cache(folder, slot) if mode == "disk" else None
    if caches is not None:
        announce_cache(False, slot, caches, time.perf_counter() - started,
                       f"from {folder} ({_dtype_name(dtype)}, read per batch)")
        return caches
    encoded = {name: encode_split(split, backbone, space)  # texts tokenised once
               for name, split in dataset.splits().items()}
    if mode == "off":
        from autopmf.live_features import LiveFeatures

        say(f"feature cache: off; the frozen streams entering slot {slot} are recomputed "
            "every batch", once=True)
        return {name: LiveFeatures(enc, backbone, slot) for name, enc in encoded.items()}
    if mode == "memory":
        announce_cache_start(slot, sum(map(len, encoded.values())))
        caches = {name: build_feature_cache(enc, backbone, slot, BATCH, device, dtype)
                  for name, enc in encoded.items()}
        announce_cache(True, slot, caches, time.perf_counter() - started, "kept in memory")
        return caches
    build_cache(folder, encoded, backbone, slot, device, dtype, space.name)
    caches = open_cache(folder, slot)
    assert caches is not None, "a finished cache must open"
    announce_cache(True, slot, caches, time.perf_counter() - started,
                   f"saved to {folder} ({_dtype_name(dtype)}, read per batch)")
    return caches


def open_cache(folder: Path, slot: int) -> dict[str, FeatureCache] | None:
    """The finished cache in `folder` (read per batch), or None if there is none (no manifest,
    or a shard it lists is gone)."""
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("format") != CACHE_FORMAT:
        return None
    caches = {}
    for name, counts in manifest["splits"].items():
        streams = open_streams(folder, name, counts["text_shards"], counts["image_shards"])
        if streams is None:
            (folder / MANIFEST).unlink(missing_ok=True)  # rebuild what is missing
            return None
        index = load_tensors(index_path(folder, name))
        caches[name] = FeatureCache(slot, streams[0], index["text_mask"], streams[1],
                                    index["image_index"], index["labels"])
    return caches


def build_cache(folder: Path, encoded: dict[str, EncodedSplit], backbone: FrozenBackbone,
                slot: int, device: str, dtype: torch.dtype, space_name: str) -> None:
    """Write the cache in one streaming pass, keeping the shards a killed build finished;
    the manifest last. Fails in one line, before writing, if the disk lacks room for it;
    else says its size and starts."""
    plans = {name: stream_plans(name, enc, backbone, slot, dtype, device)
             for name, enc in encoded.items()}
    done = {(p.split, p.kind): p.finished(folder) for pair in plans.values() for p in pair}
    total = sum(p.nbytes for pair in plans.values() for p in pair)
    left = sum(p.nbytes * (1 - done[p.split, p.kind] / max(1, p.shards))
               for pair in plans.values() for p in pair)
    shards = sum(p.shards for pair in plans.values() for p in pair)
    kept = sum(done.values())
    check_room(folder, left)
    announce_cache_start(slot, sum(map(len, encoded.values())),
                         f"{total / 2**20:,.1f} MiB on disk ({_dtype_name(dtype)}) in {folder}"
                         + (f"; resuming: {kept} of {shards} shards already written"
                            if kept else ""))
    try:
        for name, enc in encoded.items():
            save_tensors(index_path(folder, name),
                         {"text_mask": enc.attention_mask.bool(), "image_index": enc.image_index,
                          "labels": enc.labels})
            writers = {plan.kind: ShardWriter(plan, folder, done[name, plan.kind])
                       for plan in plans[name]}
            for kind, rows in frozen_stream_batches(enc, backbone, slot, BATCH, device, dtype,
                                                    text_start=writers["text"].next_row,
                                                    image_start=writers["image"].next_row):
                writers[kind].add(rows)
            for writer in writers.values():
                writer.flush()
    except Exception as exc:
        if is_out_of_room(exc):
            raise AutopmfError(f"feature cache: the disk holding {folder} filled up while "
                               "writing it; free space there (the shards written so far are "
                               "kept and reused), set AUTOPMF_CACHE to another disk, or use "
                               "--feature-cache memory or off") from None
        raise
    write_manifest(folder, {
        "format": CACHE_FORMAT, "slot": slot, "dtype": _dtype_name(dtype), "space": space_name,
        "splits": {name: {"examples": len(enc), "images": len(enc.images),
                          "text_shards": plans[name][0].shards,
                          "image_shards": plans[name][1].shards}
                   for name, enc in encoded.items()}})


@torch.no_grad()
def stream_plans(split: str, encoded: EncodedSplit, backbone: FrozenBackbone, slot: int,
                 dtype: torch.dtype, device: str = "cpu") -> tuple[StreamPlan, StreamPlan]:
    """(text, image) shard plans; one row's shape is read off a one-row forward."""
    text = backbone.encode_text_until(encoded.input_ids[:1].to(device),
                                      encoded.attention_mask[:1].bool().to(device), slot)
    size = encoded.image_size
    image = backbone.encode_image_until(torch.zeros(1, 3, size, size, device=device), slot)
    return (StreamPlan.make(split, "text", len(encoded), tuple(text.shape[1:]), dtype, BATCH),
            StreamPlan.make(split, "image", len(encoded.images), tuple(image.shape[1:]), dtype,
                            BATCH))


def check_room(folder: Path, needed: float) -> None:
    """One line, before anything is written, if the disk holding `folder` has less free
    space than `needed` bytes."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if needed * ROOM_MARGIN > free:
        raise AutopmfError(f"feature cache: needs {gib(needed / GIB)} GiB on disk in {folder} "
                           f"but only {gib(free / GIB)} GiB is free there; free space, set "
                           "AUTOPMF_CACHE to another disk, or use --feature-cache memory or off")


def _dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in STORAGE_DTYPES.items()}[dtype]
