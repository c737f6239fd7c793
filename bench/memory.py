"""Numbers of the training-memory model for BENCHMARKS.md (prints markdown).

    python bench/memory.py                      # (a) demo table, (b) throughput, (c) paper
    python bench/memory.py --measure-paper      # + a real CPU step of the paper's PMF design
    python bench/memory.py --demo-precision bf16 --skip-paper   # (a) under bf16 autocast

(a) `autopmf measure --space demo --samples 20 --json`: predicted vs measured peak of a real
    training step for 20 stratified random architectures of the demo space, on CPU.
(b) Estimator throughput on the demo profile.
(c) The PMF paper's setting (BERT-base + ViT-B/16 at 224 px, batch 32, random weights of the
    published shapes; search_spaces/paper_bert_vitb16.yaml): predicted peak of full
    fine-tuning, of the PMF reference design, and of the smallest and largest architectures,
    fp32 and bf16, CUDA (predicted only) and CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autopmf.build import build_backbone  # noqa: E402
from autopmf.memory import (build_profile, estimate_bytes, max_memory_arch,  # noqa: E402
                            min_memory_arch)
from autopmf.memory.cli import compare, describe, stratified_sample  # noqa: E402
from autopmf.memory.measure import (measure_full_finetune_bytes,  # noqa: E402
                                    measure_peak_bytes)
from autopmf.space import load_space  # noqa: E402

MIB, GIB = 2**20, 2**30
# The authors' code (yaoweilee/PMF, PMF.py) defaults: the top 2 layers fuse, QP = QCP = FCP = 4,
# mapping hidden max(d)/2 = 384; 101 classes (UPMC Food-101).
PAPER_REFERENCE = (2, 4)
PAPER_CLASSES = 101


def demo_table(samples: int, seed: int, precision: str) -> None:
    space = dataclasses.replace(load_space("demo"), precision=precision)
    report = compare(space, stratified_sample(space, samples, seed), "cpu")
    flag = "" if precision == "fp32" else f" (demo.yaml with precision: {precision})"
    print(f"### (a) Predicted vs measured, demo space on CPU, {precision}\n\n"
          f"`autopmf measure --space demo --samples {samples} --seed {seed} --json --device cpu"
          f" --threads 1`{flag} (space: {space.text_encoder} + {space.image_encoder}, batch "
          f"{space.batch_size}, text {space.max_text_len} tokens, {space.image_size} px, "
          f"{space.precision})\n")
    print("| # | fused slot:M | predicted MiB | measured MiB | error |")
    print("|---|---|---|---|---|")
    for i, row in enumerate(report["results"], 1):
        print(f"| {i} | {describe(space, row['arch'])} | {row['predicted_bytes'] / MIB:.2f} | "
              f"{row['measured_bytes'] / MIB:.2f} | {row['rel_err']:+.3%} |")
    s = report["summary"]
    print(f"\nn = {s['n']}, median |error| {s['median_rel_err']:.3%}, max |error| "
          f"{s['max_rel_err']:.3%} (target: median <= 3%, max <= 8%)\n")
    backbone = build_backbone(space)
    predicted = report["full_finetune_predicted_bytes"]
    measured = measure_full_finetune_bytes(space, backbone)
    print(f"Full fine-tuning of the same encoders (every weight trained): predicted "
          f"{predicted / MIB:.2f} MiB, measured {measured / MIB:.2f} MiB "
          f"({(predicted - measured) / measured:+.3%}).\n")


def throughput(n: int = 20000) -> None:
    space = load_space("demo")
    backbone = build_backbone(space)
    started = time.perf_counter()
    profile = build_profile(space, backbone, "cpu")
    build_seconds = time.perf_counter() - started
    rng = random.Random(0)
    archs = [space.random_arch(rng) for _ in range(n)]
    started = time.perf_counter()
    for arch in archs:
        estimate_bytes(space, arch, profile)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    min_memory_arch(space, profile)
    min_seconds = time.perf_counter() - started
    print(f"### (b) Estimator throughput\n\n{n} random demo architectures in {seconds:.2f} s: "
          f"**{n / seconds:,.0f} architectures/s** ({seconds / n * 1e6:.0f} µs each, one "
          f"thread); `min_memory_arch` {min_seconds * 1e3:.1f} ms. Building the demo profile "
          f"(once per setting, then cached): {build_seconds:.1f} s.\n")


def paper_setting(measure: bool) -> None:
    base = load_space("paper_bert_vitb16")
    backbone = build_backbone(base)
    print(f"### (c) The PMF paper's setting (predicted)\n\n{base.text_encoder} + "
          f"{base.image_encoder} (random weights of the published shapes), batch "
          f"{base.batch_size}, text {base.max_text_len} tokens, {base.image_size} px, "
          f"{PAPER_CLASSES} classes, AdamW; PMF reference = top {PAPER_REFERENCE[0]} slots "
          f"fused, QP = QCP = FCP = {PAPER_REFERENCE[1]}. GiB.\n")
    rows: dict[str, list[str]] = {"full fine-tuning (all weights trained)": [],
                                  "PMF reference (top 2 fused, M = 4)": [],
                                  "smallest architecture (nothing fused)": [],
                                  "largest architecture (12 fused, M = 16)": [],
                                  "PMF reference saving vs fine-tuning": []}
    columns = []
    for device in ("cuda", "cpu"):
        for precision in ("fp32", "bf16"):
            space = dataclasses.replace(base, precision=precision)
            started = time.perf_counter()
            profile = build_profile(space, backbone, device, PAPER_CLASSES)
            columns.append(f"{device} {precision} (profile {time.perf_counter() - started:.0f}"
                           " s)")
            reference = estimate_bytes(space, space.reference_arch(*PAPER_REFERENCE), profile)
            values = [profile.full_finetune, reference, min_memory_arch(space, profile)[1],
                      max_memory_arch(space, profile)[1]]
            for name, value in zip(rows, values):
                rows[name].append(f"{value / GIB:.2f}")
            rows["PMF reference saving vs fine-tuning"].append(
                f"{1 - reference / profile.full_finetune:.0%}")
    print("| | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(values) + " |")
    print()
    if measure:
        space = dataclasses.replace(base, precision="fp32")
        arch = space.reference_arch(*PAPER_REFERENCE)
        predicted = estimate_bytes(space, arch, build_profile(space, backbone, "cpu",
                                                              PAPER_CLASSES))
        started = time.perf_counter()
        measured = measure_peak_bytes(space, arch, backbone, "cpu", PAPER_CLASSES)
        print(f"Measured on CPU, fp32, PMF reference: {measured / GIB:.3f} GiB vs predicted "
              f"{predicted / GIB:.3f} GiB ({(predicted - measured) / measured:+.3%}; two real "
              f"steps in {time.perf_counter() - started:.0f} s).\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--demo-precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--measure-paper", action="store_true",
                        help="also measure the paper's PMF reference on CPU (minutes, ~4 GiB)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if not args.skip_demo:
        demo_table(args.samples, args.seed, args.demo_precision)
        throughput()
    if not args.skip_paper:
        paper_setting(args.measure_paper)


if __name__ == "__main__":
    main()
