"""What the model reads of a search space: an architecture, a fused slot's sizes, and the
space's choices.

The application's `autopmf.space.SearchSpace` (loaded from YAML) is one `SubnetSpace`; the model
side names only this interface, so that `supernet/` never imports the application.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, runtime_checkable

# One subnet: choice name -> value (`fusion_3: 1`, `prompt_3: 4`, ...).
Architecture = dict[str, int]


@dataclass(frozen=True)
class SlotConfig:
    """What one fused slot needs: its prompt lengths and its mapping MLP's hidden size."""

    query_len: int  # QP length M: also the number of tokens passed to the other encoder
    query_context_len: int  # QCP length
    fusion_context_len: int  # FCP length
    mapping_hidden: int


@runtime_checkable
class SubnetSpace(Protocol):
    """The search space as the supernet and its sampler use it."""

    fusable_slots: tuple[int, ...]
    prompt_lengths: tuple[int, ...]
    mapping_hidden: tuple[int, ...]  # empty: fixed at the encoders' default

    def choices(self) -> dict[str, tuple[int, ...]]:
        """Every choice name and its allowed values, in a stable order."""

    def validate(self, arch: Mapping[str, Any]) -> Architecture:
        """`arch` as a clean dict, or an error saying what is wrong."""

    def slot_configs(self, arch: Mapping[str, int], default_mapping_hidden: int
                     ) -> dict[int, SlotConfig]:
        """A config per fused slot of `arch`."""

    def canonical(self, arch: Mapping[str, int]) -> Architecture:
        """The same model in one spelling."""

    def random_arch(self, rng: random.Random) -> Architecture:
        """Every choice drawn uniformly."""
