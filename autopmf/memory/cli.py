"""`autopmf measure`: predicted vs measured peak training-step memory per architecture."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time

from autopmf.space import Architecture, SearchSpace

MIB = 2**20


def add_measure_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "measure", help="predicted vs measured peak memory of training steps",
        description="Run real training steps of architectures of a space and compare their "
        "measured peak memory with the estimator's prediction.")
    p.add_argument("--space", default=None, help="search space YAML or built-in name")
    p.add_argument("--data", default=None,
                   help="dataset spec whose first training batch is used (default: a "
                   "synthetic batch of the space's shapes, 2 classes)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--arch", default=None,
                       help="architecture YAML, or reference:N:M (top N slots fused, length M)")
    which.add_argument("--samples", type=int, default=20,
                       help="random architectures, stratified by first fused slot (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seeds the sampled architectures")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.set_defaults(func=cmd_measure)


def cmd_measure(args: argparse.Namespace) -> int:
    from autopmf.space import parse_arch_option
    from autopmf.errors import AutopmfError
    from autopmf.space import load_space

    if args.arch:
        space, arch = parse_arch_option(args.arch, args.space)
        archs = [arch]
    else:
        if not args.space:
            raise AutopmfError("measure needs --space (or an --arch file that names its space)")
        if args.samples < 1:
            raise AutopmfError("--samples must be at least 1")
        space = load_space(args.space)
        archs = stratified_sample(space, args.samples, args.seed)
    report = compare(space, archs, args.device, args.data,
                     progress=None if args.json or args.quiet else _print_row)
    if args.json:
        print(json.dumps(report))
    else:
        _print_summary(report)
    return 0


def stratified_sample(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    """`n` distinct architectures spanning the memory range: the first fused slot cycles
    through every fusable slot and "none" (it sets how many layers keep activations); the
    slots above it fuse at random, with random prompt choices."""
    rng = random.Random(seed)
    strata = [*sorted(space.fusable_slots), None]
    seen, archs = set(), []
    for attempt in range(50 * n):
        if len(archs) == n:
            break
        first = strata[attempt % len(strata)]
        arch = space.random_arch(rng)
        for j in space.fusable_slots:
            arch[f"fusion_{j}"] = int(first is not None and (
                j == first or (j > first and rng.random() < 0.5)))
        arch = space.canonical(space.validate(arch))
        key = tuple(sorted(arch.items()))
        if key not in seen:
            seen.add(key)
            archs.append(arch)
    return archs


def compare(space: SearchSpace, archs: list[Architecture], device: str | None = None,
            data: str | None = None, progress=None, backbone=None) -> dict:
    """Estimate and measure each architecture; the report `autopmf measure --json` prints.
    `backbone`: the space's encoders, already on `device` (else built here)."""
    import torch

    from autopmf.build import build_backbone
    from autopmf.memory.estimator import estimate_bytes
    from autopmf.memory.measure import measure_peak_bytes
    from autopmf.memory.profiling import load_profile

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        from autopmf.errors import AutopmfError
        raise AutopmfError(f"--device {device}: no CUDA device is available here; measure with "
                           "--device cpu")
    if backbone is None:
        backbone = build_backbone(space).to(device)
    batch, num_classes = _data_batch(space, backbone, data, device) if data else (None, 2)
    started = time.perf_counter()
    profile = load_profile(space, torch.device(device).type, num_classes, backbone)
    profile_seconds = time.perf_counter() - started
    rows = []
    for i, arch in enumerate(archs):
        predicted = estimate_bytes(space, arch, profile)
        started = time.perf_counter()
        measured = measure_peak_bytes(space, arch, backbone, device, num_classes, batch)
        row = {"arch": arch, "fused_slots": space.fused_slots(arch),
               "predicted_bytes": predicted, "measured_bytes": measured,
               "rel_err": (predicted - measured) / measured,
               "measure_seconds": round(time.perf_counter() - started, 2)}
        rows.append(row)
        if progress:
            progress(space, i, row)
    errors = [abs(r["rel_err"]) for r in rows]
    return {
        "space": space.name, "text_encoder": space.text_encoder,
        "image_encoder": space.image_encoder, "batch_size": space.batch_size,
        "precision": space.precision, "device": device, "data": data,
        "profile_seconds": round(profile_seconds, 2),
        "full_finetune_predicted_bytes": profile.full_finetune,
        "results": rows,
        "summary": {"n": len(rows), "median_rel_err": statistics.median(errors),
                    "max_rel_err": max(errors),
                    "mean_signed_rel_err": statistics.fmean(r["rel_err"] for r in rows)},
    }


def _data_batch(space: SearchSpace, backbone, spec: str, device: str):
    """The first `batch_size` training examples of dataset `spec`, encoded for the model."""
    import torch

    from autopmf.data.registry import load_dataset
    from autopmf.errors import AutopmfError
    from autopmf.features import encode_split

    dataset = load_dataset(spec, image_size=space.image_size)
    if len(dataset.train) < space.batch_size:
        raise AutopmfError(f"dataset {spec!r} has {len(dataset.train)} training examples, "
                           f"fewer than the space's batch size {space.batch_size}")
    encoded = encode_split(dataset.train, backbone, space)
    rows = torch.arange(space.batch_size)
    batch = {k: v.to(device) for k, v in encoded.batch(rows).items()}
    labels = batch.pop("labels")
    return (batch, labels), len(dataset.label_names)


def describe(space: SearchSpace, arch: Architecture) -> str:
    """Fused slots, with their prompt length in a shared-length space: "3:4 5:8"."""
    fused = space.fused_slots(arch)
    if space.prompt_mode != "shared":
        return " ".join(map(str, fused)) or "none"
    return " ".join(f"{j}:{arch[f'prompt_{j}']}" for j in fused) or "none"


def _print_row(space: SearchSpace, i: int, row: dict) -> None:
    if i == 0:
        print(f"{'#':>3}  {'fused slot:M':<20} {'predicted MiB':>14} {'measured MiB':>13} "
              f"{'error':>8}  {'seconds':>7}")
    print(f"{i + 1:>3}  {describe(space, row['arch']):<20} {row['predicted_bytes'] / MIB:>14.2f} "
          f"{row['measured_bytes'] / MIB:>13.2f} {row['rel_err']:>+8.2%}  "
          f"{row['measure_seconds']:>7.1f}", flush=True)


def _print_summary(report: dict) -> None:
    s = report["summary"]
    print(f"\n{report['space']} on {report['device']} ({report['precision']}, batch "
          f"{report['batch_size']}): n={s['n']}, median |error| {s['median_rel_err']:.2%}, "
          f"max |error| {s['max_rel_err']:.2%}; full fine-tuning would need "
          f"{report['full_finetune_predicted_bytes'] / MIB:.1f} MiB (predicted)")
