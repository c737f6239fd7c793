"""The memory profile of one training setting: what the estimator composes, and its cache.

A PMF training step is a chain: the no-grad prefix (embeddings and every layer below the first
fused slot), one *unit* per slot from the first fused slot up (fused or plain), the heads and
the loss; then the backward pass through the same units top down, then AdamW. All slots of an
encoder pair have the same shapes, so a unit's memory behaviour depends only on its kind (plain,
fused with given prompt lengths, the first fused slot) — not on where it sits. A profile holds,
per unit kind (measured by simulation, profiling.py):

* forward / backward `Segment`: the peak rise above the level at the segment's start, and the
  net change at its end (saved activations, parameter gradients, the input gradient it passes
  down, minus what it frees);
* the bytes of its output streams, freed when the next unit ends unless that unit saves them;
* whether it saves its input streams for backward (then they are freed in its backward).

`estimator.py` chains these numbers per architecture. A profile is built once per (encoders,
batch, lengths, precision, device kind, number of classes, prompt choices) and cached as JSON.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import torch

from autopmf.errors import AutopmfError
from autopmf.space import SearchSpace
from supernet.config import SlotConfig

PROFILE_VERSION = 2  # 2: the top slot computes only the rows the heads read
DEVICE_KINDS = ("cpu", "cuda")
# The code that decides what a training step allocates is the profile builder and everything it
# imports from these packages (`model_code`): a profile built by other code is stale.
PROFILE_BUILDER = "autopmf.memory.profiling"
PROJECT_PACKAGES = ("autopmf", "supernet")


@dataclass(frozen=True)
class Segment:
    peak: int  # highest rise above the level at the segment's start
    delta: int  # net change of the level at its end


@dataclass(frozen=True)
class UnitCost:
    forward: Segment
    backward: Segment
    out_text: int  # bytes released when its output text stream is dropped
    out_image: int
    saves_text: bool  # keeps its input text stream until its backward
    saves_image: bool
    params: tuple[int, ...]  # bytes of each trainable parameter it owns


@dataclass(frozen=True)
class PrefixCost:
    forward: Segment
    out_text: int
    out_image: int


@dataclass
class MemoryProfile:
    key: dict  # what the profile was built for (see `profile_key`)
    num_slots: int
    mapping_hidden: int  # default mapping hidden size of these encoders
    static: int  # frozen weights and buffers, and the input batch
    granule: int  # allocation granule of the device kind
    runtime: int  # bytes the device runtime holds through the step (cuBLAS workspaces)
    optimizer: str  # "single" (CPU AdamW) or "foreach" (CUDA AdamW)
    prefix: dict[int, PrefixCost]  # by first fused slot (num_slots: nothing fused)
    plain: UnitCost  # a slot that does not fuse, above the first fused one
    fused: dict[str, UnitCost]  # by slot-config key: a fused slot above the first
    first_fused: dict[str, UnitCost]  # the first fused slot (its input carries no grad)
    # The same three kinds at the top slot, which computes only the rows the heads read.
    top_plain: UnitCost
    top_fused: dict[str, UnitCost]
    top_first_fused: dict[str, UnitCost]
    heads: UnitCost  # heads and loss over the top slot's outputs (they carry grad)
    heads_only: UnitCost  # ... over streams that do not (nothing fused)
    full_finetune: int  # peak of a step that trains every weight (no prompts)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "MemoryProfile":
        def unit(d):
            return UnitCost(Segment(**d["forward"]), Segment(**d["backward"]), d["out_text"],
                            d["out_image"], d["saves_text"], d["saves_image"], tuple(d["params"]))

        def prefix(d):
            return PrefixCost(Segment(**d["forward"]), d["out_text"], d["out_image"])

        return cls(
            key=data["key"], num_slots=data["num_slots"],
            mapping_hidden=data["mapping_hidden"], static=data["static"],
            granule=data["granule"], runtime=data["runtime"], optimizer=data["optimizer"],
            prefix={int(s): prefix(p) for s, p in data["prefix"].items()},
            plain=unit(data["plain"]),
            fused={k: unit(u) for k, u in data["fused"].items()},
            first_fused={k: unit(u) for k, u in data["first_fused"].items()},
            top_plain=unit(data["top_plain"]),
            top_fused={k: unit(u) for k, u in data["top_fused"].items()},
            top_first_fused={k: unit(u) for k, u in data["top_first_fused"].items()},
            heads=unit(data["heads"]), heads_only=unit(data["heads_only"]),
            full_finetune=data["full_finetune"])


def config_key(cfg: SlotConfig) -> str:
    return f"{cfg.query_len},{cfg.query_context_len},{cfg.fusion_context_len},{cfg.mapping_hidden}"


def slot_configs_of_space(space: SearchSpace, mapping_hidden: int) -> list[SlotConfig]:
    """Every distinct fused-slot config an architecture of `space` can have."""
    if space.prompt_mode == "shared":
        lengths = [(m, m, m) for m in space.prompt_lengths if m > 0]
    else:
        lengths = [(q, c, f) for q in space.prompt_lengths if q > 0
                   for c in space.prompt_lengths for f in space.prompt_lengths]
    hiddens = space.mapping_hidden or (mapping_hidden,)
    return [SlotConfig(q, c, f, h) for q, c, f in lengths for h in hiddens]


def profile_key(space: SearchSpace, device: str, num_classes: int) -> dict:
    if device not in DEVICE_KINDS:
        raise AutopmfError(f"memory: device kind {device!r} must be one of {DEVICE_KINDS}")
    return {"version": PROFILE_VERSION, "text_encoder": space.text_encoder,
            "image_encoder": space.image_encoder, "batch_size": space.batch_size,
            "max_text_len": space.max_text_len, "image_size": space.image_size,
            "precision": space.precision, "device": device, "num_classes": num_classes,
            "prompt_lengths": list(space.prompt_lengths), "prompt_mode": space.prompt_mode,
            "mapping_hidden": list(space.mapping_hidden),
            "torch": torch.__version__, "transformers": version("transformers"),
            "timm": version("timm"), "code": code_fingerprint()}


def code_fingerprint() -> str:
    digest = hashlib.sha256()
    for name in model_code():
        digest.update(_source(name).read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def model_code() -> tuple[str, ...]:
    """The modules of this project that `PROFILE_BUILDER` imports, directly or through each
    other (imports inside functions count; those under `if TYPE_CHECKING:` never run and do
    not), sorted by name. Derived from the source, so a new or renamed module is never missed."""
    found: set[str] = set()
    todo = [PROFILE_BUILDER]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        tree = ast.parse(_source(name).read_bytes())
        todo.extend(_project_imports(tree))
    return tuple(sorted(found))


def _source(module: str) -> Path | None:
    """The file of one of this project's modules (None: not a module), found without
    importing it: both packages sit side by side, here or in site-packages."""
    path = Path(__file__).resolve().parents[2].joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _project_imports(tree: ast.AST) -> list[str]:
    def is_type_checking(node: ast.AST) -> bool:
        test = getattr(node, "test", None)
        return isinstance(node, ast.If) and (
            isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
            or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")

    def ours(name: str) -> bool:
        return name.split(".")[0] in PROJECT_PACKAGES

    out: list[str] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if ours(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and ours(node.module or ""):
            # `from package import module` imports the module; `from module import name` not.
            submodules = [f"{node.module}.{a.name}" for a in node.names
                          if _source(f"{node.module}.{a.name}") is not None]
            out += submodules or [node.module]
        stack.extend(ast.iter_child_nodes(node))
    return out


def cache_path(key: dict) -> Path:
    from autopmf.encoders.packaged import cache_root

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / "memory" / f"{digest}.json"


def read_cached(key: dict) -> MemoryProfile | None:
    path = cache_path(key)
    try:
        data = json.loads(path.read_text())
        return MemoryProfile.from_json(data) if data.get("key") == key else None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, unreadable or from another layout: the caller rebuilds it


def write_cached(profile: MemoryProfile) -> None:
    from autopmf.files import atomic_write_json

    atomic_write_json(cache_path(profile.key), profile.to_json())


# ----- AdamW ---------------------------------------------------------------------------------
def optimizer_state(kind: str, param_bytes: tuple[int, ...]) -> int:
    """AdamW's state: two moments per parameter, and on the CPU path a float32 step counter
    each (the CUDA path keeps those on the host)."""
    return 2 * sum(param_bytes) + (4 * len(param_bytes) if kind == "single" else 0)


def optimizer_transient(kind: str, param_bytes: tuple[int, ...]) -> int:
    """Scratch memory of one AdamW step. CPU runs the per-parameter loop, whose largest
    temporaries are sqrt(v) and its quotient for one parameter; CUDA runs the foreach path,
    which holds sqrt(v) for all parameters at once."""
    if not param_bytes:
        return 0
    return 2 * max(param_bytes) if kind == "single" else sum(param_bytes)
