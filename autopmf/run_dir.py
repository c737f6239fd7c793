"""Run directories: one run per directory, recorded in `config.yaml` with its seed and the
package versions that produced it.

`claim_run_dir` is the one place that decides whether a command may write into `--out`: a
different run there is refused, the same run is continued only with `--resume`, and `--force`
clears the previous run's outputs first. `fingerprint` names a run's identity in checkpoints,
so that a checkpoint is never resumed into a run of another space, encoder pair or data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from typing import Iterable, Mapping

import torch
import yaml

from autopmf.checkpoint import CHECKPOINTS
from autopmf.errors import AutopmfError

CONFIG = "config.yaml"
VERSIONED_PACKAGES = ("autopmf", "torch", "transformers", "timm", "nni", "numpy", "safetensors")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in VERSIONED_PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "absent"
    return out


def run_settings(cfg) -> dict:
    """The fields of a training config dataclass that change what a run computes (not where
    it runs, or how verbosely)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("progress", "device", "use_disk_cache")}
    if settings.get("data_seed", 0) is None:
        del settings["data_seed"]  # the default: runs written before it existed stay the same
    return settings


def fingerprint(identity: dict) -> str:
    """A short stable hash of a run's identity (JSON-able)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def tensors_digest(tensors: Mapping) -> str:
    """A short hash of named tensors' names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def claim_run_dir(out: Path, identity: dict, *, resume: bool, force: bool, what: str,
                  outputs: Iterable[str]) -> None:
    """Make `out` ready for the run `identity` (written later by `write_run_config`).

    `outputs` are the files the run writes; `--force` removes them, its config and its
    checkpoints, so nothing of the previous run can pass for part of the new one."""
    out = Path(out)
    config = out / CONFIG
    if force:
        for name in (*outputs, CONFIG):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        return
    if not config.exists():
        return
    try:
        previous = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        previous = {}
    if not isinstance(previous, dict) or {k: previous.get(k) for k in identity} != identity:
        raise AutopmfError(f"{out} holds a different {what} (other space, data, seed or "
                           "settings); choose another --out, or --force to replace it")
    if not resume:
        raise AutopmfError(f"{out} already holds this {what}; pass --resume to continue it "
                           "(or --force to start over)")


def write_run_config(out: Path, identity: dict, **extra) -> None:
    """config.yaml: the run's identity, then `extra` and the package versions."""
    from autopmf.files import atomic_write_text

    doc = {**identity, **extra, "versions": package_versions()}
    atomic_write_text(Path(out) / CONFIG, yaml.safe_dump(doc, sort_keys=False))
