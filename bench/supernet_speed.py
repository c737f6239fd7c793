"""Supernet training steps per second: with the frozen-feature cache vs. without it.

Without the cache every step runs the frozen encoders from the raw inputs (embeddings and all
layers below the subnet's first fused slot, under no_grad); with it, a step starts from the
cached streams at that slot. Both run the same subnets (sandwich rule, same seed) on the same
batches, with the same optimizer step.

    python bench/supernet_speed.py --space demo --steps 30 --threads 2
    python bench/supernet_speed.py --space demo --steps 30 --threads 2 --budget-gb 0.3

`--budget-gb` samples as `autopmf search` trains its supernet by default: every subnet
repaired into the budget (fewer, higher fused slots: more of each step is frozen prefix).
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
from autopmf.space import load_space
from autopmf.supernet_train import budget_fit
from supernet.optim import step_used_only
from supernet.sampling import ArchSampler
from supernet.supernet import Supernet


def time_steps(supernet, sampler, steps, batch_size, n, forward) -> float:
    optimizer = torch.optim.AdamW([p for p in supernet.parameters() if p.requires_grad],
                                  lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    started = None
    for step in range(steps + 2):
        if step == 2:  # two warm-up steps (allocator, AdamW state)
            started = time.perf_counter()
        arch = sampler.sample(step)
        rows = torch.randint(0, n, (batch_size,), generator=gen)
        logits, labels = forward(rows, arch)
        loss = loss_fn("accuracy", logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        step_used_only(optimizer, supernet, supernet.used_regions(arch))
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--space", default="demo")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget-gb", type=float, default=None,
                        help="sample only subnets repaired into this budget")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    dataset = load_dataset(args.data)
    backbone = build_backbone(space)
    torch.manual_seed(0)
    supernet = Supernet(space, backbone, len(dataset.label_names))
    fit, largest, _ = budget_fit(space, args.budget_gb, len(dataset.label_names), "cpu")
    sampler = ArchSampler(space, "sandwich", seed=0, fit=fit, largest=largest)
    encoded = encode_split(dataset.train, backbone, space)
    t0 = time.perf_counter()
    lowest = feature_caches(space, dataset, backbone, supernet.lowest_fusable_slot,
                            use_disk=False)["train"]
    slots = SlotCaches(lowest, backbone)
    for slot in space.fusable_slots:
        slots.at(slot)
    cache_seconds = time.perf_counter() - t0

    def uncached(rows, arch):
        batch = encoded.batch(rows)
        return supernet.forward_batch(batch, arch), batch["labels"]

    def cached(rows, arch):
        start = min(space.fused_slots(arch), default=backbone.num_slots)
        cache = slots.at(start)
        return supernet(cache.streams(rows), cache.slot, arch), cache.labels[rows]

    without = time_steps(supernet, sampler, args.steps, space.batch_size, len(lowest),
                         uncached)
    with_cache = time_steps(supernet, sampler, args.steps, space.batch_size, len(lowest),
                            cached)
    print(json.dumps({"space": args.space, "threads": args.threads, "steps": args.steps,
                      "budget_gb": args.budget_gb,
                      "batch_size": space.batch_size,
                      "steps_per_s_without_cache": round(without, 3),
                      "steps_per_s_with_cache": round(with_cache, 3),
                      "speedup": round(with_cache / without, 2),
                      "cache_build_seconds": round(cache_seconds, 1)}))


if __name__ == "__main__":
    main()
