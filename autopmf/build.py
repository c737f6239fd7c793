"""From a search space (and an architecture) to modules: the one place encoders are built."""

from __future__ import annotations

from typing import Mapping

from autopmf.encoders.registry import build_image_encoder, build_text_encoder
from autopmf.space import SearchSpace
from supernet.backbone import FrozenBackbone
from supernet.pmf import PMFModel


def build_backbone(space: SearchSpace) -> FrozenBackbone:
    backbone = FrozenBackbone(build_text_encoder(space.text_encoder),
                              build_image_encoder(space.image_encoder, space.image_size))
    check_fusable_slots(space, backbone.num_slots)
    return backbone


def check_fusable_slots(space: SearchSpace, num_slots: int) -> None:
    """Every fusable slot of `space` must exist in an encoder pair of `num_slots` slots."""
    too_high = [j for j in space.fusable_slots if j >= num_slots]
    if too_high:
        from autopmf.errors import AutopmfError
        raise AutopmfError(f"{space.source or space.name}: fusable slot {too_high[0]} does not "
                           f"exist; these encoders pair into slots 0..{num_slots - 1}")


def default_mapping_hidden(backbone: FrozenBackbone) -> int:
    return max(backbone.text.hidden_size, backbone.image.hidden_size) // 2


def build_pmf(space: SearchSpace, arch: Mapping[str, int], backbone: FrozenBackbone,
              num_classes: int) -> PMFModel:
    configs = space.slot_configs(space.validate(arch), default_mapping_hidden(backbone))
    return PMFModel(backbone, configs, num_classes)
