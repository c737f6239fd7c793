"""Dataset specs: "name", "name:key=value,key=value" or "name:path".

Examples: "digits", "digits:examples_per_image=8", "digits:identity=1" (only identity
statements), "easyvqa:max_questions_per_image=3,image_fraction=0.25", "easyvqa:/data/easy-vqa".
"""

from __future__ import annotations

from types import ModuleType

from autopmf.data import digits, easyvqa
from autopmf.data.types import Dataset
from autopmf.errors import AutopmfError

# name -> module with `load(seed, **options)`, `OPTIONS`; "name:path" sets its first option.
DATASETS: dict[str, ModuleType] = {"digits": digits, "easyvqa": easyvqa}
PATH_OPTION = {"easyvqa": "root"}


def _parse_value(text: str) -> int | float | str:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_spec(spec: str) -> tuple[str, dict[str, int | float | str]]:
    """Split a spec into its dataset name and options."""
    name, _, rest = spec.strip().partition(":")
    if name not in DATASETS:
        raise AutopmfError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    options: dict[str, int | float | str] = {}
    if rest and "=" not in rest:
        if name not in PATH_OPTION:
            raise AutopmfError(
                f"dataset spec {spec!r}: {name} takes no path; use {name}:key=value,... with keys "
                f"{', '.join(DATASETS[name].OPTIONS)}"
            )
        return name, {PATH_OPTION[name]: rest}
    for item in filter(None, rest.split(",")):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or key not in DATASETS[name].OPTIONS:
            raise AutopmfError(
                f"dataset spec {spec!r}: bad option {item!r}; {name} accepts "
                f"{', '.join(k + '=...' for k in DATASETS[name].OPTIONS)}"
            )
        if key == PATH_OPTION.get(name):
            options[key] = value.strip()
            continue
        options[key] = _parse_value(value)
        if isinstance(options[key], str):  # every option but a path is a number
            raise AutopmfError(f"dataset spec {spec!r}: {key} must be a number, got {value!r}")
    return name, options


def load_dataset(spec: str = "digits", seed: int = 0) -> Dataset:
    """Load a dataset by spec; the same spec and seed always give the same Dataset."""
    name, options = parse_spec(spec)
    return DATASETS[name].load(seed=seed, **options)
