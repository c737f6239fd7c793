"""Dataset specs: "name", "name:key=value,key=value", "name:path" or "name:path,key=value".

Examples: "digits", "digits:examples_per_image=8", "digits:identity=1" (only identity
statements), "easyvqa:max_questions_per_image=3,image_fraction=0.25", "easyvqa:/data/easy-vqa",
"mmimdb:/datasets/mmimdb", "food101:/datasets/upmc,image_size=112,image_fraction=0.1",
"jsonl:/data/mine,multilabel=1". Every dataset also takes `metric=` (one of the metrics that
fit its labels, e.g. mmimdb:/datasets/mmimdb,metric=f1_micro).
"""

from __future__ import annotations

import contextlib
import dataclasses
from types import ModuleType
from typing import Iterator

from autopmf.data import digits, easyvqa, food101, mmimdb, snlive
from autopmf.data.tabular import CSV, JSONL
from autopmf.data.types import Dataset
from autopmf.errors import AutopmfError
from autopmf.metrics import METRICS, metrics_for

# name -> module with `load(seed, **options)`, `OPTIONS`; "name:path" sets its first option.
DATASETS: dict[str, ModuleType] = {"digits": digits, "easyvqa": easyvqa, "food101": food101,
                                   "mmimdb": mmimdb, "snlive": snlive, "jsonl": JSONL,
                                   "csv": CSV}
PATH_OPTION = {name: "root" for name in DATASETS if name != "digits"}
TEXT_OPTIONS = ("root", "images", "metric")  # kept as strings; every other option is a number


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
    # Every dataset takes metric= and strict= (a generated dataset has nothing to skip).
    accepted = (*DATASETS[name].OPTIONS, *(k for k in ("metric", "strict")
                                           if k not in DATASETS[name].OPTIONS))
    options: dict[str, int | float | str] = {}
    items = [item for item in rest.split(",") if item]
    if items and "=" not in items[0]:
        if name not in PATH_OPTION:
            raise AutopmfError(
                f"dataset spec {spec!r}: {name} takes no path; use {name}:key=value,... with keys "
                f"{', '.join(DATASETS[name].OPTIONS)}"
            )
        options[PATH_OPTION[name]] = items.pop(0).strip()
    for item in items:
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or key not in accepted:
            raise AutopmfError(
                f"dataset spec {spec!r}: bad option {item!r}; {name} accepts "
                f"{', '.join(k + '=...' for k in accepted)}"
            )
        if key in TEXT_OPTIONS:
            options[key] = value.strip()
            continue
        options[key] = _parse_value(value)
        if isinstance(options[key], str):  # every option but a path or name is a number
            raise AutopmfError(f"dataset spec {spec!r}: {key} must be a number, got {value!r}")
    if options.get("metric", METRICS[0]) not in METRICS:
        raise AutopmfError(f"dataset spec {spec!r}: unknown metric {options['metric']!r}; "
                           f"use one of {', '.join(METRICS)}")
    return name, options


def with_options(spec: str, **options: object) -> str:
    """`spec` with `key=value` appended for every option given (None: left out), e.g. the
    CLI's --metric and --strict; a spec records everything that shapes its data."""
    extra = [f"{key}={value}" for key, value in options.items() if value is not None]
    if not extra:
        return spec
    separator = "," if ":" in spec else ":"
    return spec + separator + ",".join(extra)


# While a command runs (`one_load_per_command`): (spec, seed, image_size) -> its Dataset.
_loaded: dict[tuple, Dataset] | None = None


@contextlib.contextmanager
def one_load_per_command() -> Iterator[None]:
    """Within this, loading a dataset again (same spec, seed and image size) returns the one
    loaded first: a command parses a dataset's index and checks its images once, however
    many of its stages load it (search, then the supernet it trains)."""
    global _loaded
    outer, _loaded = _loaded, {} if _loaded is None else _loaded
    try:
        yield
    finally:
        _loaded = outer


def load_dataset(spec: str = "digits", seed: int = 0, image_size: int | None = None
                 ) -> Dataset:
    """Load a dataset by spec; the same spec and seed always give the same Dataset.
    `image_size` (the space's) is where datasets that resize at load do so, unless the spec
    sets its own."""
    key = (spec, seed, image_size)
    if _loaded is not None and key in _loaded:
        return _loaded[key]
    dataset = _load(spec, seed, image_size)
    if _loaded is not None:
        _loaded[key] = dataset
    return dataset


def _load(spec: str, seed: int, image_size: int | None) -> Dataset:
    name, options = parse_spec(spec)
    if image_size is not None and "image_size" in DATASETS[name].OPTIONS:
        options.setdefault("image_size", image_size)
    metric = options.pop("metric", None)
    if "strict" not in DATASETS[name].OPTIONS:
        options.pop("strict", None)
    dataset = DATASETS[name].load(seed=seed, **options)
    if metric is None:
        return dataset
    allowed = metrics_for(dataset.multilabel)
    if metric not in allowed:
        kind = "multi-label" if dataset.multilabel else "single-label"
        raise AutopmfError(f"metric {metric!r} does not fit {name}'s {kind} labels; use one of "
                           f"{', '.join(allowed)}")
    return dataclasses.replace(dataset, metric=metric)
