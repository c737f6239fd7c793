"""Image transformers seen through the FrozenEncoder interface: Hugging Face ViT / DINOv2 and
timm's VisionTransformer."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import Dinov2Config, Dinov2Model

from autopmf.encoders.compat import require_layer_parts
from supernet.encoder import ImageEncoder, attend, first_tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# PIL resampling codes in Hugging Face preprocessor configs -> torch interpolate modes.
PIL_RESAMPLE = {2: "bilinear", 3: "bicubic"}
# What run_layer's row path calls in a transformers 5 ViTLayer / Dinov2Layer.
ATTENTION_PARTS = ("attention.q_proj", "attention.k_proj", "attention.v_proj",
                   "attention.o_proj", "mlp")
VIT_PARTS = ("layernorm_before", "layernorm_after") + ATTENTION_PARTS
DINOV2_PARTS = ("norm1", "norm2", "layer_scale1", "layer_scale2") + ATTENTION_PARTS


class HFVisionEncoder(ImageEncoder):
    """A frozen `transformers` ViTModel or Dinov2Model (embeddings / encoder.layer / layernorm)."""

    def __init__(self, model, name: str, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 interpolation: str = "bicubic"):
        super().__init__()
        self.model = model
        self.name = name
        cfg = model.config
        self.hidden_size = cfg.hidden_size
        self.depth = cfg.num_hidden_layers
        self.num_heads = cfg.num_attention_heads
        self.patch_size = cfg.patch_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.interpolation = interpolation
        require_layer_parts(self._layers(), DINOV2_PARTS if isinstance(model, Dinov2Model)
                            else VIT_PARTS, name)
        self.freeze()

    def embed(self, pixels: torch.Tensor) -> torch.Tensor:
        emb = self.model.embeddings
        if isinstance(self.model, Dinov2Model):
            return emb(pixels)  # DINOv2 always interpolates its position grid
        return emb(pixels, interpolate_pos_encoding=True)

    def _layers(self) -> nn.ModuleList:
        # transformers 5 keeps ViT's blocks in `model.layers`, DINOv2's in `encoder.layer`.
        layers = getattr(self.model, "layers", None)
        return layers if layers is not None else self.model.encoder.layer

    def run_layer(self, index, tokens, key_mask, rows=None):
        layer = self._layers()[index]
        if rows is None:
            return first_tensor(layer(tokens))
        # ViTLayer / Dinov2Layer on the kept rows only (pre-norm; DINOv2 adds layer scale).
        is_dinov2 = isinstance(self.model, Dinov2Model)
        norm_before = layer.norm1 if is_dinov2 else layer.layernorm_before
        norm_after = layer.norm2 if is_dinov2 else layer.layernorm_after
        scale1 = layer.layer_scale1 if is_dinov2 else nn.Identity()
        scale2 = layer.layer_scale2 if is_dinov2 else nn.Identity()
        normed, att = norm_before(tokens), layer.attention
        mixed = attend(att.q_proj(normed[:, rows]), att.k_proj(normed), att.v_proj(normed),
                       self.num_heads)
        x = tokens[:, rows] + scale1(att.o_proj(mixed))
        return x + scale2(layer.mlp(norm_after(x)))

    def cls_feature(self, tokens):
        return self.model.layernorm(tokens[:, 0])  # LayerNorm is per token: norm [CLS] only

    def num_tokens(self, image_size: int) -> int:
        return (image_size // self.patch_size) ** 2 + 1


class TimmVisionEncoder(ImageEncoder):
    """A frozen timm `VisionTransformer` (patch_embed, _pos_embed, blocks, norm)."""

    def __init__(self, model, name: str):
        super().__init__()
        self.model = model
        self.name = name
        self.hidden_size = model.embed_dim
        self.depth = len(model.blocks)
        self.num_heads = model.blocks[0].attn.num_heads
        self.patch_size = model.patch_embed.patch_size[0]
        from timm.data import resolve_data_config

        cfg = resolve_data_config(model=model)  # the weights' own normalisation and resampling
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        if cfg.get("interpolation") in ("bilinear", "bicubic"):
            self.interpolation = cfg["interpolation"]
        self.freeze()

    def embed(self, pixels):
        m = self.model
        return m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(pixels))))

    def run_layer(self, index, tokens, key_mask, rows=None):
        block = self.model.blocks[index]
        if rows is None or not _is_plain_block(block):
            out = block(tokens)
            return out if rows is None else out[:, rows]
        # timm's Block on the kept rows only; qkv is one fused projection, sliced here.
        att, normed = block.attn, block.norm1(tokens)
        q_w, k_w, v_w = att.qkv.weight.chunk(3)
        q_b, k_b, v_b = att.qkv.bias.chunk(3) if att.qkv.bias is not None else (None,) * 3
        mixed = attend(F.linear(normed[:, rows], q_w, q_b), F.linear(normed, k_w, k_b),
                       F.linear(normed, v_w, v_b), att.num_heads,
                       q_norm=att.q_norm, k_norm=att.k_norm)
        x = tokens[:, rows] + block.ls1(att.proj(att.norm(mixed)))
        return x + block.ls2(block.mlp(block.norm2(x)))

    def cls_feature(self, tokens):
        return self.model.norm(tokens[:, 0])

    def num_tokens(self, image_size: int) -> int:
        return (image_size // self.patch_size) ** 2 + self.model.num_prefix_tokens


def _is_plain_block(block) -> bool:
    """timm's standard pre-norm Block without attention gating (what the row path mirrors)."""
    from timm.models.vision_transformer import Block

    return type(block) is Block and getattr(block.attn, "gate", None) is None


def image_processor_config(path: str | Path) -> dict:
    """The model's preprocessor_config.json, from its directory or the local Hugging Face
    cache (e.g. google/vit-base-patch16-224-in21k normalises with mean = std = 0.5, not
    ImageNet's); {} when it has none."""
    from transformers.utils import cached_file

    try:
        found = cached_file(str(path), "preprocessor_config.json", local_files_only=True,
                            _raise_exceptions_for_missing_entries=False)
    except OSError:
        return {}
    return json.loads(Path(found).read_text()) if found else {}


def load_hf_vision(path: str | Path, name: str) -> HFVisionEncoder:
    """A ViT or DINOv2 directory (config.json + weights), or a model in the local HF cache;
    mean, std and resampling from its image processor config when it has one."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(path), local_files_only=True)
    cfg = image_processor_config(path)
    return HFVisionEncoder(model, name, cfg.get("image_mean", IMAGENET_MEAN),
                           cfg.get("image_std", IMAGENET_STD),
                           PIL_RESAMPLE.get(cfg.get("resample"), "bicubic"))


def tiny_dinov2(depth: int = 4, hidden: int = 32, heads: int = 2, seed: int = 1,
                attn_implementation: str = "sdpa") -> HFVisionEncoder:
    """A randomly initialised tiny DINOv2 for unit tests (no files needed)."""
    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=hidden, num_hidden_layers=depth, num_attention_heads=heads,
                       mlp_ratio=2, image_size=28, patch_size=7,
                       attn_implementation=attn_implementation)
    return HFVisionEncoder(Dinov2Model(cfg), f"tiny-dinov2:{depth}")


def tiny_timm_vit(depth: int = 3, hidden: int = 32, heads: int = 2, image_size: int = 28,
                  seed: int = 2, patch: int = 7, mlp_ratio: int = 2) -> TimmVisionEncoder:
    """A randomly initialised timm ViT, tiny by default, for unit tests."""
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(seed)
    model = VisionTransformer(img_size=image_size, patch_size=patch, embed_dim=hidden,
                              depth=depth, num_heads=heads, mlp_ratio=float(mlp_ratio),
                              num_classes=0)
    return TimmVisionEncoder(model, f"tiny-timm-vit:{depth}")
