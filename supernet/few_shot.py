"""Few-shot supernets (Zhao et al. 2021): one weight-sharing supernet per value of one
decision, each trained only on the subnets that take that value.

The decision is a subnet's highest fused slot ("top-slot") or its lowest ("bottom-slot").

Top: in one supernet, slot k's prompts serve subnets that fuse a slot above k (they feed
it) and subnets whose top fused slot is k (they carry the signal to the [CLS] alone): two
jobs for one set of weights, and whichever the sampler draws more often wins
(BENCHMARKS.md, "Longer supernet training, and which subnets it trains"). Split on the top
slot, every subnet has weights that only subnets of its own kind train.

Bottom: the lowest fused slot is where the image stream first carries text, so it sets what
every slot above it receives. Slot k's prompts serve a subnet that first fuses there (the
streams entering k are the frozen encoders') and subnets fused below it (the streams are
already mixed). One supernet's seeds differed most in which of those it learned: seed 1 of
the fixed-start top-slot supernets ranked every design fusing slot 0 or 1 above those that
do not (BENCHMARKS.md). Split on the bottom slot, each shot sees one input distribution.
Measured on the demo (12 epochs, one seed), that split trained nothing: every design stayed
within 0.09 of chance (BENCHMARKS.md, "Which subnets a sampler trains").

`FewShotSupernet` holds one `Supernet` (a "shot") per fusable slot, sharing the frozen
backbone, each starting from the same weights, and routes every call by the subnet's top
(or bottom) fused slot; a subnet that fuses nothing goes to the lowest slot's shot (it trains
only that shot's heads). It answers what a `Supernet` answers, so training, the search
and `extract` need not know which one they hold.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from supernet.backbone import FrozenBackbone
from supernet.config import SubnetSpace
from supernet.fusion import Streams
from supernet.pmf import PMFModel
from supernet.supernet import Supernet
from supernet.weights import trainable_state

# How a supernet is split (`build_supernet`): "none" is one supernet, the default.
FEW_SHOT_SPLITS = ("none", "top-slot", "bottom-slot")


def build_supernet(space: SubnetSpace, backbone: FrozenBackbone, num_classes: int,
                   few_shot: str = "none") -> "Supernet | FewShotSupernet":
    if few_shot not in FEW_SHOT_SPLITS:
        raise ValueError(f"few-shot split {few_shot!r} is not one of {FEW_SHOT_SPLITS}")
    if few_shot == "none":
        return Supernet(space, backbone, num_classes)
    return FewShotSupernet(space, backbone, num_classes, split=few_shot)


class FewShotSupernet(nn.Module):
    def __init__(self, space: SubnetSpace, backbone: FrozenBackbone, num_classes: int,
                 split: str = "top-slot"):
        super().__init__()
        if split not in FEW_SHOT_SPLITS[1:]:
            raise ValueError(f"few-shot split {split!r} is not one of {FEW_SHOT_SPLITS[1:]}")
        self.space = space
        self.split = split
        self.backbone = backbone
        self.num_classes = num_classes
        first = Supernet(space, backbone, num_classes)
        shots = {str(min(space.fusable_slots)): first}
        for j in sorted(space.fusable_slots)[1:]:
            shots[str(j)] = shot = Supernet(space, backbone, num_classes)
            # The same start for every shot, as if split from one supernet.
            with torch.no_grad():
                for mine, theirs in zip(shot.parameters(), first.parameters()):
                    if mine.requires_grad:
                        mine.copy_(theirs)
        self.shots = nn.ModuleDict(shots)

    @property
    def lowest_fusable_slot(self) -> int:
        return min(self.space.fusable_slots)

    def split_of(self, arch: Mapping[str, int]) -> str:
        """The name of the shot that holds subnet `arch`'s weights: its top (or bottom)
        fused slot."""
        edge = max if self.split == "top-slot" else min
        return str(edge(self.space.fused_slots(arch), default=self.lowest_fusable_slot))

    def shot(self, arch: Mapping[str, int]) -> Supernet:
        return self.shots[self.split_of(arch)]

    def all_shots(self) -> list[Supernet]:
        return list(self.shots.values())

    def forward(self, streams: Streams, start_slot: int, arch: Mapping[str, int]
                ) -> torch.Tensor:
        return self.shot(arch)(streams, start_slot, arch)

    def features(self, streams: Streams, start_slot: int, arch: Mapping[str, int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.shot(arch).features(streams, start_slot, arch)

    def forward_batch(self, batch: dict[str, torch.Tensor], arch: Mapping[str, int]
                      ) -> torch.Tensor:
        return self.shot(arch).forward_batch(batch, arch)

    def extract(self, arch: Mapping[str, int]) -> PMFModel:
        return self.shot(arch).extract(arch)

    def used_regions(self, arch: Mapping[str, int]) -> dict[str, tuple[slice, ...] | None]:
        """The routed shot's regions under its name; every other shot's weights unused."""
        routed = self.split_of(arch)
        regions: dict[str, tuple[slice, ...] | None] = {}
        for name, shot in self.shots.items():
            inner = shot.used_regions(arch) if name == routed else {}
            for key in trainable_state(shot):
                regions[f"shots.{name}.{key}"] = inner.get(key)
        return regions

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return trainable_state(self)
