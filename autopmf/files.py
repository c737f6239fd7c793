"""Safe files: everything that claims to be complete is written atomically (temp + rename)."""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file

from autopmf.errors import AutopmfError


_UMASK = os.umask(0)
os.umask(_UMASK)  # read once: os has no getter


# A write that failed for lack of room: disk full, quota, or a file-size limit.
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def is_out_of_room(exc: BaseException) -> bool:
    """Python's OSError, or safetensors' error that wraps the same OS error in its text."""
    if isinstance(exc, OSError):
        return exc.errno in NO_ROOM
    return (type(exc).__name__ == "SafetensorError"
            and any(f"(os error {code})" in str(exc) for code in NO_ROOM))


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        # mkstemp makes 0600, and a writer may make its own file (safetensors does): give
        # the finished file the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_copy(source: Path, path: Path) -> None:
    import shutil

    _atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor],
                 metadata: Mapping[str, str] | None = None) -> None:
    """safetensors only: nothing in a run directory is ever unpickled. Weights that hold NaN
    or infinity are refused: a diverged run must not leave a file that looks usable."""
    cpu = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    diverged = next((k for k, v in cpu.items()
                     if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if diverged is not None:
        raise AutopmfError(f"refusing to write {path}: {diverged} holds NaN or infinite values "
                           "(training diverged); lower --lr and rerun with --force")
    _atomic_write(path, lambda tmp: save_file(cpu, tmp, metadata=dict(metadata or {})))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; one line if it is missing, damaged or not
    safetensors (the library checks the header: dtypes, shapes, offsets, its size)."""
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise AutopmfError(f"{path} is missing; rerun the command that writes it (with "
                           "--force), or point at a finished run") from None
    except Exception as exc:  # safetensors' own error, or the OS's while reading
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise AutopmfError(f"{path} is not a readable safetensors file ({reason}); it is "
                           "damaged: rerun the command that wrote it (with --force)") from None
