"""Training the weight-sharing supernet: one sampled subnet per step, from the feature cache.

Flow: data -> frozen encoders -> cached streams at the lowest fusable slot -> the one training
loop (train.train_loop) with the supernet's hooks (SupernetSteps): per step, sample a subnet
(same on every rank), forward from the cache, an AdamW step of the weights it used -> per
epoch: validate the fixed reference subnets, write an atomic checkpoint. `resume=True`
continues from the newest checkpoint and ends with the same weights as an uninterrupted run
of the same seed.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from autopmf.budget import Budget
from autopmf.build import build_backbone, initialise_supernet
from autopmf.checkpoint import EpochCheckpoints, check_fingerprint
from autopmf.choices import DEFAULT_SLOT_BYTES
from autopmf.data.registry import load_dataset
from autopmf.distributed import init_distributed
from autopmf.errors import AutopmfError
from autopmf.feature_store import feature_caches
from autopmf.features import FeatureCache, RamBudget, SlotCaches
from autopmf.files import atomic_write_json, load_tensors, save_tensors
from autopmf.head_init import fit_heads_jointly
from autopmf.inherited import first_slot, heads_score, probe_sample
from autopmf.layout import SUPERNET_METRICS as METRICS
from autopmf.layout import SUPERNET_WEIGHTS as WEIGHTS
from autopmf.memory import GIB
from autopmf.metrics import distillation_loss
from autopmf.progress import (announce_budget, announce_data, announce_encoders,
                              announce_slot_shares)
from autopmf.run_dir import (claim_run_dir, fingerprint, holds_run_lock, package_versions,
                             run_settings)
from autopmf.space import SearchSpace
from autopmf.train import LoopHooks, TrainConfig, batches_per_epoch, train_loop
from supernet.few_shot import FewShotSupernet, build_supernet, split_slot
from supernet.optim import step_used_only
from supernet.sampling import ArchSampler, reference_subnets, steps_by_edge_slot
from supernet.supernet import Supernet
from supernet.weights import load_trainable_state


@dataclass
class SupernetConfig(TrainConfig):
    epochs: int = 10
    sampling: str = "sandwich"
    # In-place distillation (BigNAS, OFA): a step that trains any subnet but the largest (within
    # the budget) fits that subnet to the largest's predictions on the same batch, not to the
    # labels; the largest's own steps fit the labels.
    distill: bool = False
    # One supernet ("none"), or one per highest ("top-slot") or lowest ("bottom-slot") fused
    # slot: supernet.few_shot.
    few_shot: str = "none"
    # Train only subnets that fit this training-memory budget (GiB), repaired into it exactly
    # as the search repairs its candidates; None trains the whole space.
    budget_gb: float | None = None
    warmup_epochs: int = 0  # epochs that train only fixed subnets before sampling starts
    # Which subnets the warm-up trains (WARMUP_RULES): "lowest" (the lowest slots that fit),
    # "largest" (within the budget) or a "cover" of every slot; see budget_fit.
    warmup: str = "lowest"
    # Examples of the validation split (a fixed random subset) that score the reference
    # subnets after each epoch: a progress signal, not a ranking, so a third of the demo's
    # split is enough and saves most of a minute an epoch; None uses the whole split.
    reference_val_examples: int | None = 512
    # Where the frozen streams come from (feature_store.FEATURE_CACHE_MODES): auto, disk,
    # memory or off (recomputed every batch).
    feature_cache: str = "auto"
    cache_max_bytes: int = DEFAULT_SLOT_BYTES  # RAM for streams kept per slot, all splits


@dataclass
class SupernetRun:
    supernet: Supernet
    caches: dict[str, FeatureCache]
    metric: str
    metrics: dict
    val_slots: SlotCaches  # the validation streams entering each slot, for scoring subnets


def load_supernet_weights(supernet: Supernet, tensors: dict[str, torch.Tensor]) -> None:
    try:
        load_trainable_state(supernet, tensors)
    except ValueError as exc:
        raise AutopmfError(f"supernet weights do not match this space and encoder pair ({exc}); "
                           "use the space the run was made with, or a new --out") from None


def supernet_identity(space: SearchSpace, data_spec: str, cfg: SupernetConfig) -> dict:
    """What makes two supernet trainings the same run: the same space (encoders included),
    data and settings. `autopmf supernet` records it in config.yaml; a search's config is
    another run's."""
    return {"space": space.to_dict(), "data": data_spec, "settings": run_settings(cfg)}


def supernet_fingerprint(space: SearchSpace, data_spec: str, cfg: SupernetConfig) -> str:
    """What a supernet checkpoint may be resumed into, and a finished one reused as."""
    return fingerprint(supernet_identity(space, data_spec, cfg))


def budget_fit(space: SearchSpace, budget_gb: float | None, num_classes: int, device: str,
               warmup: str = "lowest"):
    """`sampler_restriction` of a budget of `budget_gb` GiB (None: no budget)."""
    return sampler_restriction(Budget.load(space, budget_gb, num_classes, device), warmup)


def sampler_restriction(budget: Budget, warmup: str = "lowest"):
    """(fit, largest, warmup subnets) for a sampler restricted to `budget`: the search's
    repair into the budget, the largest architecture within it, and the subnets the warm-up
    trains (`Budget.warmup`). Without a budget every subnet is allowed: fit and largest are
    None (the sampler then draws from the whole space, whose largest fuses every slot), and
    the warm-up rule picks among all subnets (the cover is then one subnet fusing every
    slot)."""
    warmup_archs = budget.warmup(warmup)
    if not budget.limited:
        return None, None, warmup_archs
    return budget.repair, budget.largest(), warmup_archs


def reference_examples(val: FeatureCache, cfg: SupernetConfig) -> FeatureCache:
    """The fixed validation examples the per-epoch reference scores are measured on."""
    n = cfg.reference_val_examples
    if n is None or n >= len(val):
        return val
    order = torch.randperm(len(val), generator=torch.Generator().manual_seed(cfg.seed))
    return val.subset(order[:n].sort().values)


def warmup_references(space: SearchSpace, references: dict, warmup_archs) -> dict:
    """The warm-up subnets named for the per-epoch validation record: by their reference
    name when one of the references is that subnet (the largest warm-up's), else "warmup"."""
    named = {}
    for i, arch in enumerate(warmup_archs):
        arch = space.canonical(arch)
        name = next((n for n, ref in references.items() if ref == arch), None)
        named[name or ("warmup" if len(warmup_archs) == 1 else f"warmup_{i}")] = arch
    return named


HEAD_FIT_SUBNETS = 6  # sampler draws the shared heads are fitted on (besides the warm-up's)
# Examples of each split per subnet. The demo's [CLS] features need thousands of examples for
# a good probe: on 512 the shared heads started a subnet at val 0.56 where the whole split's
# probe starts it at 0.72, and its supernet training never caught up (BENCHMARKS.md).
HEAD_FIT_EXAMPLES = 4096


# How many draws a few-shot supernet's head fit looks through for the subnets of each shot
# (a shot that the budget leaves no subnet keeps its initial heads).
HEAD_FIT_SEARCH_DRAWS = 2000


def shared_head_subnets(sampler: ArchSampler, supernet: Supernet | FewShotSupernet
                        ) -> list[tuple[Supernet, list]]:
    """Per shot (supernet.few_shot; one for a plain supernet), the subnets its heads are
    fitted on: the warm-up's, then the first HEAD_FIT_SUBNETS draws after it that train that
    shot (for a plain supernet, the sandwich's largest, smallest and random subnets), each
    once. Every shot needs several: heads fitted on one subnet gave the others in its shot
    losses near 4 that ten epochs did not bring below 1 (BENCHMARKS.md)."""
    warmup = [sampler.sample(step)
              for step in range(min(sampler.warmup_steps, len(sampler.warmup_archs)))]
    shots = supernet.all_shots()
    groups: list[dict[str, dict]] = [{} for _ in shots]
    drawn = [0] * len(shots)

    def shot_index(arch) -> int:
        routed = supernet.shot(arch)
        return next(i for i, shot in enumerate(shots) if shot is routed)

    for arch in warmup:
        groups[shot_index(arch)].setdefault(json.dumps(arch, sort_keys=True), arch)
    first = sampler.warmup_steps
    for step in range(first, first + HEAD_FIT_SEARCH_DRAWS):
        if min(drawn) >= HEAD_FIT_SUBNETS:
            break
        arch = sampler.sample(step)
        i = shot_index(arch)
        if drawn[i] < HEAD_FIT_SUBNETS:
            drawn[i] += 1
            groups[i].setdefault(json.dumps(arch, sort_keys=True), arch)
    return [(shot, list(group.values())) for shot, group in zip(shots, groups) if group]


def stage_head_subnets(sampler: ArchSampler, first: int) -> list:
    """Progressive shrinking's subnets to refit the shared heads on as a stage starts at step
    `first`: the largest, then the distinct subnets the stage draws first, HEAD_FIT_SUBNETS
    in all (a stage's first third of draws is the largest again and again, so distinct ones
    are counted)."""
    space = sampler.space
    chosen = {json.dumps(space.canonical(sampler.largest), sort_keys=True):
              space.canonical(sampler.largest)}
    for step in range(first, first + HEAD_FIT_SEARCH_DRAWS):
        if len(chosen) >= HEAD_FIT_SUBNETS:
            break
        arch = sampler.sample(step)
        chosen.setdefault(json.dumps(arch, sort_keys=True), arch)
    return list(chosen.values())


def fit_shared_heads(supernet: Supernet, archs: list, train: SlotCaches, val: SlotCaches,
                     cfg: SupernetConfig, num_classes: int, metric: str,
                     examples: int = HEAD_FIT_EXAMPLES) -> None:
    """`--head-init probe` for the supernet: its heads are shared, so they are one probe fitted
    on the [CLS] pairs of several subnets together (a fixed sample of examples each; `val`:
    the per-epoch reference examples, whose higher slots are built anyway). Fitted
    on one subnet alone, they gave every other subnet logits so far off that the first
    sandwich steps had losses near 10 and left every subnet at chance (BENCHMARKS.md).
    `examples`: of each split, per subnet."""
    lowest = supernet.lowest_fusable_slot
    rows = {name: probe_sample(slots.at(lowest), examples, cfg.seed)
            for name, slots in (("train", train), ("val", val))}

    def sources():  # one subnet's sample at a time: each is a copy of its rows
        for arch in archs:
            start = first_slot(supernet, arch)

            def features(cache, batch_rows, arch=arch):
                return supernet.features(cache.streams(batch_rows, cfg.device), cache.slot,
                                         arch)
            yield (features, train.at(start).subset(rows["train"]),
                   val.at(start).subset(rows["val"]))
    fit_heads_jointly(supernet.heads, sources(), num_classes, metric)


@dataclass
class SupernetSteps(LoopHooks):
    """The supernet's hooks in the one training loop (train.train_loop): each step trains the
    subnet the seeded sampler draws for it (the same on every rank), from the cached streams
    entering that subnet's first fused slot, and moves only the weights that subnet used;
    each epoch scores the reference subnets."""

    supernet: Supernet | FewShotSupernet
    model: torch.nn.Module  # the supernet, or its DistributedDataParallel wrapper
    sampler: ArchSampler
    train: SlotCaches
    reference_val: SlotCaches
    references: dict
    warmup_refs: dict  # the references a warm-up epoch scores
    cfg: SupernetConfig
    num_classes: int
    metric: str
    arch: dict | None = None  # the subnet of the current step
    teacher: torch.Tensor | None = None  # with `distill`: the largest's logits this step

    def start(self) -> None:
        # An untrained supernet (no epochs) is scored with a probe per candidate; shared heads
        # that no step will train would cost minutes for nothing (the search refuses
        # heads-scoring of such a supernet).
        if self.cfg.head_init == "probe" and self.cfg.epochs > 0:
            # A few-shot supernet's shots share the examples out: its fit costs what one
            # supernet's does.
            groups = shared_head_subnets(self.sampler, self.supernet)
            examples = HEAD_FIT_EXAMPLES // len(self.supernet.all_shots())
            for shot, archs in groups:
                fit_shared_heads(shot, archs, self.train, self.reference_val, self.cfg,
                                 self.num_classes, self.metric, examples)

    def order(self, epoch: int) -> torch.Tensor:
        # The order depends only on (seed, epoch), so a resumed epoch sees the same batches.
        n = len(self.train.at(self.supernet.lowest_fusable_slot))
        return torch.randperm(n, generator=torch.Generator().manual_seed(
            self.cfg.seed * 100_003 + epoch))

    def forward(self, step: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.starts_a_stage(step):
            self.refit_heads(step)
        self.arch = arch = self.sampler.sample(step)
        # Skip the frozen slots below this subnet's first fusion.
        cache = self.train.at(first_slot(self.supernet, arch))
        # Warm-up steps train on the labels: the teacher has not trained yet.
        self.teacher = (self.teacher_logits(arch, rows)
                        if step >= self.sampler.warmup_steps else None)
        return (self.model(cache.streams(rows, self.cfg.device), cache.slot, arch),
                cache.labels[rows])

    def starts_a_stage(self, step: int) -> bool:
        """Whether `step` begins a later stage of progressive shrinking (with fitted heads)."""
        return (self.sampler.rule == "progressive" and self.cfg.head_init == "probe"
                and step > self.sampler.warmup_steps
                and self.sampler.stage(step) != self.sampler.stage(step - 1))

    def refit_heads(self, step: int) -> None:
        """Refit the shared heads on the stage's subnets as it starts: fitted on the largest
        alone, they gave the shorter prompts' subnets of the next stage losses near 8, whose
        steps undid what the largest had learnt (val 0.74 -> 0.53, BENCHMARKS.md). The
        refit is a function of the weights and the step, so a resumed run repeats it."""
        archs = stage_head_subnets(self.sampler, step)
        self.supernet.eval()
        fit_shared_heads(self.supernet, archs, self.train, self.reference_val, self.cfg,
                         self.num_classes, self.metric)
        self.supernet.train()

    @functools.cached_property
    def teacher_arch(self) -> dict | None:
        """With `distill`, the teacher: the largest subnet (canonical), fixed for the run."""
        return self.supernet.space.canonical(self.sampler.largest) if self.cfg.distill else None

    def teacher_logits(self, arch: dict, rows: torch.Tensor) -> torch.Tensor | None:
        """With `distill`, the largest subnet's logits on this step's rows (no gradient), when
        the step trains another subnet; else None."""
        largest = self.teacher_arch
        if largest is None or self.supernet.space.canonical(arch) == largest:
            return None
        cache = self.train.at(first_slot(self.supernet, largest))
        with torch.no_grad():  # the bare supernet: nothing for DDP to synchronise
            return self.supernet(cache.streams(rows, self.cfg.device), cache.slot, largest)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, metric: str) -> torch.Tensor:
        if self.teacher is None:
            return super().loss(logits, labels, metric)
        return distillation_loss(logits, self.teacher, labels)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        step_used_only(optimizer, self.supernet, self.supernet.used_regions(self.arch))

    def validate(self, epoch: int, loss: float, seconds: float) -> tuple[dict, str]:
        # A warm-up epoch trains only the warm-up subnets: validating the others then would
        # cost a full pass each and show nothing new.
        validated = self.warmup_refs if epoch < self.cfg.warmup_epochs else self.references
        # Through the shared heads: the supernet's own progress, as it trains.
        scores = {name: heads_score(self.supernet, arch, self.reference_val, self.cfg,
                                    self.metric)
                  for name, arch in validated.items()}
        shown = "  ".join(f"{k} {v:.3f}" for k, v in scores.items())
        return ({"epoch": epoch + 1, "loss": loss, "seconds": seconds, "val": scores},
                f"val {self.metric}: {shown}")


# The sampling rules that train the budget's largest subnet often enough to teach the others.
DISTILL_SAMPLING = ("sandwich", "progressive")


def check_supernet_settings(cfg: SupernetConfig, space: SearchSpace) -> None:
    """Refuse settings that cannot train, before a run folder is claimed."""
    try:
        split_slot(cfg.few_shot, space)
    except ValueError as exc:
        raise AutopmfError(f"--few-shot: {exc}") from None
    if cfg.sampling == "progressive" and cfg.few_shot != "none":
        # Its stages shrink one largest subnet, which lies in one shot only.
        raise AutopmfError(f"--sampling progressive shrinks one supernet's largest subnet; "
                           f"--few-shot {cfg.few_shot} splits the supernet, so use "
                           "--few-shot none or another --sampling")
    if cfg.distill and cfg.sampling not in DISTILL_SAMPLING:
        # Only these train the teacher (the budget's largest) on the labels.
        raise AutopmfError(f"--distill needs --sampling sandwich or progressive, which train "
                           f"the largest subnet on the labels in every third step; --sampling "
                           f"{cfg.sampling} rarely draws it, so the other subnets would learn "
                           "an untrained teacher; add --no-distill (the demo distils by "
                           "default) or use --sampling sandwich")


@holds_run_lock
def train_supernet(space: SearchSpace, data_spec: str, out: Path, cfg: SupernetConfig,
                   resume: bool = False, force: bool = False) -> SupernetRun:
    """`autopmf supernet`: train the supernet into the run folder `out`, claimed like every
    run folder (run_dir.claim_run_dir). `resume` continues an interrupted training, or
    returns a finished one; `force` replaces the run in `out`."""
    check_supernet_settings(cfg, space)
    claim = claim_run_dir(out, supernet_identity(space, data_spec, cfg), resume=resume,
                          force=force, what="supernet", outputs=(WEIGHTS, METRICS),
                          finished=METRICS)
    return supernet_of_run(space, data_spec, out, cfg, resume=resume and not force,
                           start=claim.start)


@holds_run_lock
def supernet_of_run(space: SearchSpace, data_spec: str, out: Path, cfg: SupernetConfig,
                    resume: bool = True, start: Callable[[], None] | None = None,
                    budget: Budget | None = None) -> SupernetRun:
    """The supernet of the run folder `out`, which the caller has claimed: a finished one
    as it is (with `resume`), else trained, from its newest checkpoint when `resume`.
    `start`: the claim's start, called once every input has been checked, before anything
    is written. `budget`: cfg.budget_gb's, when the caller has built it already."""
    dist = init_distributed(cfg.device)
    cfg.device = dist.device
    out = Path(out)
    run_fingerprint = supernet_fingerprint(space, data_spec, cfg)
    finished = resume and (out / METRICS).exists()
    if finished:
        check_fingerprint(out / METRICS,
                          json.loads((out / METRICS).read_text()).get("fingerprint"),
                          run_fingerprint)
    started = time.perf_counter()
    dataset = load_dataset(data_spec, seed=cfg.split_seed, image_size=space.image_size)
    if dist.is_main:
        announce_data(dataset)
    backbone = build_backbone(space).to(cfg.device)
    if dist.is_main:
        announce_encoders(space, backbone)
    torch.manual_seed(cfg.seed)
    num_classes = len(dataset.label_names)
    supernet = build_supernet(space, backbone, num_classes, cfg.few_shot).to(cfg.device)

    slot = supernet.lowest_fusable_slot
    if dist.is_main:  # rank 0 fills the disk cache; the others then read it
        caches = feature_caches(space, dataset, backbone, slot, cfg.device, cfg.feature_cache,
                                cfg.precision)
    dist.barrier()
    if not dist.is_main:
        caches = feature_caches(space, dataset, backbone, slot, cfg.device, cfg.feature_cache,
                                cfg.precision)
    cache_seconds = time.perf_counter() - started
    ram = RamBudget(cfg.cache_max_bytes)  # every split's advanced slots together
    val_slots = SlotCaches(caches["val"], backbone, ram)
    reference_val = SlotCaches(reference_examples(caches["val"], cfg), backbone, ram)

    if finished:
        load_supernet_weights(supernet, load_tensors(out / WEIGHTS))
        return SupernetRun(supernet, caches, dataset.metric,
                           json.loads((out / METRICS).read_text()), val_slots)

    initialise_supernet(supernet, caches["train"], cfg.prompt_init, cfg.seed, cfg.device)
    # Full global batches only: distributed ranks stay in step.
    steps = batches_per_epoch(len(caches["train"]), cfg.batch_size, full_only=True)
    train_slots = SlotCaches(caches["train"], backbone, ram)
    model = supernet
    if dist.active:
        model = torch.nn.parallel.DistributedDataParallel(supernet, find_unused_parameters=True)
    if budget is None:
        budget = Budget.load(space, cfg.budget_gb, num_classes, cfg.device)
    elif budget.limit_bytes != (None if cfg.budget_gb is None else int(cfg.budget_gb * GIB)):
        raise ValueError(f"the budget given is not the supernet's {cfg.budget_gb} GiB")
    if dist.is_main and cfg.budget_gb is not None:
        announce_budget(budget, cfg.budget_gb)
    fit, largest, warmup_archs = sampler_restriction(budget, cfg.warmup)
    sampler = ArchSampler(space, cfg.sampling, cfg.seed, fit=fit, largest=largest,
                          warmup_steps=cfg.warmup_epochs * steps, warmup_archs=warmup_archs,
                          total_steps=cfg.epochs * steps)
    # Drawn ahead (sampling is a pure function of the step): which first and last fused
    # slots the training will reach, and how often.
    shares = steps_by_edge_slot(sampler, range(sampler.warmup_steps, cfg.epochs * steps))
    if dist.is_main:
        announce_slot_shares(shares)
    references = reference_subnets(space, cfg.seed, fit=fit, largest=largest)
    warmup_refs = (warmup_references(space, references, sampler.warmup_archs)
                   if cfg.warmup_epochs else {})
    references.update(warmup_refs)
    checkpoints = EpochCheckpoints(out, run_fingerprint, resume)
    checkpoints.check()
    if start is not None and dist.is_main:
        start()  # every input checked: the run folder is ours now
    hooks = SupernetSteps(supernet, model, sampler, train_slots, reference_val,
                          references, warmup_refs, cfg, num_classes, dataset.metric)
    history = train_loop(supernet, hooks, cfg, dataset.metric, steps, checkpoints, "supernet",
                         dist)

    metrics = {"data": data_spec, "metric": dataset.metric, "num_classes": num_classes,
               "space": space.to_dict(), "config": asdict(cfg), "references": references,
               "history": history, "steps_per_epoch": steps, "steps_by_slot": shares,
               "world_size": dist.world_size,
               "fingerprint": run_fingerprint, "versions": package_versions(),
               "seconds": {"feature_cache": cache_seconds,
                           "total": time.perf_counter() - started}}
    if dist.is_main:
        save_tensors(out / WEIGHTS, supernet.trainable_state_dict())
        atomic_write_json(out / METRICS, metrics)  # last: marks the supernet as done
    dist.barrier()
    return SupernetRun(supernet, caches, dataset.metric, metrics, val_slots)
