"""Search spaces and architectures.

A search space (one YAML file) names the two encoders, the slots that may fuse, the choices per
slot, and the training setting (batch size, sequence lengths, precision) that a memory budget
refers to. An architecture is a plain ``dict`` of choice name -> value (``fusion_3: 1``,
``prompt_3: 4``, ...) that round-trips through YAML; `SearchSpace.slot_configs` decodes it into
one `SlotConfig` per fused slot for the model.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from autopmf.errors import AutopmfError
# The model's own vocabulary, re-exported here for callers that import it from the space.
from supernet.config import Architecture, SlotConfig

PRECISIONS = ("fp32", "bf16", "fp16")
PROMPT_MODES = ("shared", "split")


@dataclass(frozen=True)
class SearchSpace:
    """A search space; it is the `supernet.config.SubnetSpace` that the model side reads."""

    name: str
    text_encoder: str
    image_encoder: str
    fusable_slots: tuple[int, ...]
    prompt_lengths: tuple[int, ...]
    prompt_mode: str = "shared"  # "split": separate QP / QCP / FCP lengths per slot
    mapping_hidden: tuple[int, ...] = ()  # empty: fixed at max(d_text, d_image) // 2
    batch_size: int = 32
    image_size: int = 224
    max_text_len: int = 32
    precision: str = "fp32"
    source: str = field(default="", compare=False)  # file it was read from, for messages

    # ----- choices -----------------------------------------------------------------------
    def choices(self) -> dict[str, tuple[int, ...]]:
        """Every choice name of this space and its allowed values, in a stable order."""
        out: dict[str, tuple[int, ...]] = {}
        nonzero = tuple(m for m in self.prompt_lengths if m > 0)
        for j in self.fusable_slots:
            out[f"fusion_{j}"] = (0, 1)
            if self.prompt_mode == "shared":
                out[f"prompt_{j}"] = nonzero
            else:
                out[f"qp_{j}"] = nonzero
                out[f"qcp_{j}"] = self.prompt_lengths
                out[f"fcp_{j}"] = self.prompt_lengths
            if self.mapping_hidden:
                out[f"mapping_{j}"] = self.mapping_hidden
        return out

    def validate(self, arch: Mapping[str, Any]) -> Architecture:
        """Return `arch` as a clean dict, or raise AutopmfError saying what is wrong."""
        choices = self.choices()
        where = f"architecture for space '{self.name}'"
        unknown = sorted(set(arch) - set(choices))
        if unknown:
            raise AutopmfError(
                f"{where}: unknown choice {unknown[0]!r}; this space has {', '.join(choices)}"
                " (is the architecture from another space?)")
        missing = [k for k in choices if k not in arch]
        if missing:
            raise AutopmfError(f"{where}: missing choice {missing[0]!r}")
        clean: Architecture = {}
        for key, allowed in choices.items():
            value = arch[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise AutopmfError(f"{where}: {key}={value!r} is not an integer")
            if value not in allowed:
                hint = ""
                if key.startswith(("prompt_", "qp_")) and value == 0:
                    hint = " (a fused slot needs a prompt length > 0; set fusion to 0 instead)"
                raise AutopmfError(
                    f"{where}: {key}={value} is not one of {list(allowed)}{hint}")
            clean[key] = value
        return clean

    # ----- decoding ----------------------------------------------------------------------
    def fused_slots(self, arch: Mapping[str, int]) -> list[int]:
        return [j for j in self.fusable_slots if arch[f"fusion_{j}"]]

    def slot_configs(self, arch: Mapping[str, int], default_mapping_hidden: int
                     ) -> dict[int, SlotConfig]:
        """Decode a validated architecture into a config per *fused* slot."""
        configs = {}
        for j in self.fused_slots(arch):
            if self.prompt_mode == "shared":
                qp = qcp = fcp = arch[f"prompt_{j}"]
            else:
                qp, qcp, fcp = arch[f"qp_{j}"], arch[f"qcp_{j}"], arch[f"fcp_{j}"]
            hidden = arch[f"mapping_{j}"] if self.mapping_hidden else default_mapping_hidden
            configs[j] = SlotConfig(qp, qcp, fcp, hidden)
        return configs

    def canonical(self, arch: Mapping[str, int]) -> Architecture:
        """Same model, one spelling: choices of slots that do not fuse are set to their first
        value, so that architectures differing only there compare equal."""
        choices = self.choices()
        out = dict(arch)
        for j in self.fusable_slots:
            if not arch[f"fusion_{j}"]:
                for key in choices:
                    if key.endswith(f"_{j}") and not key.startswith("fusion_"):
                        out[key] = choices[key][0]
        return out

    # ----- named architectures -----------------------------------------------------------
    def reference_arch(self, n_fused: int, prompt_len: int) -> Architecture:
        """The PMF paper's design: the top `n_fused` fusable slots fused, one prompt length."""
        if not 0 <= n_fused <= len(self.fusable_slots):
            raise AutopmfError(f"space '{self.name}' has {len(self.fusable_slots)} fusable "
                               f"slots; cannot fuse the top {n_fused}")
        top = set(sorted(self.fusable_slots)[len(self.fusable_slots) - n_fused:])
        arch = {}
        for key, allowed in self.choices().items():
            kind, j = key.rsplit("_", 1)
            if kind == "fusion":
                arch[key] = int(int(j) in top)
            elif kind == "mapping":
                arch[key] = max(allowed)
            else:
                arch[key] = prompt_len if int(j) in top else allowed[0]
        return self.validate(arch)

    def random_arch(self, rng: random.Random) -> Architecture:
        return {key: rng.choice(allowed) for key, allowed in self.choices().items()}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        for key, value in d.items():
            if isinstance(value, tuple):
                d[key] = list(value)
        return d


# ----- loading ---------------------------------------------------------------------------
# The top-level search_spaces/ of a checkout (autopmf/search_spaces links to it), or the copy
# an install ships as package data.
_BUILTIN_DIR = (Path(__file__).resolve().parent / "search_spaces").resolve()


def builtin_spaces() -> list[str]:
    """The names of the built-in spaces (`demo`, ...)."""
    return sorted(p.stem for p in _BUILTIN_DIR.glob("*.yaml"))


def resolve_space_path(name_or_path: str | Path) -> Path:
    """A path as given, or the name of a built-in space (`demo` -> search_spaces/demo.yaml)."""
    path = Path(name_or_path)
    builtin = _BUILTIN_DIR / f"{name_or_path}.yaml"
    # A folder named like a built-in space (a run called `demo`, say) is not a space file.
    if path.exists() and not (path.is_dir() and builtin.exists()):
        return path
    if builtin.exists():
        return builtin
    raise AutopmfError(f"search space '{name_or_path}' not found: give a YAML file path or "
                       f"one of the built-in spaces {builtin_spaces()}")


def space_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> SearchSpace:
    if not isinstance(data, Mapping):
        raise AutopmfError(f"{source}: a search space must be a YAML mapping of keys to values")
    fields = {f.name: f for f in dataclasses.fields(SearchSpace) if f.name != "source"}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise AutopmfError(f"{source}: unknown key {unknown[0]!r}; "
                           f"known keys are {', '.join(fields)}")
    required = [n for n, f in fields.items()
                if f.default is dataclasses.MISSING and n not in data]
    if required:
        raise AutopmfError(f"{source}: missing key {required[0]!r}")
    kwargs = dict(data)
    for key in ("fusable_slots", "prompt_lengths", "mapping_hidden"):
        if key in kwargs:
            value = kwargs[key]
            if not isinstance(value, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
                raise AutopmfError(f"{source}: {key} must be a list of non-negative integers")
            twice = next((v for i, v in enumerate(value) if v in value[:i]), None)
            if twice is not None:  # a typo, most likely: say so rather than drop it
                raise AutopmfError(f"{source}: {key} lists {twice} twice; list each once")
            kwargs[key] = tuple(sorted(value))
    for key in ("batch_size", "image_size", "max_text_len"):
        if key in kwargs and (not isinstance(kwargs[key], int) or isinstance(kwargs[key], bool)
                              or kwargs[key] <= 0):
            raise AutopmfError(f"{source}: {key} must be a positive integer")
    for key in ("name", "text_encoder", "image_encoder", "precision", "prompt_mode"):
        if key in kwargs and not (isinstance(kwargs[key], str) and kwargs[key].strip()):
            raise AutopmfError(f"{source}: {key} must be a non-empty string, not "
                               f"{kwargs[key]!r}")
    space = SearchSpace(**kwargs, source=source)
    if space.precision not in PRECISIONS:
        raise AutopmfError(f"{source}: precision {space.precision!r} must be one of {PRECISIONS}")
    if space.prompt_mode not in PROMPT_MODES:
        raise AutopmfError(
            f"{source}: prompt_mode {space.prompt_mode!r} must be one of {PROMPT_MODES}")
    if not space.fusable_slots:
        raise AutopmfError(f"{source}: fusable_slots is empty; list at least one slot")
    if not any(m > 0 for m in space.prompt_lengths):
        raise AutopmfError(f"{source}: prompt_lengths needs at least one length > 0")
    if 0 in space.mapping_hidden:
        raise AutopmfError(f"{source}: mapping_hidden sizes must be > 0")
    return space


def anchor_relative_path(spec: Any, folder: Path) -> Any:
    """An encoder spec with a relative path (`./bert`, `../vit`, `timm:NAME@./w.safetensors`)
    made absolute against `folder`, the space file's own: the space is copied into every run
    and architecture file, which must not depend on the directory a command ran from."""
    if not isinstance(spec, str):
        return spec
    head, sep, path = spec.rpartition("@") if spec.startswith("timm:") else ("", "", spec)
    if not path.startswith(("./", "../")):
        return spec
    return head + sep + str((folder / path).resolve())


def load_space(name_or_path: str | Path) -> SearchSpace:
    path = resolve_space_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise AutopmfError(f"{path}: not valid YAML ({first}); fix the file") from None
    except OSError as exc:  # a folder, or no permission
        raise AutopmfError(f"cannot read search space {path} ({exc.strerror}); give a YAML "
                           "file") from None
    if isinstance(data, dict):
        for key in ("text_encoder", "image_encoder"):
            if key in data:
                data[key] = anchor_relative_path(data[key], path.parent)
    return space_from_dict(data, source=str(path))


def save_arch(path: Path, space: SearchSpace, arch: Mapping[str, int], **extra: Any) -> None:
    """Write an architecture YAML that `autopmf train/retrain --arch` reads back."""
    from autopmf.files import atomic_write_text  # local: keeps this module dependency-free

    # The space is embedded, not referenced: the file stays valid wherever it is moved to and
    # whatever later happens to the space file it came from.
    doc = {"arch": dict(arch), **extra, "space": space.to_dict()}
    atomic_write_text(path, yaml.safe_dump(doc, sort_keys=False))


def load_arch(path: str | Path, space: SearchSpace | None = None
              ) -> tuple[SearchSpace, Architecture]:
    """Read an architecture file: either `{arch: {...}, space: {...} or a space file/name}` or
    a bare choice mapping (then `space` must be given)."""
    path = Path(path)
    if not path.exists():
        raise AutopmfError(f"architecture file {path} does not exist")
    if path.is_dir():
        raise AutopmfError(f"architecture file {path} is a folder; give a YAML file, e.g. "
                           f"{path / 'best_arch.yaml'}")
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise AutopmfError(f"{path}: not valid YAML ({first})") from None
    except OSError as exc:
        raise AutopmfError(f"cannot read architecture file {path} ({exc.strerror})") from None
    if not isinstance(doc, Mapping):
        raise AutopmfError(f"{path}: an architecture must be a YAML mapping")
    if "arch" in doc:
        if space is None:
            if "space" not in doc:
                raise AutopmfError(f"{path}: names no space; pass --space")
            if not isinstance(doc["space"], (Mapping, str)):
                raise AutopmfError(f"{path}: 'space' must be a space name, a space file or "
                                   f"the space itself (a mapping), not {doc['space']!r}")
            space = (space_from_dict(doc["space"], source=f"{path} (space)")
                     if isinstance(doc["space"], Mapping) else load_space(doc["space"]))
        arch = doc["arch"]
        if not isinstance(arch, Mapping):
            raise AutopmfError(f"{path}: 'arch' must be a mapping of choice names to values")
    else:
        if space is None:
            raise AutopmfError(f"{path}: a bare architecture needs --space")
        arch = doc
    return space, space.validate(arch)


def parse_arch_option(text: str, space_name: str | None) -> tuple[SearchSpace, Architecture]:
    """An --arch value: an architecture YAML file, or `reference:N:M` (the top N fusable slots
    fused, prompt length M; needs a space)."""
    space = load_space(space_name) if space_name else None
    if text.startswith("reference:"):
        parts = text.split(":")
        if space is None or len(parts) != 3 or not all(p.isdigit() for p in parts[1:]):
            raise AutopmfError("--arch reference:N:M needs --space and two integers, e.g. "
                               "--space demo --arch reference:2:4")
        return space, space.reference_arch(int(parts[1]), int(parts[2]))
    return load_arch(text, space)
