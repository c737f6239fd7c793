"""Training checkpoints: weights, optimizer and schedule state, as safetensors + JSON.

Each checkpoint is a directory written under a temporary name and renamed into place when
complete, so the newest `epoch-NNNN` directory is always whole. Nothing is pickled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from autopmf.files import load_tensors, save_tensors

CHECKPOINTS = "checkpoints"


def save_checkpoint(run: Path, epoch: int, weights: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, schedule, state: dict) -> Path:
    root = run / CHECKPOINTS
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    opt = optimizer.state_dict()
    save_tensors(tmp / "weights.safetensors", weights)
    save_tensors(tmp / "optimizer.safetensors",
                 {f"{idx}.{key}": value for idx, st in opt["state"].items()
                  for key, value in st.items()})
    (tmp / "state.json").write_text(json.dumps({
        "epoch": epoch, "param_groups": opt["param_groups"],
        "schedule": schedule.state_dict(), **state}))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for older in root.glob("epoch-*"):  # keep only the newest whole checkpoint
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def latest_checkpoint(run: Path) -> Path | None:
    done = sorted((run / CHECKPOINTS).glob("epoch-*"))
    return done[-1] if done else None


def load_checkpoint(path: Path, optimizer: torch.optim.Optimizer, schedule
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore optimizer and schedule in place; return (weights, state)."""
    state = json.loads((path / "state.json").read_text())
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_tensors(path / "optimizer.safetensors").items():
        idx, name = key.split(".", 1)
        opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    schedule.load_state_dict(state.pop("schedule"))
    return load_tensors(path / "weights.safetensors"), state
