"""Which subnet trains at each supernet step.

Sampling is a pure function of (seed, step): every distributed rank draws the same subnet
without talking to the others, and a resumed run draws what the uninterrupted one would have.
"""

from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

from supernet.config import Architecture, SubnetSpace

SAMPLING_RULES = ("uniform", "sandwich", "top-slot", "bottom-slot", "edges", "progressive")
# Progressive shrinking's stages, as fractions of the sampled steps (those after any warm-up):
# the largest alone, then its fused slots at every length and width, then every subnet.
PROGRESSIVE_STAGES = (1 / 3, 2 / 3)
# Which fixed subnets the warm-up trains: the largest within the budget; subnets that between
# them fuse every slot (the application's budget finds them: autopmf.budget); or the first of
# those, which fuses the lowest slots that fit at the shortest prompts.
WARMUP_RULES = ("largest", "cover", "lowest")
# Moves an architecture into the allowed set (e.g. the search's repair into a memory budget);
# None when nothing near it is allowed.
Fit = Callable[[Mapping[str, int]], "Architecture | None"]


def largest_arch(space: SubnetSpace) -> Architecture:
    """Every fusable slot fused, every choice at its largest value."""
    return {key: max(values) for key, values in space.choices().items()}


def smallest_arch(space: SubnetSpace) -> Architecture:
    """Only the top fusable slot fused, every choice at its smallest value (the smallest subnet
    that still fuses: the all-off subnet trains nothing but the heads)."""
    arch = {key: min(values) for key, values in space.choices().items()}
    arch[f"fusion_{max(space.fusable_slots)}"] = 1
    return arch


def _fitted(space: SubnetSpace, arch: Mapping[str, int], fit: Fit | None) -> Architecture:
    fitted = arch if fit is None else fit(arch)
    if fitted is None:  # nothing near it fits: nothing fused, the cheapest subnet there is
        fitted = {key: min(values) for key, values in space.choices().items()}
    return space.canonical(fitted)


class ArchSampler:
    """uniform: every choice uniformly at random. sandwich: the largest, the smallest and a
    uniform subnet in turn (AutoFormer's sandwich rule, one subnet per step). top-slot: the
    highest fused slot uniformly among the fusable slots, the slots below it fused or not at
    random (`top_slot_arch`), so subnets that fuse only low slots train as often as any other:
    in a six-slot space, 7 in 8 uniform draws that fuse slot 0 also fuse one of the top three.
    bottom-slot: its mirror, the lowest fused slot drawn uniformly (`bottom_slot_arch`), the
    sampler for a few-shot split on that slot. edges: each step one or the other, by a coin:
    a subnet's first fused slot reads the frozen encoders' streams and its last one carries
    the fusion to the [CLS], two roles each slot's prompts must learn; top-slot sampling
    starves the high slots' first role (in the demo's budget 7 of 1,608 steps for slot 5),
    bottom-slot the low slots' last, and either way those subnets stay at chance.
    progressive: progressive shrinking (OFA, Cai et al. 2020) over `total_steps`: the
    largest alone for the first third of the sampled steps, so that a distillation teacher
    has learnt the task before any subnet fits it; then the sandwich over the largest's
    fused slots with their lengths and widths drawn (elastic width); then the sandwich over
    every subnet (elastic depth: which slots fuse).

    `fit` restricts training to the subnets a search will visit: with the search's repair
    into the memory budget, every draw (largest and smallest included) is stepped down until
    it fits, exactly as the search's candidates are — so the supernet spends its steps on the
    architectures that can win, not on ones the budget rules out."""

    def __init__(self, space: SubnetSpace, rule: str = "uniform", seed: int = 0,
                 fit: Fit | None = None, largest: Architecture | None = None,
                 warmup_steps: int = 0, warmup_archs: Sequence[Architecture] | None = None,
                 total_steps: int | None = None):
        if rule not in SAMPLING_RULES:
            raise ValueError(f"sampling rule {rule!r} is not one of {SAMPLING_RULES}")
        if rule == "progressive" and total_steps is None:
            raise ValueError("progressive sampling needs total_steps: its stages are "
                             "fractions of the training")
        self.space, self.rule, self.seed, self.fit = space, rule, seed, fit
        # The sandwich's top: the space's largest, or the largest allowed one when given.
        self.largest = largest or largest_arch(space)
        # Steps that train only fixed subnets first (by default the largest, as progressive
        # shrinking starts; `warmup_archs` are taken in turn): a PMF model sits at chance for
        # hundreds of steps before fusion starts to work, and a subnet drawn anew each step
        # leaves that plateau far later than one trained alone.
        self.warmup_steps = warmup_steps
        self.warmup_archs = list(warmup_archs or [self.largest])
        self.total_steps = total_steps

    def stage(self, step: int) -> int:
        """Progressive shrinking's stage of `step` (0, 1 or 2): how many of
        PROGRESSIVE_STAGES' fractions of the sampled steps lie before it."""
        sampled = max(1, self.total_steps - self.warmup_steps)
        done = (step - self.warmup_steps) / sampled
        return sum(done >= edge for edge in PROGRESSIVE_STAGES)

    def sample(self, step: int) -> Architecture:
        rng = random.Random(f"autopmf-sampler:{self.seed}:{step}")
        stage = self.stage(step) if self.rule == "progressive" else 2
        sandwich = self.rule == "sandwich" or (self.rule == "progressive" and stage > 0)
        if step < self.warmup_steps:
            arch = self.warmup_archs[step % len(self.warmup_archs)]
        elif stage == 0 or (sandwich and step % 3 == 0):
            arch = self.largest
        elif stage == 1:
            arch = same_slots_arch(self.space, rng, self.largest)
        elif sandwich and step % 3 == 1:
            arch = smallest_arch(self.space)
        elif self.rule == "top-slot":
            arch = top_slot_arch(self.space, rng)
        elif self.rule == "bottom-slot" or (self.rule == "edges" and rng.random() < 0.5):
            arch = bottom_slot_arch(self.space, rng)
        elif self.rule == "edges":
            arch = top_slot_arch(self.space, rng)
        else:
            arch = self.space.random_arch(rng)
        return _fitted(self.space, arch, self.fit)


def same_slots_arch(space: SubnetSpace, rng: random.Random, like: Architecture
                    ) -> Architecture:
    """A uniform draw that fuses exactly the slots `like` fuses: only its lengths and
    widths are drawn."""
    arch = space.random_arch(rng)
    for slot in space.fusable_slots:
        arch[f"fusion_{slot}"] = like[f"fusion_{slot}"]
    return arch


def top_slot_arch(space: SubnetSpace, rng: random.Random) -> Architecture:
    """A uniform draw whose highest fused slot is itself drawn uniformly: that slot fuses,
    the ones above it do not, the ones below keep their uniform draw."""
    return _edge_slot_arch(space, rng, above=True)


def bottom_slot_arch(space: SubnetSpace, rng: random.Random) -> Architecture:
    """A uniform draw whose lowest fused slot is itself drawn uniformly: that slot fuses,
    the ones below it do not, the ones above keep their uniform draw."""
    return _edge_slot_arch(space, rng, above=False)


def _edge_slot_arch(space: SubnetSpace, rng: random.Random, above: bool) -> Architecture:
    arch = space.random_arch(rng)
    edge = rng.choice(sorted(space.fusable_slots))
    for slot in space.fusable_slots:
        if (slot >= edge) if above else (slot <= edge):
            arch[f"fusion_{slot}"] = int(slot == edge)
    return arch


def reference_subnets(space: SubnetSpace, seed: int = 0, n_random: int = 3,
                      fit: Fit | None = None, largest: Architecture | None = None
                      ) -> dict[str, Architecture]:
    """The fixed subnets validated after every supernet epoch: comparable across epochs
    (fitted like the training draws when training is restricted)."""
    rng = random.Random(f"autopmf-reference:{seed}")
    subnets = {"largest": largest or largest_arch(space), "smallest": smallest_arch(space)}
    for i in range(n_random):
        subnets[f"random_{i}"] = space.random_arch(rng)
    return {name: _fitted(space, arch, fit) for name, arch in subnets.items()}


def steps_by_edge_slot(sampler: ArchSampler, steps: range) -> dict[str, dict[int, int]]:
    """How many of `steps` train a subnet whose lowest ("bottom") / highest ("top") fused
    slot is each fusable slot (after the fit). A subnet whose first fused slot rarely trains
    as a first fusion stays untrained: under top-slot sampling in the demo's budget, subnets
    first fusing slot 5 got 7 of 1,608 steps and read chance after 12 epochs."""
    shares: dict[str, dict[int, int]] = {
        edge: {slot: 0 for slot in sorted(sampler.space.fusable_slots)}
        for edge in ("bottom", "top")}
    for step in steps:
        fused = sampler.space.fused_slots(sampler.sample(step))
        if fused:
            shares["bottom"][min(fused)] += 1
            shares["top"][max(fused)] += 1
    return shares
