"""Which cheap score of a random start ranks the draws like the fitted-heads start does?

For each design and seed, draws the fused slots' random start several times (as
`--init-draws` does) and scores each draw three ways: the fitted-heads start itself (the probe
fitted on the whole training split, scored on validation: what training starts from, and
what a design's trained score follows), and the probe fitted on one half of a seeded sample
of training examples and scored on the other half, for halves of 1,024 and 2,048 examples
(what `autopmf.init_draws` can afford per draw). Reports, per design and seed, each cheap
score's correlation with the start over the draws and the start of the draw it would keep.

    python bench/init_draw_scores.py --designs 5:1,4:4+5:4 --seeds 0,1 --draws 8 --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.baselines import select_probe  # noqa: E402
from autopmf.build import build_backbone, build_pmf  # noqa: E402
from autopmf.data.registry import load_dataset  # noqa: E402
from autopmf.features import SlotCaches, build_feature_cache, encode_split  # noqa: E402
from autopmf.head_init import cls_pairs  # noqa: E402
from autopmf.init_draws import draw_seed, redraw, scoring_halves  # noqa: E402
from autopmf.space import load_space  # noqa: E402
from bench.ranking import parse_design  # noqa: E402

HALVES = (1024, 2048)


def draw_scores(model, caches, seed: int, metric: str) -> dict:
    """The start and the cheap scores of the model's current draw."""
    def features(cache, rows):
        return model.features_from(cache.streams(rows), cache.slot)
    train, val = caches["train"], caches["val"]
    x_train, x_val = cls_pairs(features, train), cls_pairs(features, val)
    y_train = train.labels
    scores = {"start": select_probe(x_train, y_train, x_val, val.labels, 2, metric).val}
    for half in HALVES:
        fit, held = scoring_halves(len(train), seed, half)
        scores[f"halves_{half}"] = select_probe(x_train[fit], y_train[fit], x_train[held],
                                                y_train[held], 2, metric).val
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--designs", default="5:1,4:4+5:4")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--draws", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench/results/init_draw_scores.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    space = load_space("demo")
    dataset = load_dataset("digits", seed=0, image_size=space.image_size)
    backbone = build_backbone(space)
    slots = {name: SlotCaches(build_feature_cache(encode_split(split, backbone, space),
                                                  backbone, 0), backbone)
             for name, split in (("train", dataset.train), ("val", dataset.val))}
    results = []
    for design in args.designs.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.manual_seed(seed)
            model = build_pmf(space, parse_design(space, design), backbone, 2)
            caches = {name: s.at(model.first_fused_slot) for name, s in slots.items()}
            fused = {j: model.fusion[str(j)] for j in model.slot_configs}
            draws = []
            for draw in range(args.draws):
                if draw:
                    redraw(fused, draw_seed(seed, draw))
                draws.append(draw_scores(model, caches, seed, dataset.metric))
            start = np.array([d["start"] for d in draws])
            row = {"design": design, "seed": seed, "draws": draws}
            for half in HALVES:
                cheap = np.array([d[f"halves_{half}"] for d in draws])
                row[f"corr_{half}"] = float(np.corrcoef(cheap, start)[0, 1])
                row[f"kept_start_{half}"] = float(start[int(np.argmax(cheap))])
            row["best_start"], row["mean_start"] = float(start.max()), float(start.mean())
            results.append(row)
            print(f"{design} seed {seed}: start {row['mean_start']:.3f} mean, "
                  f"{row['best_start']:.3f} best; " + "; ".join(
                      f"halves of {h}: r {row[f'corr_{h}']:.2f}, keeps "
                      f"{row[f'kept_start_{h}']:.3f}" for h in HALVES), flush=True)
    summary = {f"mean_corr_{h}": float(np.mean([r[f"corr_{h}"] for r in results]))
               for h in HALVES}
    summary.update({f"mean_kept_start_{h}": float(np.mean([r[f"kept_start_{h}"]
                                                           for r in results]))
                    for h in HALVES})
    summary["mean_start"] = float(np.mean([r["mean_start"] for r in results]))
    print(json.dumps(summary))
    Path(args.out).write_text(json.dumps(
        {"task": "digits", "space": "demo", "draws": args.draws, **summary,
         "threads": args.threads, "minutes": (time.perf_counter() - started) / 60,
         "date": str(datetime.date.today()), "per_design_seed": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
