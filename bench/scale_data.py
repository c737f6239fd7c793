"""A synthetic dataset in the UPMC Food-101 layout, of any size, for bench/scale.py.

    ROOT/images/{train,test}/<class>/<class>_<i>.jpg    256 px JPEGs
    ROOT/texts/{train,test}_titles.csv                  rows: file name, title, class

101 classes and a 3:1 train/test split, as in UPMC Food-101 (67,988 / 22,716 images). Each
image is a smooth random colour field with a little noise, so a JPEG weighs about what a food
photo of that size does; titles are a few words. Deterministic by seed. A finished folder holds
`generated.json`, and asking again for the same folder, size and seed reuses it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

NUM_CLASSES = 101
IMAGE_PX = 256
TEST_FRACTION = 0.25
MARKER = "generated.json"
WORDS = ("grilled", "spicy", "homemade", "easy", "classic", "crispy", "vegan", "baked",
         "quick", "creamy", "roasted", "sweet", "best", "healthy", "slow", "cooker")


def class_names() -> list[str]:
    return [f"dish_{c:03d}" for c in range(NUM_CLASSES)]


def generate(root: str | Path, images: int, seed: int = 0) -> Path:
    """Write (or reuse) a dataset of `images` images in total at `root`."""
    root = Path(root)
    wanted = {"images": images, "seed": seed, "image_px": IMAGE_PX, "classes": NUM_CLASSES}
    marker = root / MARKER
    if marker.is_file() and json.loads(marker.read_text()) == wanted:
        return root
    if root.exists():
        shutil.rmtree(root)
    rng = np.random.default_rng(seed)
    names = class_names()
    rows: dict[str, list[list[str]]] = {"train": [], "test": []}
    for split in rows:  # every class has a folder (the label list), even with no image
        for name in names:
            (root / "images" / split / name).mkdir(parents=True, exist_ok=True)
    for i in range(images):
        name = names[i % NUM_CLASSES]
        split = "test" if rng.random() < TEST_FRACTION else "train"
        file_name = f"{name}_{i}.jpg"
        _image(rng).save(root / "images" / split / name / file_name, quality=90)
        words = " ".join(rng.choice(WORDS, size=rng.integers(2, 6)))
        rows[split].append([file_name, f"{words} {name.replace('_', ' ')} recipe", name])
    (root / "texts").mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(root / "texts" / f"{split}_titles.csv", "w", newline="",
                  encoding="utf-8") as f:
            csv.writer(f).writerows(split_rows)
    marker.write_text(json.dumps(wanted))  # last: marks the folder as complete
    return root


def _image(rng: np.random.Generator) -> Image.Image:
    coarse = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((IMAGE_PX, IMAGE_PX), Image.BICUBIC))
    noise = rng.integers(-12, 13, size=smooth.shape)
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))


def count_images(root: str | Path) -> int:
    return sum(1 for _ in Path(root).glob("images/*/*/*.jpg"))
