"""From a search space (and an architecture) to modules: the one place encoders are built,
and where the trainable part gets its starting point."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from autopmf.encoders.registry import build_image_encoder, build_text_encoder
from autopmf.space import SearchSpace
from supernet.backbone import FrozenBackbone
from supernet.pmf import PMFModel

if TYPE_CHECKING:
    from autopmf.features import FeatureCache
    from supernet.fusion import FusionSlot


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


def initialise_fusion(slots: Mapping[int, FusionSlot], backbone: FrozenBackbone,
                      train_cache: FeatureCache, rule: str, seed: int,
                      device: str = "cpu") -> None:
    """Give freshly built fused slots their starting point by `rule` (supernet.init): under
    "centred", their mappings are centred on a seeded sample of the training streams (drawn
    from `train_cache`, which must start at or below every slot); under "cls", their query
    prompts start at that sample's mean [CLS] state (plus the paper's noise); under
    "principal", prompts and mappings are set from the principal axes of a fixed sample (the
    same for every seed: nothing random is left); under "fixed", they are the paper's
    distributions drawn from seeds fixed by position, not by `seed`; "paper" leaves the
    constructors' initialisation as it is. Deterministic by seed; consumes no global RNG."""
    from autopmf.features import stream_sampler
    from supernet.init import (PROMPT_INITS, SEED_FREE_INITS, centre_mappings, fixed_draw,
                               principal_slots, shift_queries_to_cls)

    if rule not in PROMPT_INITS:
        raise ValueError(f"unknown prompt initialisation {rule!r}; one of {PROMPT_INITS}")
    if rule == "paper" or not slots:
        return
    if rule == "fixed":
        fixed_draw(slots)
        return
    streams_at = stream_sampler(train_cache, backbone, 0 if rule in SEED_FREE_INITS else seed,
                                device)
    if rule == "cls":
        shift_queries_to_cls(slots, streams_at)
        return
    layer_fns = lambda j: (backbone.text_layer_fn(j), backbone.image_layer_fn(j))  # noqa: E731
    if rule == "principal":
        principal_slots(slots, streams_at, layer_fns)
        return
    centre_mappings(slots, streams_at, layer_fns)


def initialise_supernet(supernet, train_cache: FeatureCache, rule: str, seed: int,
                        device: str = "cpu") -> None:
    """`initialise_fusion` of every fused slot of a supernet (every shot of a few-shot one,
    each alike)."""
    for shot in supernet.all_shots():
        initialise_fusion({int(j): slot for j, slot in shot.fusion.items()}, supernet.backbone,
                          train_cache, rule, seed, device)
