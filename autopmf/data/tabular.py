"""Your own data as JSONL or CSV: one (image path, text, label) per line.

Layout (ROOT given as `jsonl:ROOT` or `csv:ROOT`):
    ROOT/train.jsonl, ROOT/test.jsonl, optional ROOT/val.jsonl (or dev.jsonl)
    ROOT/labels.txt   optional: the label list, one name per line (default: train's labels)
JSONL lines: {"image": "images/1.jpg", "text": "...", "label": "cat"} ("img" for "image"
also, as in MMBT's files); multi-label
(`multilabel=1`): "label": ["comedy", "drama"]. CSV: a header row with image,text,label;
multi-label labels are joined by "|". Image paths are relative to ROOT (or absolute).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from autopmf.data.disk import (COMMON_OPTIONS, DEFAULT_IMAGE_SIZE, ENCODING, TEXT_ERRORS,
                               BadExamples, Example, LabelList, build_dataset, data_folder,
                               read_jsonl, read_utf8, require, usable_text)
from autopmf.data.types import Dataset
from autopmf.errors import AutopmfError

OPTIONS = ("root", "multilabel", "val_fraction") + COMMON_OPTIONS
FIELDS = ("image", "text", "label")
IMAGE_KEYS = ("image", "img")  # "img": MMBT's Food-101 and MM-IMDB JSONL files


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    for lineno, record in read_jsonl(path):
        yield f"{path}:{lineno}", record


def _csv_rows(path: Path) -> Iterator[tuple[str, dict]]:
    with open(path, encoding=ENCODING, errors=TEXT_ERRORS, newline="") as file:
        reader = csv.DictReader(file)
        found = reader.fieldnames or []
        missing = [f for f in FIELDS if f not in found
                   and not (f == "image" and any(k in found for k in IMAGE_KEYS))]
        if missing:
            raise AutopmfError(f"{path}:1: the header has no {missing[0]!r} column (found: "
                               f"{','.join(found) or 'none'}); the first row must name the "
                               "columns image,text,label")
        for row in reader:
            yield f"{path}:{reader.line_num}", row


def _label_names(value, multilabel: bool, where: str) -> list[str]:
    """The label names of one row: a list (JSONL) or "a|b" (CSV) when multi-label."""
    if isinstance(value, list):
        if not multilabel:
            raise AutopmfError(f"{where}: the label is a list; pass multilabel=1 for "
                               "multi-label data")
        return [str(v) for v in value]
    if value is None or str(value).strip() == "":
        if multilabel:
            return []  # no label applies: a valid multi-label example
        raise AutopmfError(f"{where}: no label; every line needs image, text, label")
    text = str(value).strip()
    return [part.strip() for part in text.split("|") if part.strip()] if multilabel else [text]


def _parse(root: Path, rows: Iterator[tuple[str, dict]], multilabel: bool, bad: BadExamples
           ) -> list[tuple[Example, list[str]]]:
    """[(example without label ids yet, its label names)]."""
    parsed = []
    for where, row in rows:
        key = next((k for k in IMAGE_KEYS if row.get(k)), None)
        if key is None:
            raise AutopmfError(f"{where}: no image path (keys found: "
                               f"{', '.join(map(str, row)) or 'none'}); every line needs image "
                               "(or img), text, label")
        text = usable_text(row.get("text"), where, bad)
        if text is None:
            continue
        image = Path(str(row[key]))
        parsed.append((Example(image if image.is_absolute() else root / image, text, (),
                               where), _label_names(row.get("label"), multilabel, where)))
    return parsed


@dataclass(frozen=True)
class TableFormat:
    """`jsonl` or `csv`: the same loader, one file suffix."""

    suffix: str
    OPTIONS: tuple[str, ...] = OPTIONS

    def load(self, seed: int = 0, root: str | None = None, multilabel: int = 0,
             image_size: int = DEFAULT_IMAGE_SIZE, val_fraction: float = 0.1,
             image_fraction: float = 1.0, strict: int = 0, unescape: int = 1) -> Dataset:
        name = self.suffix
        layout = (f"{name}:ROOT with train.{name} and test.{name} (val.{name} optional) and "
                  "optionally labels.txt")
        root_dir = data_folder(root, name, layout)
        files = {"train": require(root_dir / f"train.{name}", "split file", name, layout),
                 "test": require(root_dir / f"test.{name}", "split file", name, layout)}
        for val_name in ("val", "dev"):
            if (root_dir / f"{val_name}.{name}").exists():
                files["val"] = root_dir / f"{val_name}.{name}"
                break
        read_rows = _jsonl_rows if name == "jsonl" else _csv_rows
        bad = {split: BadExamples(name, split, bool(strict)) for split in files}
        parsed = {split: _parse(root_dir, read_rows(path), bool(multilabel), bad[split])
                  for split, path in files.items()}

        label_file = root_dir / "labels.txt"
        if label_file.exists():
            names = [line.strip() for line in read_utf8(label_file).splitlines()
                     if line.strip()]
            labels = LabelList(names, str(label_file))
        else:
            seen = sorted({n for _, names in parsed["train"] for n in names})
            labels = LabelList(seen, f"the labels of {files['train']}, as there is no labels.txt")
        if len(labels.names) < 2 and not multilabel:
            raise AutopmfError(f"{name}: {labels.source} holds fewer than 2 labels; a classifier "
                               "needs at least 2")
        examples = {split: [Example(ex.image, ex.text,
                                    tuple(labels.id(n, ex.where) for n in names), ex.where)
                            for ex, names in rows]
                    for split, rows in parsed.items()}
        return build_dataset(name, examples, labels, bad, multilabel=bool(multilabel),
                             metric="f1_macro" if multilabel else "accuracy", seed=seed,
                             image_size=image_size, val_fraction=val_fraction,
                             image_fraction=image_fraction, unescape=unescape)


JSONL = TableFormat("jsonl")
CSV = TableFormat("csv")
