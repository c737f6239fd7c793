"""Run directories: one run per directory, recorded in `config.yaml` with its seed and the
package versions that produced it.

`claim_run_dir` is the one place that decides whether a command may write into `--out`: a
different run there is refused, the same run is continued only with `--resume`, and `--force`
replaces an autopmf run, never a folder autopmf did not write; the old run's files go only
when the new run starts (`RunClaim.start`), after every input has been checked. `run_lock`
lets one process at a time write a run folder. `fingerprint` names a run's identity in
checkpoints, so that a checkpoint is never resumed into a run of another space, encoder pair
or data.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
import yaml

from autopmf.checkpoint import CHECKPOINTS, checkpoint_dirs, remove_checkpoints
from autopmf.errors import AutopmfError
from autopmf.layout import CONFIG, LOCK, PLOTS, RUN_FILES  # the layout: one module

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
    it runs, how much RAM it keeps streams in, or how verbosely)."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items()
                if k not in ("progress", "device", "feature_cache", "cache_max_bytes")}
    if settings.get("data_seed", 0) is None:
        del settings["data_seed"]  # the default: runs written before it existed stay the same
    if settings.get("few_shot") == "none":
        del settings["few_shot"]  # likewise
    if settings.get("mapping_lr_scale") == 1.0:
        del settings["mapping_lr_scale"]  # likewise
    if settings.get("init_draws") == 1:
        del settings["init_draws"]  # likewise
    if settings.get("distill") is False:
        del settings["distill"]  # likewise
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


@dataclass
class RunClaim:
    """Leave to write the run `identity` into `out`; `start` writes its config.yaml, first
    removing the previous run's files when `--force` replaces one."""

    out: Path
    identity: dict
    replace: bool

    def start(self, **extra) -> None:
        if self.replace:
            remove_run_files(self.out)
        write_run_config(self.out, self.identity, **extra)


def claim_run_dir(out: Path, identity: dict, *, resume: bool, force: bool, what: str,
                  outputs: Iterable[str] = (), finished: str | None = None,
                  optional_keys: Iterable[str] = ()) -> RunClaim:
    """Check that `out` may take the run `identity`; nothing is changed on disk yet.

    With `force`, `out` must be empty of run files or hold an autopmf run: the caller calls
    `start` once every input has been checked, so a refused command deletes nothing.
    (`outputs`, the run's own files, are all in RUN_FILES.) `finished`, the file that marks
    a finished run of this kind: found with no config.yaml to identify its run, it is
    refused without `force`; checkpoints found so are resumed only with `resume` (their
    fingerprint then decides). `optional_keys`: identity keys left out at their default
    (so that runs from before the setting existed resume); one the old run named and
    `identity` leaves out is a difference too."""
    out = Path(out)
    config = out / CONFIG
    if force:
        present = run_files_in(out)
        if present and not written_by_autopmf(out):
            raise AutopmfError(f"--force: {out} holds {present[0]}, which autopmf did not "
                               "write (no autopmf config.yaml there); --force replaces only "
                               "an autopmf run, so choose another --out")
        return RunClaim(out, identity, replace=bool(present))
    if not config.exists():
        if finished is not None and (out / finished).exists():
            raise AutopmfError(f"{out} already holds a finished run ({finished}); choose "
                               "another --out or pass --force to overwrite it")
        if checkpoint_dirs(out) and not resume:  # its checkpoints identify it when resumed
            raise AutopmfError(f"{out} holds an interrupted run ({CHECKPOINTS}/); pass "
                               "--resume to continue it, --force to start over, or choose "
                               "another --out")
        return RunClaim(out, identity, replace=False)
    try:
        previous = yaml.safe_load(config.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError):
        previous = {}
    named = [k for k in optional_keys if k not in identity]
    if (not isinstance(previous, dict) or {k: previous.get(k) for k in identity} != identity
            or any(k in previous for k in named)):
        raise AutopmfError(f"{out} holds a different {what} (other space, data, seed or "
                           "settings); choose another --out, or --force to replace it")
    if not resume:
        raise AutopmfError(f"{out} already holds this {what}; pass --resume to continue it "
                           "(or --force to start over)")
    return RunClaim(out, identity, replace=False)


def run_files_in(out: Path) -> list[str]:
    """The run files (RUN_FILES, checkpoints) present in `out`, relative to it."""
    found = [name for name in RUN_FILES if (out / name).is_file()]
    return found + [f"{CHECKPOINTS}/{p.name}" for p in checkpoint_dirs(out)]


def written_by_autopmf(out: Path) -> bool:
    """Whether `out` holds a run autopmf wrote: a config.yaml that records autopmf's version,
    or (a folder of `autopmf supernet` from before it wrote a config) a supernet record or
    checkpoint that carries a run fingerprint."""
    if (out / CONFIG).exists():
        doc = _read_mapping(out / CONFIG, yaml.safe_load) or {}
        return isinstance(doc.get("versions"), dict) and "autopmf" in doc["versions"]
    records = [out / "supernet_metrics.json",
               *(p / "state.json" for p in checkpoint_dirs(out))]
    return any("fingerprint" in (_read_mapping(p, json.loads) or {}) for p in records)


def _read_mapping(path: Path, parse) -> dict | None:
    try:
        doc = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    return doc if isinstance(doc, dict) else None


def remove_run_files(out: Path) -> None:
    """Remove the run files in `out` (RUN_FILES and checkpoint folders), nothing else."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    remove_checkpoints(out)
    with contextlib.suppress(OSError):
        (out / PLOTS).rmdir()  # only if nothing else is left in it


# ----- one writer per run folder ---------------------------------------------------------
_held: dict[Path, int] = {}  # run folder -> how deeply this process holds its lock


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold an exclusive lock on the run folder `out` (created if missing) while the block
    runs, so that a second process writing there stops with one line instead of mixing its
    files with this one's. It is an flock: the kernel drops it when its process dies, even
    by kill -9, so a lock never outlives its writer. Re-entrant within a process (a search
    trains its supernet into the same folder); under torchrun, rank 0 holds it for all."""
    if os.environ.get("RANK", "0") != "0":
        yield
        return
    out = Path(out)
    created = _make_run_folder(out)
    key = out.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    fd = _acquire_lock(out)
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        (out / LOCK).unlink(missing_ok=True)  # while still held: see _acquire_lock
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # a refused command leaves no empty folder behind


def holds_run_lock(func):
    """Decorate a function with an `out` argument to run under `run_lock(out)`."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def locked(*args, **kwargs):
        with run_lock(signature.bind(*args, **kwargs).arguments["out"]):
            return func(*args, **kwargs)
    return locked


def _make_run_folder(out: Path) -> bool:
    """Create `out` if needed (-> whether it was created); one line if it cannot be."""
    if out.is_dir():
        return False
    if out.exists():
        raise AutopmfError(f"--out {out} is a file, not a folder; choose a folder path")
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        return False  # made by someone else meanwhile: the lock decides who writes
    except OSError as exc:
        raise AutopmfError(f"cannot create --out {out} ({exc.strerror}); choose a folder "
                           "you can write to") from None
    return True


def _acquire_lock(out: Path) -> int:
    path = out / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise AutopmfError(f"cannot write to --out {out} ({exc.strerror}); choose a "
                               "folder you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = f" (pid {holder})" if holder.isdigit() else ""
            raise AutopmfError(f"{out} is in use by another autopmf process{pid}; wait for "
                               "it to finish, or choose another --out") from None
        # The holder before us removes the file before it lets go: if it did so between our
        # open and our lock, this lock guards a file no one else will open; take a new one.
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def write_run_config(out: Path, identity: dict, **extra) -> None:
    """config.yaml: the run's identity, then `extra` and the package versions."""
    from autopmf.files import atomic_write_text

    doc = {**identity, **extra, "versions": package_versions()}
    atomic_write_text(Path(out) / CONFIG, yaml.safe_dump(doc, sort_keys=False))
