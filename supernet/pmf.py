"""The standalone PMF model of one architecture (Li et al., CVPR 2023), over frozen encoders.

Only prompts, mapping MLPs and the two heads are trainable. Fused slots may be anywhere (not
only the top n) and each has its own prompt lengths. Slots below the first fused slot run
without autograd, so they keep no activations for backward.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from supernet.backbone import FrozenBackbone, TwoHeads
from supernet.config import SlotConfig
from supernet.fusion import FusionSlot, Streams
from supernet.weights import load_trainable_state, trainable_state


def run_slots(backbone: FrozenBackbone, heads: TwoHeads | None, streams: Streams,
              start_slot: int, fused: Mapping[int, tuple[FusionSlot, SlotConfig]]
              ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Run slots start_slot..top on `streams` (fused where `fused` says so) and the heads
    (heads None: the (text, image) [CLS] features the heads would read).

    Shared by the standalone model and the supernet: they differ only in where `fused`'s
    modules come from (own parameters vs. shared banks sliced to the active lengths).
    """
    first_fused = min(fused, default=backbone.num_slots)
    grad_enabled = torch.is_grad_enabled()
    for slot in range(start_slot, backbone.num_slots):
        # Below the first fused slot nothing trainable has acted yet: no autograd needed.
        keep = backbone.rows_kept(slot)
        with torch.set_grad_enabled(grad_enabled and slot >= first_fused):
            if slot in fused:
                module, active = fused[slot]
                streams = module(streams, backbone.text_layer_fn(slot),
                                 backbone.image_layer_fn(slot), active, keep)
            else:
                streams = backbone.run_plain_slot(slot, streams, keep)
    features = backbone.cls_features(streams)
    return features if heads is None else heads(*features)


class PMFModel(nn.Module):
    def __init__(self, backbone: FrozenBackbone, slot_configs: Mapping[int, SlotConfig],
                 num_classes: int):
        super().__init__()
        bad = [j for j in slot_configs if not 0 <= j < backbone.num_slots]
        if bad:
            raise ValueError(f"slot {bad[0]} does not exist: the encoders pair into "
                             f"{backbone.num_slots} slots")
        self.backbone = backbone
        self.slot_configs = dict(sorted(slot_configs.items()))
        d_text, d_image = backbone.text.hidden_size, backbone.image.hidden_size
        self.fusion = nn.ModuleDict(
            {str(j): FusionSlot(d_text, d_image, cfg) for j, cfg in self.slot_configs.items()})
        self.heads = TwoHeads(d_text, d_image, num_classes)

    @property
    def first_fused_slot(self) -> int:
        """The lowest fused slot (num_slots when nothing fuses): the feature-cache boundary."""
        return min(self.slot_configs, default=self.backbone.num_slots)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        start = self.first_fused_slot
        return self.forward_from(self.backbone.encode_until(batch, start), start)

    def forward_from(self, streams: Streams, start_slot: int) -> torch.Tensor:
        """Logits from streams that already went through every layer below `start_slot`."""
        return self._run_from(streams, start_slot, self.heads)

    def features_from(self, streams: Streams, start_slot: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (text, image) [CLS] features the heads read, from such streams."""
        return self._run_from(streams, start_slot, None)

    def _run_from(self, streams: Streams, start_slot: int, heads: TwoHeads | None):
        if start_slot > self.first_fused_slot:
            raise ValueError(f"streams start at slot {start_slot}, above the first fused "
                             f"slot {self.first_fused_slot}")
        fused = {j: (self.fusion[str(j)], cfg) for j, cfg in self.slot_configs.items()}
        return run_slots(self.backbone, heads, streams, start_slot, fused)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return trainable_state(self)

    def load_trainable_state_dict(self, tensors: Mapping[str, torch.Tensor]) -> None:
        load_trainable_state(self, tensors)
