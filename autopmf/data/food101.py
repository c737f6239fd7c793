"""UPMC Food-101 (Wang et al. 2015): recipe web pages, their title text and image, 101 classes,
scored by accuracy.

Published layout (ROOT given as `food101:ROOT`):
    ROOT/images/train/<class>/<file>.jpg, ROOT/images/test/<class>/<file>.jpg
    ROOT/texts/train_titles.csv, ROOT/texts/test_titles.csv
CSV rows are `file name, text, class` without a header (a header row is tolerated); the text
is everything between the first and the last comma, as titles are not quoted. The label
list is the class folders under images/train. There is no published val split: val is
`val_fraction` of the train images (by seed).
"""

from __future__ import annotations

import csv
from pathlib import Path

from autopmf.data.disk import (COMMON_OPTIONS, DEFAULT_IMAGE_SIZE, ENCODING, TEXT_ERRORS,
                               BadExamples, Example, LabelList, build_dataset, data_folder,
                               require, usable_text)
from autopmf.data.types import Dataset
from autopmf.errors import AutopmfError

OPTIONS = ("root", "val_fraction") + COMMON_OPTIONS
LAYOUT = ("ROOT/images/{train,test}/<class>/<file>.jpg and "
          "ROOT/texts/{train,test}_titles.csv (rows: file name, text, class)")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def _read_titles(csv_path: Path, image_dir: Path, labels: LabelList, bad: BadExamples
                 ) -> list[Example]:
    examples = []
    with open(csv_path, encoding=ENCODING, errors=TEXT_ERRORS, newline="") as file:
        reader = csv.reader(file)
        for row in reader:
            where = f"{csv_path}:{reader.line_num}"
            if not row or not any(cell.strip() for cell in row):
                continue
            if reader.line_num == 1 and not row[0].lower().endswith(IMAGE_SUFFIXES):
                continue  # a header row
            if len(row) < 3:
                raise AutopmfError(f"{where}: expected 3 columns (file name, text, class), got "
                                   f"{len(row)}")
            # The text is everything between the first and the last comma: UPMC's titles
            # are not quoted, and some hold commas.
            file_name, text, class_name = row[0].strip(), ",".join(row[1:-1]), row[-1].strip()
            label = labels.id(class_name, where)
            text = usable_text(text, where, bad)
            if text is None:
                continue
            examples.append(Example(image_dir / class_name / file_name, text, (label,),
                                    where))
    return examples


def load(seed: int = 0, root: str | None = None, image_size: int = DEFAULT_IMAGE_SIZE,
         val_fraction: float = 0.1, image_fraction: float = 1.0, strict: int = 0,
         unescape: int = 1) -> Dataset:
    base = data_folder(root, "food101", LAYOUT)
    train_images = require(base / "images" / "train", "image folder", "food101", LAYOUT)
    classes = sorted(p.name for p in train_images.iterdir() if p.is_dir())
    labels = LabelList(classes, f"the class folders of {train_images}")
    examples, bad = {}, {}
    for split in ("train", "test"):
        titles = require(base / "texts" / f"{split}_titles.csv", "split file", "food101",
                         LAYOUT)
        image_dir = require(base / "images" / split, "image folder", "food101", LAYOUT)
        bad[split] = BadExamples("food101", split, bool(strict))
        examples[split] = _read_titles(titles, image_dir, labels, bad[split])
    return build_dataset("food101", examples, labels, bad, multilabel=False, metric="accuracy",
                         seed=seed, image_size=image_size, val_fraction=val_fraction,
                         image_fraction=image_fraction, unescape=unescape)
