"""The GPU check (issue 19): predicted against measured CUDA peak training memory, and supernet
steps/s with and without the frozen-feature cache, for the demo and the paper space, fp32 and
bf16. Prepared to run at once on a lent GPU (one H100: at most 8 minutes).

    python bench/gpu_check.py --out /tmp/gpu_check                  # on the GPU
    python bench/gpu_check.py --device cpu --dry-run --out DIR      # CI: tiny, on the CPU

Needs torch, transformers and timm only, as the GPU machine has: no nni, no packaged weights.
Encoders are random weights of each space's shapes (`random:minilm` + `random:dinov2-small`
for the demo; the paper space's are random already); memory and speed do not depend on the
values. Memory: `autopmf measure`'s comparison (`compare`: estimator against a real step,
`torch.cuda.max_memory_allocated` on CUDA, the profiler's record on CPU) for designs drawn by
`stratified_sample` with seed 0: 20 of the demo space, 10 of the paper space. Speed:
bench/supernet_speed.py's `speed_rows` on synthetic data (random pixels and words), the
sandwich mix over the whole space and its smallest and largest subnet alone.

Writes OUT/gpu_check.json and OUT/gpu_check.md and prints the markdown. A part that fails is
recorded with its error and the others still run; parts not started within `--time-limit-s`
are recorded as skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from autopmf.build import build_backbone  # noqa: E402
from autopmf.data.types import Dataset, Split  # noqa: E402
from autopmf.memory.cli import compare, describe, stratified_sample  # noqa: E402
from autopmf.space import SearchSpace, load_space  # noqa: E402
from supernet_speed import speed_rows  # noqa: E402

MIB = 2**20
SEED = 0
PRECISIONS = ("fp32", "bf16")
# (space, designs measured, image size of the dry run: 2x2 patches)
SPACES = (("demo", 20, 28), ("paper_bert_vitb16", 10, 32))
# Encoders whose weights ship in packages the GPU machine lacks -> random weights, same shapes.
RANDOM_SAME_SHAPE = {"minilm": "random:minilm", "dinov2-small": "random:dinov2-small"}
SPEED_STEPS, SPEED_EXAMPLES = 20, 256


def gpu_space(name: str, dry_run: bool, dry_image_size: int) -> SearchSpace:
    space = load_space(name)
    space = dataclasses.replace(
        space, text_encoder=RANDOM_SAME_SHAPE.get(space.text_encoder, space.text_encoder),
        image_encoder=RANDOM_SAME_SHAPE.get(space.image_encoder, space.image_encoder))
    if dry_run:  # the same encoders, the smallest setting: seconds on a CPU
        space = dataclasses.replace(space, batch_size=2, max_text_len=8,
                                    image_size=dry_image_size,
                                    prompt_lengths=space.prompt_lengths[:1])
    return space


def synthetic_dataset(space: SearchSpace, n: int, seed: int = SEED) -> Dataset:
    """Random pixels and words at the space's image size, two classes (speed only)."""
    rng = np.random.default_rng(seed)

    def split(size: int) -> Split:
        s = space.image_size
        texts = [" ".join(rng.choice(["red", "dish", "with", "a", "bowl", "of", "soup"], 6))
                 for _ in range(size)]
        return Split(rng.integers(0, 256, (size, s, s, 3), dtype=np.uint8),
                     np.arange(size, dtype=np.int64), texts,
                     rng.integers(0, 2, size).astype(np.int64))

    return Dataset("synthetic", split(n), split(space.batch_size), split(space.batch_size),
                   ["no", "yes"])


def memory_rows(space: SearchSpace, designs: int, backbone, device: str) -> tuple[list, dict]:
    report = compare(space, stratified_sample(space, designs, SEED), device,
                     backbone=backbone)
    rows = [{"space": space.name, "precision": space.precision,
             "design": describe(space, r["arch"]),
             "predicted_mib": round(r["predicted_bytes"] / MIB, 2),
             "measured_mib": round(r["measured_bytes"] / MIB, 2),
             "rel_err": round(r["rel_err"], 5), "arch": r["arch"]}
            for r in report["results"]]
    errors = [abs(r["rel_err"]) for r in rows]
    summary = {"space": space.name, "precision": space.precision, "n": len(rows),
               "median_abs_rel_err": round(statistics.median(errors), 5),
               "max_abs_rel_err": round(max(errors), 5),
               "profile_seconds": report["profile_seconds"]}
    return rows, summary


class Parts:
    """Runs the check's parts in order: each failure is recorded and the rest still run;
    parts not started within `limit_s` of the first are skipped."""

    def __init__(self, limit_s: float):
        self.started, self.limit_s = time.perf_counter(), limit_s
        self.log: list[dict] = []

    def run(self, name: str, fn) -> object:
        elapsed = time.perf_counter() - self.started
        if elapsed > self.limit_s:
            self.log.append({"part": name, "status": f"skipped at {elapsed:.0f} s"})
            return None
        t0 = time.perf_counter()
        try:
            result = fn()
            self.log.append({"part": name, "status": "ok",
                             "seconds": round(time.perf_counter() - t0, 1)})
            return result
        except Exception as exc:  # recorded: a lent device's minutes are not to be wasted
            traceback.print_exc()
            self.log.append({"part": name, "status": f"error: {type(exc).__name__}: {exc}"[:500],
                             "seconds": round(time.perf_counter() - t0, 1)})
            return None


def check_space(parts: Parts, name: str, designs: int, dry_image_size: int, device: str,
                dry_run: bool, result: dict) -> None:
    """Memory in both precisions, then speed: no other tensor may be on the device while a
    memory is measured, so the supernets and caches of the speed runs come after."""
    base = gpu_space(name, dry_run, dry_image_size)
    backbone = parts.run(f"{name}: build encoders", lambda: build_backbone(base).to(device))
    if backbone is None:
        return
    for precision in PRECISIONS:
        space = dataclasses.replace(base, precision=precision)
        rows = parts.run(f"{name} {precision}: memory", lambda: memory_rows(
            space, 2 if dry_run else designs, backbone, device))
        if rows:
            result["memory"] += rows[0]
            result["memory_summary"].append(rows[1])
    for precision in PRECISIONS:
        space = dataclasses.replace(base, precision=precision)
        data = synthetic_dataset(space, 2 * space.batch_size if dry_run else SPEED_EXAMPLES)
        steps = 1 if dry_run else SPEED_STEPS

        def speed():
            mixes = speed_rows(space, data, backbone, steps, device=device)
            if not dry_run:  # and its smallest and largest subnet alone
                mixes += speed_rows(space, data, backbone, steps, per_subnet=True,
                                    device=device)
            return mixes

        result["speed"] += parts.run(f"{name} {precision}: supernet speed", speed) or []


def check(device: str, dry_run: bool, limit_s: float) -> dict:
    parts = Parts(limit_s)
    result = {"device": device_name(device), "torch": torch.__version__,
              "python": platform.python_version(), "date": datetime.date.today().isoformat(),
              "dry_run": dry_run, "seed": SEED, "threads": torch.get_num_threads(),
              "memory_summary": [], "memory": [], "speed": []}
    for name, designs, dry_image_size in SPACES:
        check_space(parts, name, designs, dry_image_size, device, dry_run, result)
        gc.collect()  # the space's encoders, supernets and caches leave the device
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return {**result, "seconds": round(time.perf_counter() - parts.started, 1),
            "parts": parts.log}


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.machine()})"


def markdown(result: dict) -> str:
    lines = [f"GPU check on {result['device']}, torch {result['torch']}, {result['date']}"
             f"{' (dry run)' if result['dry_run'] else ''}: {result['seconds']:.0f} s.", "",
             "| space | precision | n | median abs. error | max abs. error |",
             "|---|---|---|---|---|"]
    lines += [f"| {s['space']} | {s['precision']} | {s['n']} | {s['median_abs_rel_err']:.2%} | "
              f"{s['max_abs_rel_err']:.2%} |" for s in result["memory_summary"]]
    lines += ["", "| space | precision | fused slot:M | predicted MiB | measured MiB | error |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['space']} | {r['precision']} | {r['design']} | {r['predicted_mib']:.2f} | "
              f"{r['measured_mib']:.2f} | {r['rel_err']:+.3%} |" for r in result["memory"]]
    lines += ["", "| space | precision | subnets | steps/s without cache | steps/s with cache | "
              "speedup |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['space']} | {r['precision']} | {r['subnets']}"
              f"{' (' + r['arch'] + ')' if r['arch'] else ''} | {r['steps_per_s_without_cache']} | "
              f"{r['steps_per_s_with_cache']} | {r['speedup']}x |" for r in result["speed"]]
    failed = [p for p in result["parts"] if p["status"] != "ok"]
    if failed:
        lines += ["", "Parts not done: " + "; ".join(f"{p['part']}: {p['status']}"
                                                     for p in failed)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True,
                        help="folder for the JSON and the markdown")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny: two designs per space and precision, one timed step")
    parser.add_argument("--time-limit-s", type=float, default=360.0,
                        help="start no part after this many seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result = check(args.device, args.dry_run, args.time_limit_s)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (args.out / "gpu_check.md").write_text(table)
    print(table, flush=True)


if __name__ == "__main__":
    main()
