"""What every on-disk dataset loader shares: checked paths, label lists, bad-example handling,
image decoding, splitting and subsampling.

A loader parses its published layout into `Example`s (image path, text, label ids, and where
it came from) and hands them to `build_dataset`. Each distinct image is checked once (its
header) at load and decoded only when a batch needs it (images.py: resized so its shorter
side is `image_size` and centre-cropped to a square, what ViT-style encoders eat): memory
does not grow with the number of images.
"""

from __future__ import annotations

import html
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from autopmf.data.images import IMAGE_ERRORS, ImageFiles, check_image
from autopmf.data.types import Dataset, Split
from autopmf.errors import AutopmfError

# Options every on-disk loader accepts (beyond its root; those without a published val split
# add val_fraction).
COMMON_OPTIONS = ("image_size", "image_fraction", "strict", "unescape")
DEFAULT_IMAGE_SIZE = 224  # ViT-B/16's input; smaller spaces may load smaller to save memory

# Text files are read with errors="surrogateescape": a byte that is not UTF-8 becomes a lone
# surrogate U+DC80..U+DCFF, which decoded UTF-8 never holds. Its example is then skipped and
# counted (one bad byte must not stop a large dataset) instead of being trained on as garbage.
TEXT_ERRORS = "surrogateescape"
# "utf-8-sig": a byte-order mark at the start of a file (as Windows tools write) is dropped,
# instead of becoming part of the first row's image path or JSON.
ENCODING = "utf-8-sig"
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
NOT_UTF8 = "text not UTF-8"


@dataclass(frozen=True)
class Example:
    image: Path
    text: str
    labels: tuple[int, ...]  # one class id, or any number of them (multi-label)
    where: str  # "file:line", for messages


def require(path: Path, what: str, dataset: str, layout: str) -> Path:
    """`path` if it exists, else an error naming the expected path and layout."""
    if not path.exists():
        raise AutopmfError(f"{dataset}: {what} {path} not found; expected {layout} "
                           f"(see README, Datasets)")
    return path


def data_folder(root: str | None, dataset: str, layout: str) -> Path:
    """The ROOT of a `dataset:ROOT` spec, checked to exist."""
    if root is None:
        raise AutopmfError(f"{dataset}: give the data folder, e.g. --data "
                           f"{dataset}:/datasets/{dataset}")
    return require(Path(root), "data folder", dataset, layout)


def read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a bad line is an error naming it."""
    with open(path, encoding=ENCODING, errors=TEXT_ERRORS) as file:
        for lineno, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise AutopmfError(f"{path}:{lineno}: not valid JSON ({exc.msg}); fix or "
                                   "remove that line") from None
            if not isinstance(record, dict):
                raise AutopmfError(f"{path}:{lineno}: expected a JSON object per line")
            yield lineno, record


class LabelList:
    """Label names -> class ids; an unknown name is an error naming where it was read."""

    def __init__(self, names: Sequence[str], source: str):
        self.names = list(names)
        self.source = source
        self._id = {name: i for i, name in enumerate(self.names)}

    def id(self, name: str, where: str) -> int:
        if name not in self._id:
            shown = ", ".join(self.names[:8]) + (", ..." if len(self.names) > 8 else "")
            raise AutopmfError(f"{where}: label {name!r} is not in the label list ({self.source}: "
                               f"{shown}); fix the label or add it to the list")
        return self._id[name]


class BadExamples:
    """Examples of one split that cannot be used (unreadable image, missing text): counted and
    reported in one warning, or the first one is an error under `strict`."""

    def __init__(self, dataset: str, split: str, strict: bool):
        self.dataset, self.split, self.strict = dataset, split, strict
        self.counts: Counter[str] = Counter()
        self.first = ""
        self.first_missing = ""  # the first image path that does not exist, and its file:line

    def skip(self, where: str, kind: str, detail: str = "") -> None:
        """One bad example: `kind` ("missing text", ...) is what the warning counts."""
        problem = f"{kind} ({detail})" if detail else kind
        if self.strict:
            raise AutopmfError(f"{where}: {problem}; fix or remove it, or load without strict "
                               "to skip such examples with a warning")
        self.counts[kind] += 1
        self.first = self.first or f"{where}: {problem}"

    def warn(self, kept: int) -> None:
        if not self.counts:
            return
        skipped = sum(self.counts.values())
        kinds = ", ".join(f"{kind}: {n}" for kind, n in self.counts.most_common())
        print(f"autopmf: warning: {self.dataset} {self.split}: skipped {skipped} of "
              f"{skipped + kept} examples ({kinds}); first: {self.first}", file=sys.stderr)


def read_utf8(path: Path) -> str:
    """A whole file that must be UTF-8 (a label list, a split file): anything else is an
    error naming the file and the first bad byte."""
    try:
        return path.read_text(encoding=ENCODING)
    except UnicodeDecodeError as exc:
        raise AutopmfError(f"{path}: not UTF-8 text (bad byte at offset {exc.start}); re-save "
                           "it as UTF-8") from None


def usable_text(text, where: str, bad: BadExamples) -> str | None:
    """`text` stripped, or None (counted in `bad`) when it is missing, blank, or held bytes
    that are not UTF-8."""
    if not isinstance(text, str) or not text.strip():
        bad.skip(where, "missing text")
        return None
    if _NOT_UTF8.search(text):
        bad.skip(where, NOT_UTF8, "re-save the file as UTF-8")
        return None
    return text.strip()


def _build_split(examples: list[Example], num_classes: int, multilabel: bool,
                 image_size: int, bad: BadExamples) -> Split:
    """Check each distinct image once (its header, not its pixels: they are decoded per
    batch, see images.py); drop the examples whose image cannot be opened."""
    from PIL import Image

    row_of: dict[Path, int | None] = {}
    paths = []
    for ex in examples:
        if ex.image in row_of:
            continue
        try:
            check_image(ex.image)
            paths.append(ex.image)
            row_of[ex.image] = len(paths) - 1
        except (*IMAGE_ERRORS, Image.DecompressionBombError) as exc:
            row_of[ex.image] = None
            reason = "missing image" if not ex.image.exists() else "unreadable image"
            bad.skip(ex.where, reason, f"{ex.image}: {exc.__class__.__name__}")
            if reason == "missing image" and not bad.first_missing:
                bad.first_missing = f"{ex.image} (from {ex.where})"
    kept = [ex for ex in examples if row_of[ex.image] is not None]
    if multilabel:
        labels = np.zeros((len(kept), num_classes), dtype=np.float32)
        for row, ex in enumerate(kept):
            labels[row, list(ex.labels)] = 1.0
    else:
        labels = np.array([ex.labels[0] for ex in kept], dtype=np.int64)
    return Split(images=ImageFiles(paths, image_size),
                 image_index=np.array([row_of[ex.image] for ex in kept], dtype=np.int64),
                 texts=[ex.text for ex in kept], labels=labels)


def split_by_image(examples: list[Example], fraction: float, rng: np.random.Generator
                   ) -> tuple[list[Example], list[Example]]:
    """(the examples of a random `fraction` of the images, the rest), file order kept: examples
    sharing an image never end up on both sides."""
    images = list(dict.fromkeys(ex.image for ex in examples))  # distinct, in file order
    picked = {images[i] for i in rng.permutation(len(images))[:round(fraction * len(images))]}
    return ([ex for ex in examples if ex.image in picked],
            [ex for ex in examples if ex.image not in picked])


def _split_counts(splits: dict[str, Split], bad: dict[str, BadExamples]) -> str:
    """"train+val: 12 found, 12 skipped (missing image: 12), 0 kept; test: ..." for an error
    line; val and train share one count when val was cut from train."""
    parts = []
    for report in {id(b): b for b in bad.values()}.values():
        names = [k for k in splits if bad[k] is report]
        kept = sum(len(splits[k]) for k in names)
        skipped = sum(report.counts.values())
        kinds = ", ".join(f"{kind}: {n}" for kind, n in report.counts.most_common())
        parts.append(f"{'+'.join(names)}: {kept + skipped} found, {skipped} skipped"
                     + (f" ({kinds})" if kinds else "") + f", {kept} kept")
    return "; ".join(parts)


def _first_problem(reports) -> str:
    """"; first missing image: PATH (from file:line)", else the first skipped example."""
    missing = next((r.first_missing for r in reports if r.first_missing), "")
    if missing:
        return f"; first missing image: {missing}"
    first = next((r.first for r in reports if r.first), "")
    return f"; first skipped: {first}" if first else ""


def build_dataset(name: str, examples: dict[str, list[Example]], labels: LabelList,
                  bad: dict[str, BadExamples], *, multilabel: bool, metric: str, seed: int,
                  image_size: int, image_fraction: float, val_fraction: float = 0.1,
                  unescape: int = 1) -> Dataset:
    """The Dataset of parsed examples. Without a "val" entry, val is `val_fraction` of the
    train images (by seed); `image_fraction` < 1 keeps that share of every split's images;
    `unescape` (the default) turns HTML entities in the texts (&amp;, &#8217;, as Food-101's
    titles hold) into the characters they stand for, 0 keeps the texts as written."""
    if not 0 < val_fraction < 1:
        raise AutopmfError(f"{name}: val_fraction must be in (0, 1), got {val_fraction}")
    if not 0 < image_fraction <= 1:
        raise AutopmfError(f"{name}: image_fraction must be in (0, 1], got {image_fraction}")
    if not isinstance(image_size, int) or image_size < 8:
        raise AutopmfError(f"{name}: image_size must be an integer >= 8, got {image_size}")
    if unescape not in (0, 1):
        raise AutopmfError(f"{name}: unescape must be 1 (HTML entities become characters) or "
                           f"0 (texts kept as written), got {unescape}")
    rng = np.random.default_rng(seed)
    examples = dict(examples)
    if unescape:
        examples = {split: [replace(ex, text=html.unescape(ex.text)) for ex in rows]
                    for split, rows in examples.items()}
    if "val" not in examples:
        examples["val"], examples["train"] = split_by_image(examples["train"], val_fraction, rng)
        bad = dict(bad, val=bad["train"])
    splits = {}
    for split in ("train", "val", "test"):
        chosen = examples[split]
        if image_fraction < 1:
            chosen = split_by_image(chosen, image_fraction, rng)[0]
        splits[split] = _build_split(chosen, len(labels.names), multilabel, image_size,
                                     bad[split])
    reports = {id(b): b for b in bad.values()}.values()
    empty = [split for split, s in splits.items() if len(s) == 0]
    if empty:
        raise AutopmfError(f"{name}: the {empty[0]} split has no usable example "
                           f"({_split_counts(splits, bad)}){_first_problem(reports)}; check the "
                           "image folder and the paths in the split files (and image_fraction)")
    for report in reports:
        report.warn(sum(len(s) for k, s in splits.items() if bad[k] is report))
    return Dataset(name=name, label_names=labels.names, metric=metric, **splits,
                   skipped=sum(sum(report.counts.values()) for report in reports))
