"""Where does a supernet start each design, against where standalone training starts it?
(issue 16)

Initialises the demo's supernet as `autopmf supernet` does (the yardstick's start, the
budget's sampler, the shared heads fitted jointly on the sampler's first subnets), then reads
each yardstick design (`bench/results/ranking.json`) on the validation split twice: through
those shared heads (where the supernet's training starts it), and through heads fitted for
that design alone, as a standalone run's `--head-init probe` fits them (where the yardstick
starts it). Accuracy and cross-entropy each.

    python bench/shared_heads_start.py --sampling top-slot

Writes bench/results/shared_heads_start.json (one entry per sampling rule, start and
reading, replaced when measured again). `--standardise` has every head (shared and own) read
each subnet's [CLS] pair standardised over the examples read together. `--prompt-init`
starts the supernet elsewhere than the yardstick's designs start (their own heads are then
fitted from that start too).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.build import build_backbone, initialise_supernet  # noqa: E402
from autopmf.data.registry import load_dataset  # noqa: E402
from autopmf.feature_store import feature_caches  # noqa: E402
from autopmf.features import SlotCaches  # noqa: E402
from autopmf.files import atomic_write_json  # noqa: E402
from autopmf.inherited import first_slot  # noqa: E402
from autopmf.space import load_space  # noqa: E402
from autopmf.supernet_train import (HEAD_FIT_EXAMPLES, SupernetConfig, budget_fit,  # noqa: E402
                                    fit_shared_heads, reference_examples, shared_head_subnets)
from autopmf.train import predict  # noqa: E402
from bench.ranking import parse_design  # noqa: E402
from supernet.init import PROMPT_INITS  # noqa: E402
from supernet.sampling import SAMPLING_RULES, ArchSampler  # noqa: E402
from supernet.supernet import Supernet  # noqa: E402


def standardise_features(supernet: Supernet) -> None:
    """From now on the heads read each subnet's [CLS] pair standardised over the examples
    read together (per feature, with those examples' mean and std): a subnet's own offsets
    and scales removed, as a normalisation with batch statistics before the heads would."""
    features = supernet.features

    def standardised(streams, start_slot, arch):
        return tuple((x - x.mean(0)) / x.std(0).clamp_min(1e-6)
                     for x in features(streams, start_slot, arch))
    supernet.features = standardised


def read(supernet: Supernet, arch: dict, val: SlotCaches, cfg: SupernetConfig
         ) -> dict[str, float]:
    """Validation accuracy and cross-entropy of `arch` through the supernet's heads now."""
    cache = val.at(first_slot(supernet, arch))
    supernet.eval()
    logits = predict(lambda c, rows: supernet.heads(
        *supernet.features(c.streams(rows, cfg.device), c.slot, arch)), cache, cfg)
    labels = cache.labels
    return {"accuracy": (logits.argmax(1) == labels).float().mean().item(),
            "loss": torch.nn.functional.cross_entropy(logits.float(), labels).item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Not progressive: its heads are refitted as each stage starts, not only where
    # training starts (and its sampler needs the training's length).
    parser.add_argument("--sampling", choices=[r for r in SAMPLING_RULES if r != "progressive"],
                        default="top-slot")
    parser.add_argument("--ranking", default=str(ROOT / "bench/results/ranking.json"))
    parser.add_argument("--prompt-init", choices=PROMPT_INITS,
                        help="the supernet's start (default: the yardstick's)")
    parser.add_argument("--standardise", action="store_true",
                        help="heads read each subnet's [CLS] pair standardised per batch")
    parser.add_argument("--budget-gb", type=float, default=0.285)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench/results/shared_heads_start.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    yardstick = json.loads(Path(args.ranking).read_text())
    start = args.prompt_init or yardstick.get("prompt_init", "paper")
    space = load_space(yardstick["space"])
    seed = yardstick.get("data_seed", 0)
    dataset = load_dataset(yardstick["task"], seed=seed, image_size=space.image_size)
    backbone = build_backbone(space)
    torch.manual_seed(0)
    num_classes = len(dataset.label_names)
    supernet = Supernet(space, backbone, num_classes)
    caches = feature_caches(space, dataset, backbone, supernet.lowest_fusable_slot)
    cfg = SupernetConfig(seed=0, batch_size=space.batch_size, progress=False,
                         prompt_init=start)
    initialise_supernet(supernet, caches["train"], start, 0, cfg.device)
    if args.standardise:
        standardise_features(supernet)
    fit, largest, _ = budget_fit(space, args.budget_gb, num_classes, cfg.device)
    sampler = ArchSampler(space, args.sampling, cfg.seed, fit=fit, largest=largest)
    train, val = SlotCaches(caches["train"], backbone), SlotCaches(caches["val"], backbone)
    reference_val = SlotCaches(reference_examples(caches["val"], cfg), backbone)

    def fit_heads(archs: list) -> None:  # as supernet training fits them (SupernetSteps)
        fit_shared_heads(supernet, archs, train, reference_val, cfg, num_classes,
                         dataset.metric, HEAD_FIT_EXAMPLES)

    [(_, shared_archs)] = shared_head_subnets(sampler, supernet)
    fit_heads(shared_archs)
    shared = {row["design"]: read(supernet, parse_design(space, row["design"]), val, cfg)
              for row in yardstick["per_design"]}
    rows = []
    for row in yardstick["per_design"]:
        arch = parse_design(space, row["design"])
        fit_heads([arch])
        own = read(supernet, arch, val, cfg)
        rows.append({"design": row["design"], "shared_heads": shared[row["design"]],
                     "own_heads": own, "standalone_val_mean": row["val_mean"]})
        print(f"{row['design']:>18}: shared heads acc {shared[row['design']]['accuracy']:.3f} "
              f"loss {shared[row['design']]['loss']:.2f} | own heads acc "
              f"{own['accuracy']:.3f} loss {own['loss']:.2f}", flush=True)

    entry = {"sampling": args.sampling, "prompt_init": start, "standardised": args.standardise,
             "budget_gb": args.budget_gb,
             "shared_heads_fitted_on": shared_archs, "designs": rows,
             "minutes": (time.perf_counter() - started) / 60,
             "machine": f"{platform.machine()}, {args.threads} torch threads",
             "date": datetime.date.today().isoformat()}
    out = Path(args.out)
    entries = json.loads(out.read_text())["entries"] if out.exists() else []
    key = (args.sampling, start, args.standardise)
    entries = [e for e in entries if (e["sampling"], e["prompt_init"],
                                      e.get("standardised", False)) != key] + [entry]
    atomic_write_json(out, {"entries": entries})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
