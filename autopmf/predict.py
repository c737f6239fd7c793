"""`autopmf predict`: classify image/text pairs with a trained (or retrained) run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from autopmf.build import build_backbone, build_pmf
from autopmf.errors import AutopmfError
from autopmf.files import load_tensors
from autopmf.layout import ARCH, METRICS, WEIGHTS
from autopmf.metrics import MULTILABEL_METRICS
from autopmf.space import load_arch


def load_image(path: str | Path) -> np.ndarray:
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow only warns between its pixel limit and twice it: refuse all of those.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise AutopmfError(f"cannot read image {path}: it claims more than "
                           f"{Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?); give "
                           "a smaller PNG or JPEG file") from None
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise AutopmfError(f"cannot read image {path}: {exc.__class__.__name__}; give a PNG "
                           "or JPEG file") from None


def predict(run: Path, images: list[np.ndarray], texts: list[str]) -> list[dict]:
    """Class probabilities for each (image, text) pair, from `run`'s arch and weights."""
    run = Path(run)
    needed = [run / n for n in (ARCH, WEIGHTS, METRICS)]
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise AutopmfError(f"{missing[0]} is missing: point --run at a finished `autopmf train` "
                           "or `autopmf retrain` directory")
    if len(images) != len(texts):
        raise AutopmfError(f"got {len(images)} images and {len(texts)} texts; give one --text "
                           "per --image")
    space, arch = load_arch(run / ARCH)
    metrics = json.loads((run / METRICS).read_text())
    label_names = metrics["label_names"]
    multilabel = metrics["metric"] in MULTILABEL_METRICS  # a set of labels per pair, not one
    backbone = build_backbone(space)
    model = build_pmf(space, arch, backbone, len(label_names))
    try:
        model.load_trainable_state_dict(load_tensors(run / WEIGHTS))
    except ValueError as exc:
        raise AutopmfError(f"{run / WEIGHTS} does not fit {run / ARCH} "
                           f"({exc}); retrain the run with --force") from None
    model.eval()
    batch = dict(backbone.text.tokenize(texts, space.max_text_len),
                 pixels=torch.cat([backbone.image.preprocess(img[None], space.image_size)
                                   for img in images]))
    with torch.no_grad():
        logits = model(batch)
    probs = logits.sigmoid() if multilabel else logits.softmax(dim=-1)
    if not torch.isfinite(probs).all():
        raise AutopmfError(f"{run / WEIGHTS} gives NaN scores (its weights are "
                           "not finite); retrain the run with --force")
    return [{"text": text,
             "label": ([n for n, v in zip(label_names, p) if v > 0.5] if multilabel
                       else label_names[int(p.argmax())]),
             "probabilities": {name: round(float(v), 4) for name, v in zip(label_names, p)}}
            for text, p in zip(texts, probs)]
