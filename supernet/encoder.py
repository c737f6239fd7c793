"""The one interface PMF needs from a frozen pretrained transformer.

PMF runs an encoder layer by layer and appends prompt tokens between layers, so an encoder is
seen as: `embed` (inputs -> token sequence), `run_layer(i, tokens, key_mask)`, and
`cls_feature` (final tokens -> the [CLS] vector the head reads). Every parameter is frozen.
The adapters that implement it for real models live in `autopmf.encoders`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class FrozenEncoder(nn.Module):
    """Base class of the text and image adapters. Subclasses set the attributes below."""

    hidden_size: int
    depth: int
    num_heads: int
    name: str
    # The rows of the final tokens that `cls_feature` reads: the top slot computes only these
    # (None: every row, for an encoder that pools over all tokens).
    feature_rows: slice | None = slice(0, 1)

    def freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "FrozenEncoder":
        # Frozen encoders always run in eval mode (no dropout), whatever the wrapper does.
        return super().train(False)

    def embed(self, inputs: Any) -> torch.Tensor:
        raise NotImplementedError

    def run_layer(self, index: int, tokens: torch.Tensor, key_mask: torch.Tensor | None,
                  rows: slice | None = None) -> torch.Tensor:
        """Run layer `index` on tokens [B, N, D]; key_mask [B, N] bool (True = real token)
        or None when every token is real. `rows`: return only these positions' outputs;
        every token still serves as a key and value, so the result equals the full layer's
        output sliced — but costs far less when few rows are kept (PMF's query stage keeps
        only its M query prompts)."""
        raise NotImplementedError

    def cls_feature(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TextEncoder(FrozenEncoder):
    def tokenize(self, texts: list[str], max_len: int) -> dict[str, torch.Tensor]:
        """-> {'input_ids', 'attention_mask'} of shape [B, max_len] (padded to max_len, so a
        training step's memory does not depend on the batch's texts)."""
        raise NotImplementedError


class ImageEncoder(FrozenEncoder):
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    patch_size: int
    interpolation: str = "bicubic"  # as the encoder's own image processor / timm data config

    def preprocess(self, images: np.ndarray | torch.Tensor, image_size: int) -> torch.Tensor:
        """uint8 [N, H, W, 3] -> float [N, 3, S, S], resized and normalised as the encoder
        was trained; on the device a uint8 tensor is on (a batch copied to the GPU is
        normalised there)."""
        # A copy of an array: the inputs may be read-only arrays.
        pixels = (images if isinstance(images, torch.Tensor)
                  else torch.as_tensor(np.array(images, dtype=np.uint8)))
        x = pixels.permute(0, 3, 1, 2).float() / 255.0
        if x.shape[-1] != image_size or x.shape[-2] != image_size:
            x = nn.functional.interpolate(x, size=(image_size, image_size),
                                          mode=self.interpolation, align_corners=False,
                                          antialias=True).clamp_(0, 1)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def num_tokens(self, image_size: int) -> int:
        raise NotImplementedError


def first_tensor(output: Any) -> torch.Tensor:
    """Hugging Face layers return a tensor or a tuple (hidden_states, ...) by version."""
    return output[0] if isinstance(output, (tuple, list)) else output


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int,
           additive_mask: torch.Tensor | None = None, q_norm=None, k_norm=None
           ) -> torch.Tensor:
    """Multi-head scaled dot-product attention of projected queries q [B, n, D] over keys and
    values [B, N, D] (softmax scale 1/sqrt(head dim), as BERT, ViT, DINOv2 and timm use);
    q_norm/k_norm act per head (timm's qk-norm). -> [B, n, D] before the output projection."""
    def heads(x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (num_heads, -1)).transpose(1, 2)

    qh, kh = heads(q), heads(k)
    if q_norm is not None:
        qh, kh = q_norm(qh), k_norm(kh)
    out = F.scaled_dot_product_attention(qh, kh, heads(v), attn_mask=additive_mask)
    return out.transpose(1, 2).flatten(2)
