"""Does a supernet rank designs the way standalone training does? (issue 16)

Scores the ranking benchmark's designs (`bench/ranking.py`, its result file) with a trained
supernet's weights, in both inherited scorings (`autopmf.inherited`: a probe per subnet, or
the shared heads), and compares each with the designs' seed-mean standalone scores: Kendall
tau-b and Spearman rho with bootstrap 90% intervals over designs, top-1/top-3 hit and regret
(the best standalone mean minus the standalone mean of the supernet's top design). No
retraining: the standalone side is the yardstick's, already measured.

    python bench/supernet_ranking.py --supernet RUN --variant "sandwich, 6 epochs"
    python bench/supernet_ranking.py --untrained --variant "untrained supernet"
    python bench/supernet_ranking.py --restate --ranking NEW.json   # stored scores, new yardstick

RUN is an `autopmf supernet --out RUN` (or search) folder trained on the yardstick's data
and data seed. `--untrained` scores a freshly initialised supernet instead (the zero-training
floor: what every variant has to beat). Each variant is one entry of the results file
(`bench/results/validate.json`), replaced when measured again. The yardstick is
`bench/results/ranking.json`, since 2026-12-05 the fixed-start one; `validate.json`'s
variants were measured against the paper-draw one (`--ranking
bench/results/ranking_paper.json`), and the fixed-start variants are in
`bench/results/validate_fixed.json` (`--out`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.build import build_backbone, initialise_supernet  # noqa: E402
from autopmf.choices import PROBE_EXAMPLES  # noqa: E402
from autopmf.data.registry import load_dataset  # noqa: E402
from autopmf.feature_store import feature_caches  # noqa: E402
from autopmf.features import SlotCaches  # noqa: E402
from autopmf.files import load_tensors  # noqa: E402
from autopmf.inherited import FINETUNE_LR, INHERITED_SCORINGS, InheritedScorer  # noqa: E402
from autopmf.layout import SUPERNET_METRICS, SUPERNET_WEIGHTS  # noqa: E402
from autopmf.ranking import (correlation_ci, kendall_tau_b, regret, spearman_rho,  # noqa: E402
                             top_k_hit)
from autopmf.space import load_space, space_from_dict  # noqa: E402
from autopmf.train import TrainConfig  # noqa: E402
from bench.ranking import parse_design  # noqa: E402
from supernet.few_shot import build_supernet  # noqa: E402
from supernet.weights import load_trainable_state  # noqa: E402


def agreement(inherited: list[float], standalone: list[float]) -> dict:
    """How well `inherited` scores rank designs against their standalone means."""
    return {"kendall_tau": kendall_tau_b(inherited, standalone),
            "kendall_tau_ci": list(correlation_ci(inherited, standalone)),
            "spearman_rho": spearman_rho(inherited, standalone),
            "spearman_rho_ci": list(correlation_ci(inherited, standalone, spearman_rho)),
            "top1_hit": top_k_hit(inherited, standalone, 1),
            "top3_hit": top_k_hit(inherited, standalone, 3),
            "regret": regret(inherited, standalone)}


def restate(out: Path, ranking: Path) -> None:
    """Compare each variant's stored inherited scores with another yardstick of the same
    designs (in the same order): its agreement fields, standalone means and epochs are
    replaced; the inherited scores are kept as they were measured."""
    yardstick = json.loads(ranking.read_text())
    designs = [row["design"] for row in yardstick["per_design"]]
    standalone = [row["val_mean"] for row in yardstick["per_design"]]
    results = json.loads(out.read_text())
    for entry in results["variants"]:
        if entry.get("design_names", designs) != designs or entry["designs"] != len(designs):
            raise SystemExit(f"{entry['variant']!r} scored other designs than {ranking}")
        entry.update(standalone=standalone, standalone_epochs=yardstick["epochs"],
                     seeds=yardstick["seeds"], yardstick=yardstick_name(yardstick))
        for scoring, result in entry["by_scoring"].items():
            result.update(agreement(result["inherited"], standalone))
        entry.update({k: entry["by_scoring"][entry["scoring"]][k]
                      for k in ("kendall_tau", "kendall_tau_ci", "spearman_rho", "regret")})
        print(f"{entry['variant']}: tau {entry['kendall_tau']:.3f} "
              f"[{entry['kendall_tau_ci'][0]:.3f}, {entry['kendall_tau_ci'][1]:.3f}]")
        if entry["variant"] == results.get("variant"):
            results.update({k: entry[k] for k in ("seeds", "kendall_tau", "kendall_tau_ci",
                                                  "spearman_rho", "regret")})
    out.write_text(json.dumps(json.loads(json.dumps(results, default=float),
                                         parse_constant=lambda c: None), indent=1) + "\n")


def yardstick_name(yardstick: dict) -> str:
    start = yardstick.get("prompt_init", "paper")
    return (f"{yardstick['designs']} designs x {yardstick['seeds']} seeds, "
            f"{yardstick['epochs']} epochs at lr {yardstick.get('lr', 3e-3):g}"
            + ("" if start == "paper" else f", --prompt-init {start}"))


def load_supernet(args, yardstick: dict):
    """(space, data spec, seed, supernet): trained from RUN, or fresh (`--untrained`)."""
    if args.untrained:
        space, data, seed = load_space(yardstick["space"]), yardstick["task"], args.seed
        prompt_init = yardstick.get("prompt_init", "paper")
        few_shot = "none"
    else:
        metrics = json.loads((Path(args.supernet) / SUPERNET_METRICS).read_text())
        space = space_from_dict(metrics["space"])
        data = metrics["data"]
        seed = metrics["config"].get("data_seed")  # the supernet's data split's seed
        seed = metrics["config"]["seed"] if seed is None else seed
        prompt_init = metrics["config"].get("prompt_init", "paper")
        few_shot = metrics["config"].get("few_shot", "none")
    dataset = load_dataset(data, seed=seed, image_size=space.image_size)
    backbone = build_backbone(space)
    torch.manual_seed(seed)
    supernet = build_supernet(space, backbone, len(dataset.label_names), few_shot)
    caches = feature_caches(space, dataset, backbone, supernet.lowest_fusable_slot)
    if args.untrained:
        initialise_supernet(supernet, caches["train"], prompt_init, seed)
    else:
        load_trainable_state(supernet, load_tensors(Path(args.supernet) / SUPERNET_WEIGHTS))
    return space, dataset, seed, supernet, caches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--supernet", help="a run folder holding a trained supernet")
    source.add_argument("--untrained", action="store_true",
                        help="score a freshly initialised supernet")
    source.add_argument("--restate", action="store_true",
                        help="score nothing: compare every variant's stored inherited scores "
                        "with the --ranking yardstick's (a new yardstick, same designs)")
    parser.add_argument("--variant", help="this supernet's name in the table")
    parser.add_argument("--seed", type=int, default=0, help="with --untrained: its seed")
    parser.add_argument("--ranking", default=str(ROOT / "bench/results/ranking.json"),
                        help="the yardstick's result file (bench/ranking.py)")
    parser.add_argument("--scorings", default=",".join(INHERITED_SCORINGS),
                        help="which inherited scorings to measure (the first is the headline)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe-examples", type=int, default=PROBE_EXAMPLES,
                        help="training examples each design's probe is fitted on")
    parser.add_argument("--finetune-lr", type=float, default=FINETUNE_LR,
                        help="the finetune scoring's peak learning rate")
    parser.add_argument("--finetune-epochs", type=int, default=1,
                        help="the finetune scoring's epochs over its sample")
    parser.add_argument("--default", action="store_true",
                        help="this variant is autopmf's default: its headline goes to the "
                        "top of the results file")
    parser.add_argument("--out", default=str(ROOT / "bench/results/validate.json"))
    args = parser.parse_args()
    if args.restate:
        return restate(Path(args.out), Path(args.ranking))
    if not args.variant:
        parser.error("--variant is required with --supernet or --untrained")
    if args.finetune_epochs < 1 or args.finetune_lr <= 0:
        parser.error(f"--finetune-epochs must be 1 or more and --finetune-lr above 0, got "
                     f"{args.finetune_epochs} and {args.finetune_lr:g}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    yardstick = json.loads(Path(args.ranking).read_text())
    space, dataset, seed, supernet, caches = load_supernet(args, yardstick)
    if dataset.name != yardstick["task"].split(":")[0] or seed != yardstick.get("data_seed", 0):
        print(f"note: the supernet's data ({dataset.name}, seed {seed}) is not the "
              f"yardstick's ({yardstick['task']}, data seed {yardstick.get('data_seed', 0)})")
    designs = [row["design"] for row in yardstick["per_design"]]
    standalone = [row["val_mean"] for row in yardstick["per_design"]]
    val = SlotCaches(caches["val"], supernet.backbone)
    cfg = TrainConfig(seed=seed, batch_size=space.batch_size, precision=space.precision,
                      progress=False)
    num_classes = len(dataset.label_names)
    entry = {"variant": args.variant, "supernet": args.supernet or "untrained",
             "probe_examples": args.probe_examples,
             **({"finetune_lr": args.finetune_lr, "finetune_epochs": args.finetune_epochs}
                if "finetune" in args.scorings else {}),
             "task": yardstick["task"], "designs": len(designs),
             "seeds": yardstick["seeds"], "standalone_epochs": yardstick["epochs"],
             "standalone": standalone, "design_names": designs,
             "yardstick": yardstick_name(yardstick), "by_scoring": {}}
    scorings = [s for s in args.scorings.split(",") if s]
    for scoring in scorings:
        scorer = InheritedScorer(supernet, caches["train"], val, cfg, dataset.metric, num_classes,
                                 scoring, args.probe_examples, args.finetune_lr,
                                 args.finetune_epochs)
        t0 = time.perf_counter()
        inherited = [scorer(parse_design(space, d)) for d in designs]
        result = agreement(inherited, standalone)
        result.update(inherited=inherited,
                      seconds_per_design=(time.perf_counter() - t0) / len(designs))
        entry["by_scoring"][scoring] = result
        print(f"{scoring:>6}: tau {result['kendall_tau']:.3f} "
              f"[{result['kendall_tau_ci'][0]:.3f}, {result['kendall_tau_ci'][1]:.3f}]  "
              f"rho {result['spearman_rho']:.3f}  regret {result['regret']:.3f}  "
              + " ".join(f"{d}={s:.3f}" for d, s in zip(designs, inherited)), flush=True)
    # The headline (issue 16's fields) is the first scoring's (autopmf's default, unless
    # --scorings says otherwise).
    entry.update({k: entry["by_scoring"][scorings[0]][k]
                  for k in ("kendall_tau", "kendall_tau_ci", "spearman_rho", "regret")})
    entry.update(scoring=scorings[0], minutes=(time.perf_counter() - started) / 60,
                 machine=f"{platform.machine()}, {args.threads} torch threads",
                 date=str(datetime.date.today()))
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"variants": []}
    results["variants"] = [v for v in results["variants"] if v["variant"] != args.variant]
    entry = json.loads(json.dumps(entry, default=float), parse_constant=lambda c: None)
    results["variants"].append(entry)
    if args.default:
        results.update({k: entry[k] for k in ("variant", "designs", "seeds", "kendall_tau",
                                              "kendall_tau_ci", "spearman_rho", "regret",
                                              "scoring")})
    out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
