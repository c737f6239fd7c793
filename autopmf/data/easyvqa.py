"""easy-VQA (PyPI `easy-vqa`, MIT): 64x64 shape images, questions, 13 answers as classes.

The package's test split is the test; val is carved out of train by image.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from autopmf.data.disk import read_utf8
from autopmf.data.types import Dataset, Split
from autopmf.errors import AutopmfError

INSTALL_HINT = "pip install --no-deps easy-vqa"
# Options a spec may set, e.g. "easyvqa:max_questions_per_image=3" or "easyvqa:/path/to/data".
OPTIONS = ("root", "val_fraction", "max_questions_per_image", "image_fraction")


def package_data_root() -> Path:
    """The data folder shipped inside the installed easy-vqa package (found without importing)."""
    spec = importlib.util.find_spec("easy_vqa")
    if spec is None or spec.origin is None:
        raise AutopmfError(f"easy-VQA data not found: {INSTALL_HINT}")
    return Path(spec.origin).parent / "data"


def _read_questions(split_dir: Path) -> list[tuple[str, str, int]]:
    """[(question, answer, image id)] in file order; text that is not UTF-8 or an empty
    question is an error naming the file."""
    path = split_dir / "questions.json"
    rows = json.loads(read_utf8(path))
    questions = [(text, answer, int(image_id)) for text, answer, image_id in rows]
    empty = next((i for i, (text, _, _) in enumerate(questions) if not text.strip()), None)
    if empty is not None:
        raise AutopmfError(f"{path}: question {empty} is empty; give it a text or remove it")
    return questions


def _read_images(split_dir: Path, image_ids: list[int]) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:
        raise AutopmfError("easy-VQA images need Pillow: pip install pillow") from None
    images = np.empty((len(image_ids), 64, 64, 3), dtype=np.uint8)
    for row, image_id in enumerate(image_ids):
        path = split_dir / "images" / f"{image_id}.png"
        try:
            with Image.open(path) as image:
                images[row] = np.asarray(image.convert("RGB"))
        except (OSError, SyntaxError, ValueError) as exc:  # PIL's ways to fail on a bad file
            raise AutopmfError(f"{path}: cannot read this image ({exc.__class__.__name__}); "
                               "replace it with a 64x64 PNG") from None
    return images


def _make_split(
    split_dir: Path,
    questions: list[tuple[str, str, int]],
    image_ids: list[int],
    label_of: dict[str, int],
) -> Split:
    """The split holding `image_ids` and those of `questions` that ask about them."""
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    kept = [q for q in questions if q[2] in row_of]
    return Split(
        images=_read_images(split_dir, image_ids),
        image_index=np.array([row_of[image_id] for _, _, image_id in kept], dtype=np.int64),
        texts=[text for text, _, _ in kept],
        labels=np.array([label_of[answer] for _, answer, _ in kept], dtype=np.int64),
    )


def _subsample_questions(
    questions: list[tuple[str, str, int]], limit: int, rng: np.random.Generator
) -> list[tuple[str, str, int]]:
    """At most `limit` questions per image, picked at random, file order kept."""
    order = rng.permutation(len(questions))
    count: dict[int, int] = {}
    keep = np.zeros(len(questions), dtype=bool)
    for i in order:
        image_id = questions[i][2]
        if count.get(image_id, 0) < limit:
            count[image_id] = count.get(image_id, 0) + 1
            keep[i] = True
    return [q for q, k in zip(questions, keep) if k]


def load(
    seed: int = 0,
    root: str | None = None,
    val_fraction: float = 0.1,
    max_questions_per_image: int | None = None,
    image_fraction: float = 1.0,
) -> Dataset:
    """easy-VQA as a Dataset.

    root: a folder laid out like the package's data/ (answers.txt, train/, test/); default the
    installed package. val_fraction: share of train images held out as val. The last two
    shrink every split, for quick runs: max_questions_per_image caps questions per image,
    image_fraction keeps that share of each split's images (both random by seed).
    """
    data_root = Path(root) if root is not None else package_data_root()
    if not (data_root / "answers.txt").is_file():
        raise AutopmfError(
            f"easy-VQA data not found under {data_root} (expected answers.txt, train/, test/): "
            f"{INSTALL_HINT}, or point easyvqa:<path> at such a folder"
        )
    if not 0 < val_fraction < 1:
        raise AutopmfError(f"easyvqa: val_fraction must be in (0, 1), got {val_fraction}")
    if not 0 < image_fraction <= 1:
        raise AutopmfError(f"easyvqa: image_fraction must be in (0, 1], got {image_fraction}")
    if max_questions_per_image is not None and (
        not isinstance(max_questions_per_image, int) or max_questions_per_image < 1
    ):
        raise AutopmfError(
            f"easyvqa: max_questions_per_image must be an integer >= 1, got "
            f"{max_questions_per_image}"
        )

    rng = np.random.default_rng(seed)
    answers = read_utf8(data_root / "answers.txt").splitlines()
    label_names = sorted(line.strip() for line in answers if line.strip())
    label_of = {answer: label for label, answer in enumerate(label_names)}

    def image_subset(ids: list[int]) -> list[int]:
        keep = max(1, round(image_fraction * len(ids)))
        return sorted(rng.permutation(ids)[:keep].tolist())

    splits = {}
    for package_split in ("train", "test"):
        split_dir = data_root / package_split
        questions = _read_questions(split_dir)
        if max_questions_per_image is not None:
            questions = _subsample_questions(questions, max_questions_per_image, rng)
        image_ids = sorted({image_id for _, _, image_id in questions})
        if package_split == "test":
            splits["test"] = _make_split(split_dir, questions, image_subset(image_ids), label_of)
            continue
        shuffled = rng.permutation(image_ids).tolist()
        n_val = round(val_fraction * len(shuffled))
        for name, ids in (("val", shuffled[:n_val]), ("train", shuffled[n_val:])):
            splits[name] = _make_split(split_dir, questions, image_subset(ids), label_of)

    return Dataset(name="easyvqa", label_names=label_names, **splits)
