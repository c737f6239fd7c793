"""Does the supernet's training path train one design as standalone training does? (issue 16)

Runs `autopmf supernet` with its sampler pinned to one design (every step, and the shared
heads' fit, use that design alone; nothing else of the supernet code path changes), then
scores the design through the supernet's heads on the whole validation and test splits. With
the yardstick's settings, the answer should be close to the yardstick's standalone scores of
the same design (`bench/results/ranking.json`); a gap is a defect of the supernet's training
path, not of weight sharing, since no other subnet shares the weights.

    python bench/one_design_supernet.py --design 2:2+3:2+4:2+5:2 --epochs 2 --lr 3e-4

Writes bench/results/one_design_supernet.json (one entry per design and settings, replaced
when measured again).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf import supernet_train  # noqa: E402
from autopmf.features import SlotCaches  # noqa: E402
from autopmf.inherited import heads_score  # noqa: E402
from autopmf.space import load_space  # noqa: E402
from autopmf.supernet_train import HEAD_FIT_EXAMPLES, SupernetConfig, train_supernet  # noqa: E402
from autopmf.train import TrainConfig  # noqa: E402
from bench.ranking import parse_design  # noqa: E402
from supernet import sampling  # noqa: E402


def pin_sampler(arch: dict) -> None:
    """Every supernet step, and the shared heads' fit, use `arch` alone."""
    sampling.ArchSampler.sample = lambda self, step: arch
    supernet_train.shared_head_subnets = lambda sampler, supernet: [(supernet, [arch])]


def yardstick_scores(ranking: Path, design: str) -> dict | None:
    if not ranking.exists():
        return None
    result = json.loads(ranking.read_text())
    for row in result["per_design"]:
        if row["design"] == design:
            return {"epochs": result["epochs"], "lr": result["lr"], "val": row["val_scores"],
                    "test": row["test_scores"]}
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--design", default="2:2+3:2+4:2+5:2")
    parser.add_argument("--space", default="demo")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ranking", type=Path, default=ROOT / "bench/results/ranking.json")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "bench/results/one_design_supernet.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    arch = parse_design(space, args.design)
    pin_sampler(arch)
    cfg = SupernetConfig(epochs=args.epochs, lr=args.lr, seed=args.seed, warmup_epochs=0,
                         batch_size=space.batch_size, precision=space.precision,
                         progress=False)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        run = train_supernet(space, args.data, Path(folder) / "run", cfg)
    eval_cfg = TrainConfig(seed=args.seed, batch_size=space.batch_size,
                           precision=space.precision, progress=False)
    test = SlotCaches(run.caches["test"], run.supernet.backbone, run.val_slots.budget)
    scores = {split: heads_score(run.supernet, arch, slots, eval_cfg, run.metric)
              for split, slots in (("val", run.val_slots), ("test", test))}
    entry = {"design": args.design, "space": args.space, "data": args.data,
             "epochs": args.epochs, "lr": args.lr, "seed": args.seed,
             "head_fit_examples": HEAD_FIT_EXAMPLES, "supernet": scores,
             "epoch_losses": [h["loss"] for h in run.metrics["history"]],
             "standalone": yardstick_scores(args.ranking, args.design),
             "minutes": (time.perf_counter() - started) / 60,
             "date": str(datetime.date.today())}
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    key = ("design", "epochs", "lr", "seed", "head_fit_examples")
    results["runs"] = [r for r in results["runs"]
                       if any(r.get(k) != entry[k] for k in key)] + [entry]
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(entry, indent=1))


if __name__ == "__main__":
    main()
