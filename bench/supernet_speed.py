"""Supernet training steps per second: with the frozen-feature cache vs. without it.

Without the cache every step runs the frozen encoders from the raw inputs (embeddings and all
layers below the subnet's first fused slot, under no_grad); with it, a step starts from the
cached streams at that slot. Both run the same subnets on the same batches, with the same
optimizer step, in alternating blocks of steps (so a job running beside the benchmark slows
both alike).

    python bench/supernet_speed.py --space demo --steps 30 --threads 1
    python bench/supernet_speed.py --space demo --steps 30 --threads 1 --budget-gb 0.285
    python bench/supernet_speed.py --space demo --steps 20 --threads 1 --budget-gb 0.285 \
        --per-subnet

`--budget-gb` samples as `autopmf search` trains its supernet by default: every subnet
repaired into the budget (fewer, higher fused slots: more of each step is frozen prefix).
`--per-subnet` times fixed subnets one by one instead of the sandwich mix: the smallest one
(only the top slot fused, shortest prompts) skips the most frozen layers and runs the fewest
trainable ones. A mix's speedup (summed uncached over summed cached step time) is never above
that of its best subnet. Steps run under autocast in the space's precision, as supernet
training runs them; `speed_rows` is also what bench/gpu_check.py runs on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from autopmf.build import build_backbone
from autopmf.data.registry import load_dataset
from autopmf.feature_store import feature_caches
from autopmf.features import SlotCaches, encode_split
from autopmf.metrics import loss_fn
from autopmf.report import describe_arch
from autopmf.space import load_space
from autopmf.supernet_train import budget_fit
from autopmf.train import autocast
from supernet.optim import step_used_only
from supernet.sampling import ArchSampler, largest_arch, smallest_arch
from supernet.supernet import Supernet

WARMUP_STEPS = 2  # per path, untimed: allocator, AdamW state
BLOCK = 5  # steps of one path before switching to the other


def steps_per_second(supernet, paths: dict, draw, steps: int, batch_size: int, n: int,
                     precision: str = "fp32", device: str = "cpu") -> dict[str, float]:
    """Steps/s of each path (name -> forward(rows, arch) -> (logits, labels)); step i of every
    path trains subnet draw(i) on the same batch, under autocast as supernet training runs."""
    optimizer = torch.optim.AdamW([p for p in supernet.parameters() if p.requires_grad],
                                  lr=1e-3)
    batches = torch.randint(0, n, (steps + WARMUP_STEPS, batch_size),
                            generator=torch.Generator().manual_seed(0))
    cuda = torch.device(device).type == "cuda"

    def run(forward, step):
        arch = draw(step)
        with autocast(precision, device):
            logits, labels = forward(batches[step], arch)
        loss = loss_fn("accuracy", logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step_used_only(optimizer, supernet, supernet.used_regions(arch))

    def now():
        if cuda:  # the GPU runs ahead of the host: time what it has done
            torch.cuda.synchronize(device)
        return time.perf_counter()

    for forward in paths.values():
        for step in range(WARMUP_STEPS):
            run(forward, step)
    seconds = dict.fromkeys(paths, 0.0)
    for first in range(WARMUP_STEPS, steps + WARMUP_STEPS, BLOCK):
        block = range(first, min(first + BLOCK, steps + WARMUP_STEPS))
        for name, forward in paths.items():
            started = now()
            for step in block:
                run(forward, step)
            seconds[name] += now() - started
    return {name: steps / s for name, s in seconds.items()}


def speed_rows(space, dataset, backbone, steps: int, budget_gb: float | None = None,
               per_subnet: bool = False, device: str = "cpu") -> list[dict]:
    """One row per subnet mix (the sandwich, or each fixed subnet under `per_subnet`): steps/s
    without and with the cache, in the space's precision, on `device` (the backbone must
    already be there)."""
    num_classes = len(dataset.label_names)
    torch.manual_seed(0)
    supernet = Supernet(space, backbone, num_classes).to(device)
    fit, largest, _ = budget_fit(space, budget_gb, num_classes, device)
    encoded = encode_split(dataset.train, backbone, space)
    t0 = time.perf_counter()
    lowest = feature_caches(space, dataset, backbone, supernet.lowest_fusable_slot, device,
                            mode="memory")["train"]
    slots = SlotCaches(lowest, backbone)
    for slot in space.fusable_slots:
        slots.at(slot)
    cache_seconds = time.perf_counter() - t0

    def uncached(rows, arch):
        batch = {k: v.to(device) for k, v in encoded.batch(rows).items()}
        return supernet.forward_batch(batch, arch), batch["labels"]

    def cached(rows, arch):
        start = min(space.fused_slots(arch), default=backbone.num_slots)
        cache = slots.at(start)
        return (supernet(cache.streams(rows, device), cache.slot, arch),
                cache.labels[rows].to(device))

    paths = {"without_cache": uncached, "with_cache": cached}
    if per_subnet:
        subnets = {"smallest": smallest_arch(space), "largest": largest_arch(space)}
        if largest is not None:
            subnets["largest_within_budget"] = largest
        draws = {name: (lambda step, arch=space.canonical(arch): arch)
                 for name, arch in subnets.items()}
    else:
        sampler = ArchSampler(space, "sandwich", seed=0, fit=fit, largest=largest)
        draws = {"sandwich": sampler.sample}
    rows = []
    for name, draw in draws.items():
        rates = steps_per_second(supernet, paths, draw, steps, space.batch_size, len(lowest),
                                 space.precision, device)
        rows.append({"space": space.name, "subnets": name,
                     "arch": describe_arch(draw(0)) if per_subnet else None,
                     "device": device, "precision": space.precision, "steps": steps,
                     "budget_gb": budget_gb, "batch_size": space.batch_size,
                     "steps_per_s_without_cache": round(rates["without_cache"], 3),
                     "steps_per_s_with_cache": round(rates["with_cache"], 3),
                     "speedup": round(rates["with_cache"] / rates["without_cache"], 2),
                     "cache_build_seconds": round(cache_seconds, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", default="demo")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-gb", type=float, default=None,
                        help="sample only subnets repaired into this budget")
    parser.add_argument("--per-subnet", action="store_true",
                        help="time fixed subnets (smallest, largest within the budget, "
                        "largest) one by one instead of the sandwich mix")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    dataset = load_dataset(args.data, image_size=space.image_size)
    for row in speed_rows(space, dataset, build_backbone(space), args.steps, args.budget_gb,
                          args.per_subnet):
        print(json.dumps({**row, "space": args.space, "threads": args.threads}), flush=True)


if __name__ == "__main__":
    main()
