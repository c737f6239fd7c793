"""Frozen-feature caches on disk, shared across epochs, runs and the search.

The streams entering a slot depend only on (encoders, image size, text length, slot, data), so
they are computed once and kept under the cache directory keyed by a fingerprint of exactly
those. Files are safetensors written atomically: a killed run never leaves a cache that looks
complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import torch

from autopmf.data.types import Dataset
from autopmf.features import FeatureCache, build_feature_cache, encode_split
from autopmf.files import load_tensors, save_tensors
from autopmf.progress import announce_cache, announce_cache_start
from autopmf.space import SearchSpace
from supernet.backbone import FrozenBackbone

CACHE_FORMAT = 1


def cache_root() -> Path:
    return Path(os.environ.get("AUTOPMF_CACHE", Path.home() / ".cache" / "autopmf"))


def cache_key(space: SearchSpace, dataset: Dataset, slot: int) -> str:
    parts = {"format": CACHE_FORMAT, "text": space.text_encoder, "image": space.image_encoder,
             "image_size": space.image_size, "max_text_len": space.max_text_len, "slot": slot,
             "data": dataset.fingerprint()}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def _to_tensors(cache: FeatureCache, prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.text": cache.text, f"{prefix}.text_mask": cache.text_mask,
            f"{prefix}.image": cache.image, f"{prefix}.image_index": cache.image_index,
            f"{prefix}.labels": cache.labels}


def _from_tensors(t: dict[str, torch.Tensor], prefix: str, slot: int) -> FeatureCache:
    return FeatureCache(slot, t[f"{prefix}.text"], t[f"{prefix}.text_mask"],
                        t[f"{prefix}.image"], t[f"{prefix}.image_index"], t[f"{prefix}.labels"])


def feature_caches(space: SearchSpace, dataset: Dataset, backbone: FrozenBackbone, slot: int,
                   device: str = "cpu", use_disk: bool = True) -> dict[str, FeatureCache]:
    """Streams entering `slot` for every split, from disk when computed before."""
    path = cache_root() / "features" / f"{cache_key(space, dataset, slot)}.safetensors"
    started = time.perf_counter()
    if use_disk and path.exists():
        tensors = load_tensors(path)
        caches = {name: _from_tensors(tensors, name, slot) for name in dataset.splits()}
        announce_cache(False, slot, caches, time.perf_counter() - started, f"from {path}")
        return caches
    announce_cache_start(slot, sum(len(split) for split in dataset.splits().values()))
    caches = {name: build_feature_cache(encode_split(split, backbone, space), backbone, slot,
                                        device=device)
              for name, split in dataset.splits().items()}
    if use_disk:
        tensors = {}
        for name, cache in caches.items():
            tensors.update(_to_tensors(cache, name))
        save_tensors(path, tensors, metadata={"slot": str(slot), "space": space.name})
    announce_cache(True, slot, caches, time.perf_counter() - started,
                   f"saved to {path}" if use_disk else "kept in memory")
    return caches
