"""MM-IMDB (Arevalo et al. 2017): movie posters and plots, 23 genres, multi-label, scored by
F1-macro (F1-micro also reported).

Published layout (ROOT given as `mmimdb:ROOT`, the extracted `mmimdb/` folder):
    ROOT/split.json            {"train": [ids], "dev": [ids], "test": [ids]}
    ROOT/dataset/<id>.jpeg     the poster
    ROOT/dataset/<id>.json     {"plot": ["...", ...], "genres": ["Drama", ...], ...}
The text is the longest plot summary (as MMBT does). Genres outside the 23 used in the
literature (News, Adult, Talk-Show, Reality-TV: too rare) are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from autopmf.data.disk import (COMMON_OPTIONS, DEFAULT_IMAGE_SIZE, ENCODING, TEXT_ERRORS,
                               BadExamples, Example, LabelList, build_dataset, data_folder,
                               read_utf8, require, usable_text)
from autopmf.data.types import Dataset
from autopmf.errors import AutopmfError

OPTIONS = ("root",) + COMMON_OPTIONS
LAYOUT = "ROOT/split.json and ROOT/dataset/<id>.jpeg + <id>.json"
# Arevalo et al.'s 23 genres, most frequent first.
GENRES = ("Drama", "Comedy", "Romance", "Thriller", "Crime", "Action", "Adventure", "Horror",
          "Documentary", "Mystery", "Sci-Fi", "Fantasy", "Family", "Biography", "War",
          "History", "Music", "Animation", "Musical", "Western", "Sport", "Short", "Film-Noir")
SPLITS = {"train": "train", "val": "dev", "test": "test"}  # ours -> split.json's


def _movie(record_path: Path, bad: BadExamples) -> Example | None:
    """One movie, or None (counted in `bad`) when its record or plot is missing."""
    where = str(record_path)
    try:
        record = json.loads(record_path.read_text(encoding=ENCODING, errors=TEXT_ERRORS))
    except (OSError, ValueError) as exc:  # missing, not JSON
        bad.skip(where, "missing text", exc.__class__.__name__)
        return None
    plots = [p for p in record.get("plot") or [] if isinstance(p, str) and p.strip()]
    text = usable_text(max(plots, key=len) if plots else None, where, bad)
    if text is None:
        return None
    genres = tuple(GENRES.index(g) for g in record.get("genres") or [] if g in GENRES)
    return Example(record_path.with_suffix(".jpeg"), text, genres, where)


def load(seed: int = 0, root: str | None = None, image_size: int = DEFAULT_IMAGE_SIZE,
         image_fraction: float = 1.0, strict: int = 0, unescape: int = 1) -> Dataset:
    base = data_folder(root, "mmimdb", LAYOUT)
    if not (base / "split.json").exists() and (base / "mmimdb" / "split.json").exists():
        base = base / "mmimdb"  # the archive's parent folder was given
    split_file = require(base / "split.json", "split file", "mmimdb", LAYOUT)
    records = require(base / "dataset", "movie folder", "mmimdb", LAYOUT)
    try:
        ids = json.loads(read_utf8(split_file))
    except json.JSONDecodeError as exc:
        raise AutopmfError(f"{split_file}: not valid JSON ({exc.msg}); restore the published "
                           "file") from None
    missing = [name for name in SPLITS.values() if not isinstance(ids.get(name), list)]
    if missing:
        raise AutopmfError(f"{split_file} has no {missing[0]!r} list of movie ids; restore the "
                           "published file")
    examples, bad = {}, {}
    for split, published in SPLITS.items():
        bad[split] = BadExamples("mmimdb", split, bool(strict))
        names = (i if isinstance(i, str) else f"{i:07d}" for i in ids[published])  # 7-digit ids
        movies = (_movie(records / f"{name}.json", bad[split]) for name in names)
        examples[split] = [movie for movie in movies if movie is not None]
    return build_dataset("mmimdb", examples, LabelList(GENRES, "the 23 MM-IMDB genres"), bad,
                         multilabel=True, metric="f1_macro", seed=seed, image_size=image_size,
                         image_fraction=image_fraction, unescape=unescape)
