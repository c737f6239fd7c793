"""Few-shot supernets (Zhao et al. 2021): one weight-sharing supernet per value of one
decision, each trained only on the subnets that take that value.

The decision is a subnet's highest fused slot ("top-slot"), its lowest ("bottom-slot"), or
whether it fuses one given slot J ("slot-J": two shots).

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

Slot J: on the demo the supernets trained the designs that fuse slot 3 and left the others
at or below their start, so one guess was that the shared prompts served the subnets with
slot 3 and lost what the others need. Split on one slot, the subnets without it get weights
of their own. Measured on the demo (split on slot 3, the distilled sandwich, four seeds),
the others stayed at their start and the ranking got worse (BENCHMARKS.md, "Where the
ranking is lost"): it is an option, not the default.

`FewShotSupernet` holds one `Supernet` (a "shot") per fusable slot (two for "slot-J":
"without" and "with"), sharing the frozen backbone, each starting from the same weights,
and routes every call by the subnet's top (or bottom) fused slot, or by whether it fuses
slot J; a subnet that fuses nothing goes to the lowest slot's shot (or "without"; it trains
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

# How a supernet is split (`build_supernet`): "none" is one supernet, the default; beside
# these, "slot-J" splits on whether a subnet fuses slot J (SLOT_SPLIT + J).
FEW_SHOT_SPLITS = ("none", "top-slot", "bottom-slot")
SLOT_SPLIT = "slot-"
# A slot split's two shots: the subnets that do not fuse its slot, and those that do.
SLOT_SPLIT_SHOTS = ("without", "with")


def split_slot(split: str, space: SubnetSpace) -> int | None:
    """The slot J of a "slot-J" split (None for the named splits); ValueError naming the
    fusable slots when `split` is neither."""
    if split in FEW_SHOT_SPLITS:
        return None
    slot = split[len(SLOT_SPLIT):] if split.startswith(SLOT_SPLIT) else ""
    if not slot.isdigit() or int(slot) not in space.fusable_slots:
        raise ValueError(f"few-shot split {split!r} is not one of "
                         f"{', '.join(FEW_SHOT_SPLITS)} or {SLOT_SPLIT}J with J a fusable slot "
                         f"({', '.join(map(str, space.fusable_slots))})")
    return int(slot)


def build_supernet(space: SubnetSpace, backbone: FrozenBackbone, num_classes: int,
                   few_shot: str = "none") -> "Supernet | FewShotSupernet":
    split_slot(few_shot, space)
    if few_shot == "none":
        return Supernet(space, backbone, num_classes)
    return FewShotSupernet(space, backbone, num_classes, split=few_shot)


class FewShotSupernet(nn.Module):
    def __init__(self, space: SubnetSpace, backbone: FrozenBackbone, num_classes: int,
                 split: str = "top-slot"):
        super().__init__()
        if split == "none":
            raise ValueError("few-shot split 'none' is one supernet: build a Supernet")
        self.slot = split_slot(split, space)
        self.space = space
        self.split = split
        self.backbone = backbone
        self.num_classes = num_classes
        names = ([str(j) for j in sorted(space.fusable_slots)] if self.slot is None
                 else list(SLOT_SPLIT_SHOTS))
        first = Supernet(space, backbone, num_classes)
        shots = {names[0]: first}
        for name in names[1:]:
            shots[name] = shot = Supernet(space, backbone, num_classes)
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
        fused slot, or whether it fuses the split's slot."""
        if self.slot is not None:
            return SLOT_SPLIT_SHOTS[self.slot in self.space.fused_slots(arch)]
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
