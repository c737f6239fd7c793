"""Training checkpoints: weights, optimizer and schedule state, as safetensors + JSON.

Each checkpoint is a directory written under a temporary name and renamed into place when
complete, so the newest `epoch-NNNN` directory is always whole. Nothing is pickled. Every
checkpoint records the fingerprint of the run that wrote it (space, encoders, data, settings),
and is resumed only into the same run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from autopmf.errors import AutopmfError
from autopmf.files import load_tensors, save_tensors
from supernet.weights import load_trainable_state, trainable_state

if TYPE_CHECKING:
    from autopmf.train import LoopHooks

CHECKPOINTS = "checkpoints"


def save_checkpoint(run: Path, epoch: int, weights: dict[str, torch.Tensor],
                    optimizer: torch.optim.Optimizer, schedule, state: dict, *,
                    fingerprint: str) -> Path:
    root = run / CHECKPOINTS
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _write_checkpoint(tmp, epoch, weights, optimizer, schedule, state, fingerprint)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # e.g. a full disk: leave no partial files
        raise
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for older in root.glob("epoch-*"):  # keep only the newest whole checkpoint
        if older != final:
            shutil.rmtree(older, ignore_errors=True)
    return final


def _write_checkpoint(folder: Path, epoch: int, weights: dict[str, torch.Tensor],
                      optimizer: torch.optim.Optimizer, schedule, state: dict,
                      fingerprint: str) -> None:
    opt = optimizer.state_dict()
    save_tensors(folder / "weights.safetensors", weights)
    save_tensors(folder / "optimizer.safetensors",
                 {f"{idx}.{key}": value for idx, st in opt["state"].items()
                  for key, value in st.items()})
    (folder / "state.json").write_text(json.dumps({
        "epoch": epoch, "fingerprint": fingerprint, "param_groups": opt["param_groups"],
        "schedule": schedule.state_dict(), **state}))


def check_fingerprint(path: Path, recorded: str | None, expected: str) -> None:
    """Refuse to resume what another run wrote (a run from before fingerprints included)."""
    if recorded is None:
        raise AutopmfError(f"{path} records no run fingerprint (an older autopmf wrote it), so "
                           "it cannot be resumed safely; --force to start over, or choose "
                           "another --out")
    if recorded != expected:
        raise AutopmfError(f"{path} was written by a different run (another space, encoder "
                           "pair, data or settings); resume with the options that run used, or "
                           "choose another --out (or --force to start over)")


def checkpoint_dirs(run: Path) -> list[Path]:
    """The checkpoint folders in `run/checkpoints`: whole ones, and any being written."""
    root = run / CHECKPOINTS
    return sorted(p for pattern in ("epoch-*", ".epoch-*.tmp") for p in root.glob(pattern)
                  if p.is_dir())


def remove_checkpoints(run: Path) -> None:
    """Remove the checkpoint folders, and `checkpoints/` itself unless something else is in
    it: only what autopmf wrote."""
    for folder in checkpoint_dirs(run):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        (run / CHECKPOINTS).rmdir()
    except OSError:
        pass  # absent, or holds files that are not ours


def latest_checkpoint(run: Path) -> Path | None:
    done = sorted((run / CHECKPOINTS).glob("epoch-*"))
    return done[-1] if done else None


def load_checkpoint(path: Path, optimizer: torch.optim.Optimizer, schedule, *,
                    fingerprint: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore optimizer and schedule in place; return (weights, state). A checkpoint of
    another run is refused before anything is loaded, a damaged one with one line."""
    state = _read_state(path)
    check_fingerprint(path, state.pop("fingerprint", None), fingerprint)
    opt_state = _optimizer_state(path, optimizer)
    try:
        optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
        schedule.load_state_dict(state.pop("schedule"))
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise damaged(path, f"its optimizer or schedule state does not fit ({exc})") from None
    return load_tensors(path / "weights.safetensors"), state


def damaged(path: Path, what: str) -> AutopmfError:
    return AutopmfError(f"checkpoint {path} is damaged: {what}; delete that folder and rerun "
                        "with --resume (that training then starts over), or use --force")


def _read_state(path: Path) -> dict:
    """state.json, checked for the fields every checkpoint has."""
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise damaged(path, "it has no state.json") from None
    except (ValueError, UnicodeDecodeError):
        raise damaged(path, "state.json is not valid JSON (half-written?)") from None
    if not isinstance(state, dict):
        raise damaged(path, "state.json is not a JSON object")
    if "fingerprint" in state:  # without one, check_fingerprint names the real problem
        missing = [k for k in ("epoch", "param_groups", "schedule", "history")
                   if k not in state]
        if missing or not isinstance(state["epoch"], int) or isinstance(state["epoch"], bool):
            raise damaged(path, f"state.json lacks a valid {(missing or ['epoch'])[0]!r}")
    return state


def _optimizer_state(path: Path, optimizer: torch.optim.Optimizer
                     ) -> dict[int, dict[str, torch.Tensor]]:
    """optimizer.safetensors by parameter index, each tensor checked against its parameter:
    torch's load_state_dict would cast a wrong dtype and defer a wrong shape to a crash."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in load_tensors(path / "optimizer.safetensors").items():
        idx, _, name = key.partition(".")
        if not idx.isdigit() or int(idx) >= len(params) or not name:
            raise damaged(path, f"optimizer tensor {key!r} belongs to no parameter")
        param = params[int(idx)]
        if name == "step":
            ok = value.is_floating_point() and value.numel() == 1
        else:
            ok = value.dtype == param.dtype and value.shape == param.shape
        if not ok:
            raise damaged(path, f"optimizer tensor {key!r} is {value.dtype} "
                          f"{tuple(value.shape)}, not {param.dtype} {tuple(param.shape)}")
        opt_state.setdefault(int(idx), {})[name] = value
    return opt_state


class EpochCheckpoints:
    """Per-epoch checkpoints of one `train.train_loop` in `run/checkpoints`: everything the
    loop carries from one epoch to the next (trainable weights, optimizer, schedule, history,
    and its hooks' state, e.g. the shuffling generator and the best weights so far), so a
    resumed loop ends bit-identical."""

    def __init__(self, run: Path, fingerprint: str, resume: bool):
        self.run, self.fingerprint, self.resume = Path(run), fingerprint, resume

    def save(self, epoch: int, model: nn.Module, optimizer, schedule, history: list[dict],
             hooks: LoopHooks) -> None:
        extra, state = hooks.state_dict()
        tensors = {f"model.{name}": t for name, t in trainable_state(model).items()}
        tensors.update(extra)
        save_checkpoint(self.run, epoch, tensors, optimizer, schedule,
                        {"history": history, **state}, fingerprint=self.fingerprint)

    def check(self) -> None:
        """Refuse to resume a checkpoint of another run, before the run writes anything."""
        path = latest_checkpoint(self.run) if self.resume else None
        if path is not None:
            check_fingerprint(path, _read_state(path).get("fingerprint"), self.fingerprint)

    def restore(self, model: nn.Module, optimizer, schedule, hooks: LoopHooks
                ) -> tuple[int, list[dict]] | None:
        """(epochs done, their history), with the model, optimizer, schedule and hooks
        restored in place; or None to start from scratch."""
        path = latest_checkpoint(self.run) if self.resume else None
        if path is None:
            return None
        tensors, state = load_checkpoint(path, optimizer, schedule,
                                         fingerprint=self.fingerprint)
        weights = {name[len("model."):]: t for name, t in tensors.items()
                   if name.startswith("model.")}
        if not weights:  # a supernet's from before train_loop: weights under plain names
            weights, tensors = tensors, {}
        try:
            load_trainable_state(model, weights)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise damaged(path, f"its weights do not fit this model ({exc})") from None
        try:
            hooks.load_state_dict({k: t for k, t in tensors.items()
                                   if not k.startswith("model.")}, state)
        except ValueError as exc:  # the hooks name what does not fit
            raise damaged(path, str(exc)) from None
        except (KeyError, TypeError, RuntimeError) as exc:
            raise damaged(path, f"its training state does not fit this run ({exc})") from None
        return state["epoch"], state["history"]
