"""SNLI-VE (Xie et al. 2019): does a Flickr30k image entail, contradict or leave neutral a
hypothesis sentence? 3 classes, scored by accuracy. The image stands in for SNLI's premise.

Published layout (ROOT given as `snlive:ROOT`):
    ROOT/snli_ve_train.jsonl, ROOT/snli_ve_dev.jsonl, ROOT/snli_ve_test.jsonl
        (or under ROOT/data/, where necla-ml/SNLI-VE's generator writes them); each line has
        "Flickr30K_ID" (older releases: "Flikr30kID", "<id>.jpg"), "sentence2" (the
        hypothesis) and "gold_label"
    ROOT/flickr30k_images/<id>.jpg   (or images=PATH for a Flickr30k image folder elsewhere)
"""

from __future__ import annotations

from pathlib import Path

from autopmf.data.disk import (COMMON_OPTIONS, DEFAULT_IMAGE_SIZE, BadExamples, Example,
                               LabelList, build_dataset, data_folder, read_jsonl,
                               require, usable_text)
from autopmf.data.types import Dataset
from autopmf.errors import AutopmfError

OPTIONS = ("root", "images") + COMMON_OPTIONS
LAYOUT = ("ROOT/snli_ve_{train,dev,test}.jsonl (or ROOT/data/...) and "
          "ROOT/flickr30k_images/<id>.jpg")
LABELS = ("entailment", "neutral", "contradiction")
SPLITS = {"train": "train", "val": "dev", "test": "test"}
IMAGE_KEYS = ("Flickr30K_ID", "Flikr30kID")


def _annotations(base: Path, split: str) -> Path:
    for folder in (base, base / "data"):
        if (folder / f"snli_ve_{split}.jsonl").exists():
            return folder / f"snli_ve_{split}.jsonl"
    return require(base / f"snli_ve_{split}.jsonl", "split file", "snlive", LAYOUT)


def _read(path: Path, images: Path, labels: LabelList, bad: BadExamples) -> list[Example]:
    examples = []
    for lineno, record in read_jsonl(path):
        where = f"{path}:{lineno}"
        image_id = next((str(record[k]) for k in IMAGE_KEYS if record.get(k)), None)
        if image_id is None:
            raise AutopmfError(f"{where}: no Flickr30K_ID; is this an SNLI-VE file?")
        label = labels.id(str(record.get("gold_label")), where)
        hypothesis = usable_text(record.get("sentence2"), where, bad)
        if hypothesis is None:
            continue
        file_name = image_id if image_id.endswith(".jpg") else f"{image_id}.jpg"
        examples.append(Example(images / file_name, hypothesis, (label,), where))
    return examples


def load(seed: int = 0, root: str | None = None, images: str | None = None,
         image_size: int = DEFAULT_IMAGE_SIZE, image_fraction: float = 1.0, strict: int = 0,
         unescape: int = 1) -> Dataset:
    base = data_folder(root, "snlive", LAYOUT)
    image_dir = require(Path(images) if images else base / "flickr30k_images",
                        "Flickr30k image folder", "snlive", LAYOUT + " (or images=PATH)")
    labels = LabelList(LABELS, "SNLI-VE's 3 labels")
    examples, bad = {}, {}
    for split, published in SPLITS.items():
        bad[split] = BadExamples("snlive", split, bool(strict))
        examples[split] = _read(_annotations(base, published), image_dir, labels, bad[split])
    return build_dataset("snlive", examples, labels, bad, multilabel=False, metric="accuracy",
                         seed=seed, image_size=image_size, image_fraction=image_fraction,
                         unescape=unescape)
