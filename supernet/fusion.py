"""The trainable part of one fused slot: prompts and the two mapping MLPs.

A `FusionSlot` holds prompt banks and mapping MLPs of some size and runs a fused slot with
any *active* lengths up to that size, using the first rows of each bank (AutoFormer-style
weight entanglement). A standalone PMF model builds its slots at exactly its own lengths; the
supernet builds them at the largest lengths of the space — the same code runs both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from supernet.config import SlotConfig

PROMPT_INIT_STD = 0.02  # the paper's N(0, 0.02)

# (tokens, key_mask, rows) -> the layer's outputs at `rows` (all rows when None).
LayerFn = Callable[[torch.Tensor, torch.Tensor | None, slice | None], torch.Tensor]


@dataclass
class Streams:
    """The two residual streams between slots. text_mask [B, Nt] is True for real tokens."""

    text: torch.Tensor
    text_mask: torch.Tensor
    image: torch.Tensor


class SlicedMLP(nn.Module):
    """Linear-ReLU-Linear (the paper's mapping) whose hidden width can be narrowed to the first
    `hidden` units, followed by a LayerNorm.

    Why the LayerNorm (not in the paper): a post-norm encoder such as BERT/MiniLM feeds
    appended tokens to attention un-normalised, so freshly initialised mapping outputs (norm
    ~0.1 against ~10 for real tokens) carry no signal and fusion into text barely starts.
    Normalising puts them on the token scale; for pre-norm encoders (ViT, DINOv2) it changes
    nothing, as they normalise every token before attention anyway."""

    def __init__(self, d_in: int, hidden: int, d_out: int):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, d_out)
        self.norm = nn.LayerNorm(d_out)

    def forward(self, x: torch.Tensor, hidden: int | None = None) -> torch.Tensor:
        h = self.fc1.out_features if hidden is None else hidden
        x = F.relu(F.linear(x, self.fc1.weight[:h], self.fc1.bias[:h]))
        return self.norm(F.linear(x, self.fc2.weight[:, :h], self.fc2.bias))


def kept_mask(mask: torch.Tensor, rows: slice | None) -> torch.Tensor:
    """The text mask of a stream of which only `rows` were computed (None: all)."""
    return mask if rows is None else mask[:, rows]


def prompt_rows(bank: nn.Parameter, n: int, like: torch.Tensor) -> torch.Tensor:
    """The first n prompts of `bank`, repeated for each example of `like` [B, N, d]."""
    return bank[:n].to(like.dtype).unsqueeze(0).expand(like.shape[0], -1, -1)


def with_prompts(mask: torch.Tensor, extra: int) -> torch.Tensor:
    """A text key mask extended with `extra` always-visible prompt positions."""
    return torch.cat([mask, mask.new_ones(mask.shape[0], extra)], dim=1)


def _prompt(rows: int, dim: int) -> nn.Parameter:
    return nn.Parameter(torch.randn(rows, dim) * PROMPT_INIT_STD)


class FusionSlot(nn.Module):
    """Prompts of one slot (names follow the paper: QP query prompts, QCP query context
    prompts, FCP fusion context prompts) and the two mappings between the encoders."""

    def __init__(self, d_text: int, d_image: int, size: SlotConfig):
        super().__init__()
        self.size = size
        self.text_query = _prompt(size.query_len, d_text)  # QP_t2v
        self.text_query_context = _prompt(size.query_context_len, d_text)  # QCP_t2v
        self.image_query = _prompt(size.query_len, d_image)  # QP_v2t
        self.image_query_context = _prompt(size.query_context_len, d_image)  # QCP_v2t
        self.text_fusion_context = _prompt(size.fusion_context_len, d_text)  # FCP_txt
        self.image_fusion_context = _prompt(size.fusion_context_len, d_image)  # FCP_img
        self.text_to_image = SlicedMLP(d_text, size.mapping_hidden, d_image)
        self.image_to_text = SlicedMLP(d_image, size.mapping_hidden, d_text)

    def forward(self, streams: Streams, text_layer: LayerFn, image_layer: LayerFn,
                active: SlotConfig | None = None,
                keep: tuple[slice | None, slice | None] = (None, None)) -> Streams:
        """`keep`: the (text, image) rows of the slot's outputs to compute (None: all)."""
        cfg = active or self.size
        text, mask, image = streams.text, streams.text_mask, streams.image
        n_text, n_image = text.shape[1], image.shape[1]

        text_q, image_q = self.query(streams, text_layer, image_layer, cfg)
        to_image = self.text_to_image(text_q, cfg.mapping_hidden)
        to_text = self.image_to_text(image_q, cfg.mapping_hidden)

        # Fusion stage: each encoder attends to the other's mapped queries; the appended
        # positions are dropped so each residual stream keeps its length (or `keep`'s rows).
        text_rows, image_rows = keep
        image_out = image_layer(
            torch.cat([image, prompt_rows(self.image_fusion_context, cfg.fusion_context_len,
                                          text),
                       to_image], dim=1), None, image_rows or slice(0, n_image))
        text_out = text_layer(
            torch.cat([text, prompt_rows(self.text_fusion_context, cfg.fusion_context_len,
                                         text),
                       to_text], dim=1),
            with_prompts(mask, cfg.fusion_context_len + cfg.query_len),
            text_rows or slice(0, n_text))
        return Streams(text_out, kept_mask(mask, text_rows), image_out)

    def query(self, streams: Streams, text_layer: LayerFn, image_layer: LayerFn,
              cfg: SlotConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Query stage: each encoder reads its own tokens into its query prompts; -> the
        (text, image) query prompts' outputs [B, M, d]. Only the prompts' outputs are used,
        so only they are computed (exact, and much cheaper)."""
        text, image = streams.text, streams.image
        q, qc = cfg.query_len, cfg.query_context_len

        text_q = text_layer(
            torch.cat([text, prompt_rows(self.text_query_context, qc, text),
                       prompt_rows(self.text_query, q, text)], 1),
            with_prompts(streams.text_mask, qc + q), slice(-q, None))
        image_q = image_layer(
            torch.cat([image, prompt_rows(self.image_query_context, qc, text),
                       prompt_rows(self.image_query, q, text)], 1), None, slice(-q, None))
        return text_q, image_q

    def used_regions(self, active: SlotConfig) -> dict[str, tuple[slice, ...]]:
        """The part of each parameter that a subnet with `active` sizes reads."""
        h = active.mapping_hidden
        regions = {"text_query": active.query_len, "image_query": active.query_len,
                   "text_query_context": active.query_context_len,
                   "image_query_context": active.query_context_len,
                   "text_fusion_context": active.fusion_context_len,
                   "image_fusion_context": active.fusion_context_len}
        used = {name: (slice(0, n),) for name, n in regions.items()}
        for mlp in ("text_to_image", "image_to_text"):
            used[f"{mlp}.fc1.weight"] = (slice(0, h),)
            used[f"{mlp}.fc1.bias"] = (slice(0, h),)
            used[f"{mlp}.fc2.weight"] = (slice(None), slice(0, h))
            used[f"{mlp}.fc2.bias"] = (slice(None),)
            used[f"{mlp}.norm.weight"] = (slice(None),)
            used[f"{mlp}.norm.bias"] = (slice(None),)
        return used

    def sliced_state(self, active: SlotConfig) -> dict[str, torch.Tensor]:
        """This slot's weights as used by `active`: the state dict of a FusionSlot built at
        exactly `active`'s sizes."""
        params = dict(self.named_parameters())
        return {name: params[name][region].clone()
                for name, region in self.used_regions(active).items()}
