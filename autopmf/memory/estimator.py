"""Peak training-step memory of any architecture, composed from a `MemoryProfile`.

The quantity (DESIGN.md section 4): the peak of allocated bytes during one steady-state training
step of the standalone subnet at the space's batch size, sequence lengths and precision — the
step of `autopmf.train.fit`: forward from raw inputs under autocast, loss, zero_grad (the last
step's gradients live through the forward), backward, AdamW.step(). Steady state means AdamW's
moments exist (they are created lazily by the first step). On CUDA this is what
`torch.cuda.max_memory_allocated` reports; the CUDA context and the allocator's cached but
unallocated blocks come on top of it on a real GPU.

The estimate walks the step's segments in order — prefix, units bottom up, heads, backward top
down, optimizer — adding each segment's net change to a running level and taking the maximum of
level + the segment's peak rise. It reads only the profile: no model, no weights, ~20 µs.
"""

from __future__ import annotations

import itertools
import math
from typing import Mapping

from autopmf.errors import AutopmfError
from autopmf.memory.profile import (MemoryProfile, UnitCost, config_key, optimizer_state,
                                    optimizer_transient)
from autopmf.space import Architecture, SearchSpace

GIB = 2**30
MIB = 2**20


def estimate_bytes(space: SearchSpace, arch: Mapping[str, int], profile: MemoryProfile) -> int:
    """Predicted peak bytes of one training step of `arch` (a validated architecture) with
    the profile that `load_profile(space, ...)` gives."""
    try:
        configs = space.slot_configs(arch, profile.mapping_hidden)
        first = min(configs, default=profile.num_slots)
        top = profile.num_slots - 1
        chain: list[UnitCost] = []  # one unit per slot from the first fused one, then the heads
        for slot in range(first, profile.num_slots):
            if slot not in configs:
                chain.append(profile.top_plain if slot == top else profile.plain)
                continue
            if slot == first:
                table = profile.top_first_fused if slot == top else profile.first_fused
            else:
                table = profile.top_fused if slot == top else profile.fused
            chain.append(table[config_key(configs[slot])])
    except KeyError as exc:
        raise AutopmfError(f"architecture {dict(arch)} does not fit this memory profile (no "
                           f"{exc}): build the profile with load_profile() for space "
                           f"'{space.name}'") from None
    chain.append(profile.heads if configs else profile.heads_only)
    return _walk(profile, first, chain)


def _walk(profile: MemoryProfile, first: int, chain: list[UnitCost]) -> int:
    params = tuple(itertools.chain.from_iterable(u.params for u in chain))
    trainable = sum(params)
    state = profile.static + trainable + optimizer_state(profile.optimizer, params)
    level = state + trainable  # the last step's gradients, alive until zero_grad
    peak = level

    prefix = profile.prefix[first]
    peak = max(peak, level + prefix.forward.peak)
    level += prefix.forward.delta
    outputs = [(prefix.out_text, prefix.out_image)]  # output streams of each link
    for i, unit in enumerate(chain):
        peak = max(peak, level + unit.forward.peak)
        level += unit.forward.delta
        if i > 0:  # the streams it read are dropped now, unless it saved them
            level -= _unsaved(unit, *outputs[-1])
        outputs.append((unit.out_text, unit.out_image))
    # PMFModel.forward holds the prefix's streams until it returns.
    level -= _unsaved(chain[0], *outputs[0])

    level -= trainable  # zero_grad(set_to_none=True)
    for unit, (text, image) in zip(reversed(chain), reversed(outputs[:-1])):
        peak = max(peak, level + unit.backward.peak)
        level += unit.backward.delta
        level -= (text if unit.saves_text else 0) + (image if unit.saves_image else 0)

    peak = max(peak, state + trainable + optimizer_transient(profile.optimizer, params))
    return peak + profile.runtime


def _unsaved(unit: UnitCost, text: int, image: int) -> int:
    return (0 if unit.saves_text else text) + (0 if unit.saves_image else image)


def min_memory_arch(space: SearchSpace, profile: MemoryProfile) -> tuple[Architecture, int]:
    """The architecture of `space` with the smallest estimate, and that estimate.

    Coordinate descent from the all-smallest choices: memory only grows with each fused slot
    and each prompt row, so this is nothing fused unless a space makes that not so."""
    choices = space.choices()
    best = {key: min(values) for key, values in choices.items()}
    best_bytes = estimate_bytes(space, best, profile)
    improved = True
    while improved:
        improved = False
        for key, values in choices.items():
            for value in values:
                nbytes = estimate_bytes(space, {**best, key: value}, profile)
                if nbytes < best_bytes:
                    best, best_bytes, improved = {**best, key: value}, nbytes, True
    return space.canonical(best), best_bytes


def max_memory_arch(space: SearchSpace, profile: MemoryProfile) -> tuple[Architecture, int]:
    """The largest architecture: every fusable slot fused, every choice at its largest."""
    arch = {key: max(values) for key, values in space.choices().items()}
    return arch, estimate_bytes(space, arch, profile)


def reference_within_budget(space: SearchSpace, budget_bytes: int, profile: MemoryProfile
                            ) -> tuple[Architecture, int] | None:
    """The PMF paper's kind of design that fits: the most top-contiguous fused slots, then
    the largest single prompt length M that fits with them (None if not even the top slot
    with the shortest M fits). The baseline a search must beat."""
    for n_fused in range(len(space.fusable_slots), 0, -1):
        # M 0 is no design: a fused slot needs query prompts (a split space lists 0 for the
        # context prompts' sake).
        for m in sorted((m for m in space.prompt_lengths if m > 0), reverse=True):
            arch = space.reference_arch(n_fused, m)
            nbytes = estimate_bytes(space, arch, profile)
            if nbytes <= budget_bytes:
                return arch, nbytes
    return None


def check_budget(space: SearchSpace, budget_bytes: int, profile: MemoryProfile
                 ) -> tuple[Architecture, int]:
    """Raise AutopmfError unless some architecture fits `budget_bytes`; return the smallest
    architecture and its estimate."""
    arch, nbytes = min_memory_arch(space, profile)
    if nbytes > budget_bytes:
        fused = space.fused_slots(arch)
        which = f"fusing slot(s) {fused}" if fused else "no slot fused, heads only"
        precision = ", precision bf16" if space.precision == "fp32" else ""
        raise AutopmfError(
            f"no architecture of space '{space.name}' fits a budget of "
            f"{format_bytes(budget_bytes)} on {profile.key['device']}: the smallest ({which}) "
            f"needs {format_bytes(nbytes)} at batch size {space.batch_size}, "
            f"{space.precision}; raise the budget to at least {format_bytes(nbytes)}, or lower "
            f"batch_size{precision} in {space.source or 'the search space'}")
    return arch, nbytes


def format_bytes(nbytes: int) -> str:
    """GiB (or MiB below 1 GiB), rounded up: a budget of what is printed is enough."""
    if nbytes >= GIB:
        return f"{math.ceil(nbytes / GIB * 100) / 100:.2f} GiB"
    return f"{math.ceil(nbytes / MIB * 10) / 10:.1f} MiB"
