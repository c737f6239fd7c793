"""The AutoFormer-style weight-sharing supernet over a search space.

Each fusable slot owns one `FusionSlot` at the space's largest prompt lengths (and mapping
width); a subnet uses the first rows of each bank and the first units of each mapping. Heads
are shared by every subnet. `extract(arch)` materialises the standalone `PMFModel` of one
subnet, holding only its own parameters, copied from here.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from supernet.backbone import FrozenBackbone, TwoHeads
from supernet.config import SlotConfig, SubnetSpace
from supernet.fusion import FusionSlot, Streams
from supernet.pmf import PMFModel, run_slots
from supernet.weights import trainable_state


def largest_slot(space: SubnetSpace, default_mapping_hidden: int) -> SlotConfig:
    longest = max(space.prompt_lengths)
    return SlotConfig(longest, longest, longest,
                      max(space.mapping_hidden) if space.mapping_hidden
                      else default_mapping_hidden)


class Supernet(nn.Module):
    def __init__(self, space: SubnetSpace, backbone: FrozenBackbone, num_classes: int):
        super().__init__()
        self.space = space
        self.backbone = backbone
        self.num_classes = num_classes
        d_text, d_image = backbone.text.hidden_size, backbone.image.hidden_size
        self.default_mapping_hidden = max(d_text, d_image) // 2
        bank = largest_slot(space, self.default_mapping_hidden)
        self.fusion = nn.ModuleDict(
            {str(j): FusionSlot(d_text, d_image, bank) for j in space.fusable_slots})
        self.heads = TwoHeads(d_text, d_image, num_classes)

    @property
    def lowest_fusable_slot(self) -> int:
        """Everything below it is the same for every subnet: the feature-cache boundary."""
        return min(self.space.fusable_slots)

    def shot(self, arch: Mapping[str, int]) -> "Supernet":
        """The supernet holding `arch`'s weights: this one (a few-shot supernet has several:
        supernet.few_shot)."""
        return self

    def all_shots(self) -> list["Supernet"]:
        return [self]

    def active_slots(self, arch: Mapping[str, int]) -> dict[int, SlotConfig]:
        return self.space.slot_configs(arch, self.default_mapping_hidden)

    def forward(self, streams: Streams, start_slot: int, arch: Mapping[str, int]
                ) -> torch.Tensor:
        """Logits of subnet `arch` from streams that went through every layer below
        `start_slot` (at most the arch's first fused slot)."""
        return self._run(streams, start_slot, arch, self.heads)

    def features(self, streams: Streams, start_slot: int, arch: Mapping[str, int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """The (text, image) [CLS] features the shared heads read, for subnet `arch`."""
        return self._run(streams, start_slot, arch, None)

    def _run(self, streams: Streams, start_slot: int, arch: Mapping[str, int],
             heads: TwoHeads | None):
        fused = {j: (self.fusion[str(j)], cfg) for j, cfg in self.active_slots(arch).items()}
        if fused and start_slot > min(fused):
            raise ValueError(f"streams start at slot {start_slot}, above fused slot {min(fused)}")
        return run_slots(self.backbone, heads, streams, start_slot, fused)

    def forward_batch(self, batch: dict[str, torch.Tensor], arch: Mapping[str, int]
                      ) -> torch.Tensor:
        start = min(self.active_slots(arch), default=self.backbone.num_slots)
        return self(self.backbone.encode_until(batch, start), start, arch)

    @torch.no_grad()
    def extract(self, arch: Mapping[str, int]) -> PMFModel:
        """The standalone model of `arch`, its weights copied from the shared ones."""
        active = self.active_slots(self.space.validate(arch))
        model = PMFModel(self.backbone, active, self.num_classes)
        for j, cfg in active.items():
            model.fusion[str(j)].load_state_dict(self.fusion[str(j)].sliced_state(cfg))
        model.heads.load_state_dict(self.heads.state_dict())
        return model.to(next(self.heads.parameters()).device)

    def used_regions(self, arch: Mapping[str, int]) -> dict[str, tuple[slice, ...] | None]:
        """For every trainable parameter, the region subnet `arch` reads (None: not at all)."""
        active = self.active_slots(arch)
        regions: dict[str, tuple[slice, ...] | None] = {}
        for j, module in self.fusion.items():
            inner = module.used_regions(active[int(j)]) if int(j) in active else {}
            for name, _ in module.named_parameters():
                regions[f"fusion.{j}.{name}"] = inner.get(name)
        for name, _ in self.heads.named_parameters():
            regions[f"heads.{name}"] = (slice(None),)
        return regions

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return trainable_state(self)
