"""The yardstick: do seeds of standalone training rank designs alike?

Trains each design standalone (as `autopmf train` does: the same model, initialisation, loop
and schedule) for a fixed number of epochs, once per seed, on one data split, and reports per
design the mean and standard deviation of its validation score, and across designs the
spread (best mean - worst mean), the mean seed standard deviation, and the seeds' agreement:
the mean pairwise Kendall tau-b between the seeds' rankings, with a bootstrap 90% interval
over designs. A supernet can rank designs no better than the seeds agree.

    python bench/ranking.py      # the yardstick, bench/results/ranking.json: 10 designs x 3
                                 # seeds, 2 epochs at lr 3e-4, --prompt-init fixed, 2 processes
    python bench/ranking.py --prompt-init paper --text-positions all \
        --out bench/results/ranking_paper.json    # the paper's draw, as measured 2026-11-28
    python bench/ranking.py --epochs 1 --out /tmp/ranking-1epoch.json

Encoders, data and the frozen-feature caches load once for all trainings. Each finished
training is appended to a log beside the result (`NAME.runs.jsonl`), so an interrupted
benchmark run again with the same settings continues where it stopped. Fix --threads: thread
count changes results. Token positions that are padding in every example are not computed
(`--text-positions all` computes them, as logs before 2026-11-29 did).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.build import build_backbone, build_pmf  # noqa: E402
from autopmf.data.registry import load_dataset  # noqa: E402
from autopmf.features import (SlotCaches, build_feature_cache, encode_split,  # noqa: E402
                              without_padding_columns)
from autopmf.memory import GIB, estimate_bytes, load_profile  # noqa: E402
from autopmf.metrics import binary_auc, mean_log_likelihood, score  # noqa: E402
from autopmf.ranking import summarize_designs, within_design_correlation  # noqa: E402
from autopmf.report import describe_arch  # noqa: E402
from autopmf.space import load_space  # noqa: E402
from autopmf.train import TrainConfig, evaluate, fit, predict  # noqa: E402
from autopmf.train_arch import initialise_training  # noqa: E402
from supernet.init import SEED_FREE_INITS  # noqa: E402

# Ten designs of the demo space, all within its 0.285 GiB budget: one fused slot to four, low
# slots and high, short prompts and long, with the PMF paper's reference:2:4 (4:M4 5:M4) and
# the largest PMF reference that fits the budget (the top four slots at M = 2, last).
# "slot:M" pairs joined by "+".
DEMO_DESIGNS = ("5:1", "2:2", "0:2", "0:1+1:1", "3:8+4:8", "1:2+2:1+4:2", "0:1+2:1+3:1",
                "1:8+4:1+5:2", "4:4+5:4", "2:2+3:2+4:2+5:2")


def parse_design(space, spec: str) -> dict:
    arch = {f"fusion_{j}": 0 for j in space.fusable_slots}
    arch.update({f"prompt_{j}": space.prompt_lengths[0] for j in space.fusable_slots})
    for part in spec.split("+"):
        slot, length = (int(x) for x in part.split(":"))
        arch[f"fusion_{slot}"], arch[f"prompt_{slot}"] = 1, length
    return space.validate(arch)


def settings_key(args) -> dict:
    key = {k: getattr(args, k) for k in ("space", "data", "epochs", "prompt_init",
                                         "head_init", "threads", "lr", "data_seed")}
    if args.head_lr_scale != TrainConfig.head_lr_scale:  # logs from before the option match
        key["head_lr_scale"] = args.head_lr_scale
    if args.warmup_frac != TrainConfig.warmup_frac:
        key["warmup_frac"] = args.warmup_frac
    if args.mapping_lr_scale != TrainConfig.mapping_lr_scale:
        key["mapping_lr_scale"] = args.mapping_lr_scale
    if args.init_draws != TrainConfig.init_draws:
        key["init_draws"] = args.init_draws
    if args.vary != "both":
        key["vary"] = args.vary
    if args.batch_size is not None:
        key["batch_size"] = args.batch_size
    if args.text_positions != "all":  # logs from before the option computed every position
        key["text_positions"] = args.text_positions
    return key


def load_done(log: Path, key: dict) -> dict:
    """(design, seed) -> record, from an earlier run of the same settings."""
    done = {}
    if log.exists():
        for line in log.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
            if record.get("settings") == key:
                done[record["design"], record["seed"]] = record
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="demo")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--designs", default=",".join(DEMO_DESIGNS),
                        help="comma-separated designs, each slot:M pairs joined by +")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--prompt-init", default="fixed")
    parser.add_argument("--head-init", default="probe")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--head-lr-scale", type=float, default=TrainConfig.head_lr_scale)
    parser.add_argument("--mapping-lr-scale", type=float,
                        default=TrainConfig.mapping_lr_scale,
                        help="the mapping MLPs' rate as a multiple of --lr")
    parser.add_argument("--init-draws", type=int, default=TrainConfig.init_draws,
                        help="random starts of the fused slots drawn per training, keeping "
                        "the one a linear probe reads best on training examples")
    parser.add_argument("--warmup-frac", type=float, default=TrainConfig.warmup_frac,
                        help="the share of the steps over which the learning rate rises")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--vary", choices=("both", "init", "order"), default="both",
                        help="what the seed changes: both (default); init, the global random "
                        "numbers (initialisation, draws), with seed 0's data order; or order, "
                        "the data order, with seed 0's initialisation")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="training batch size (default: the space's)")
    parser.add_argument("--text-positions", choices=("used", "all"), default="used",
                        help="used (default): drop the token positions that are padding in "
                        "every example of a split (the same model, to float rounding, for "
                        "less work); all: compute them, as runs before 2026-11-29 did")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--budget-gb", type=float, default=0.285,
                        help="the budget the designs are meant to span (reported per design)")
    parser.add_argument("--plateau", type=float, default=0.70,
                        help="the val score a trained run must reach (after epoch 1 or later, "
                        "the fitted-heads start not counted) to count as past the plateau")
    parser.add_argument("--jobs", type=int, default=2,
                        help="trainings side by side, in as many processes (each with "
                        "--threads threads); the trainings (design, seed) are split between them "
                        "by cost")
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    # A side-by-side child trains only these trainings, "design@seed" joined by commas.
    parser.add_argument("--trainings", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "bench/results/ranking.json"))
    args = parser.parse_args()
    if args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size must be 1 or more, got {args.batch_size}")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    space = load_space(args.space)
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    if args.jobs > 1:
        run_side_by_side(args, space, designs)  # they fill the log; what is left runs here
    dataset = load_dataset(args.data, seed=args.data_seed, image_size=space.image_size)
    backbone = build_backbone(space)
    num_classes = len(dataset.label_names)
    profile = load_profile(space, "cpu", num_classes, backbone=backbone)
    archs = {d: parse_design(space, d) for d in designs}
    mem_gb = {d: estimate_bytes(space, a, profile) / GIB for d, a in archs.items()}
    lowest = min(space.fusable_slots)
    trim = without_padding_columns if args.text_positions == "used" else (lambda e: e)
    slots = {name: SlotCaches(build_feature_cache(trim(encode_split(split, backbone, space)),
                                                  backbone, lowest), backbone)
             for name, split in dataset.splits().items()}

    out = Path(args.out)
    log = out.with_suffix(".runs.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    key = settings_key(args)
    done = load_done(log, key)
    # Seed-major: every design has its first seed before any has a second.
    if args.trainings is None:
        trainings = seed_major(designs, args.seeds)
    else:
        trainings = [(t.rsplit("@", 1)[0], int(t.rsplit("@", 1)[1]))
                     for t in args.trainings.split(",")]
    starts = {}  # design -> its start, when every seed starts alike (seed_free_start)
    for design, seed in trainings:
        if (design, seed) in done:
            continue
        record = train_once(space, archs[design], backbone, slots, num_classes,
                            dataset.metric, seed, args,
                            starts.setdefault(design, {}) if seed_free_start(args) else None)
        record.update(design=design, seed=seed, settings=key)
        with log.open("a") as f:
            f.write(json.dumps(record) + "\n")
        done[design, seed] = record
        print(f"seed {seed} {design:>16}: val {record['val']:.4f} test "
              f"{record['test']:.4f} ({record['seconds']:.0f} s)", flush=True)

    if args.no_summary:
        return
    table = [[done[d, s]["val"] for s in range(args.seeds)] for d in designs]
    summary = summarize_designs(table)
    rows = [{"design": d, "arch_description": describe_arch(archs[d], space.fusable_slots),
             "mem_gb": round(mem_gb[d], 4), "within_budget": mem_gb[d] <= args.budget_gb,
             "val_scores": table[i], "val_mean": summary["means"][i],
             "val_std": summary["stds"][i],
             "test_scores": [done[d, s]["test"] for s in range(args.seeds)],
             # Val after each training epoch (not the fitted-heads start), per seed, and
             # how many seeds passed the plateau bar after training (issue 15).
             "val_by_epoch": [done[d, s]["history"] for s in range(args.seeds)],
             "seeds_past_plateau": sum(max(done[d, s]["history"], default=0.0)
                                       >= args.plateau for s in range(args.seeds)),
             "train_seconds": [done[d, s]["seconds"] for s in range(args.seeds)],
             "init_seconds": [done[d, s].get("init_seconds") for s in range(args.seeds)]}
            for i, d in enumerate(designs)]
    result = {"task": args.data, "space": args.space, "designs": len(designs),
              "seeds": args.seeds, "epochs": args.epochs, "prompt_init": args.prompt_init,
              "head_init": args.head_init, "lr": args.lr, "head_lr_scale": args.head_lr_scale,
              "warmup_frac": args.warmup_frac, "mapping_lr_scale": args.mapping_lr_scale,
              "init_draws": args.init_draws,
              "batch_size": args.batch_size or space.batch_size,
              "text_positions": args.text_positions,
              "score": f"val {dataset.metric}",
              "seed_tau": summary["seed_tau"], "seed_tau_ci": summary["seed_tau_ci"],
              # What one training ranks at against the other seeds' mean: the most a
              # cheaper proxy of it (issue 16's inherited scores) can be expected to reach.
              "single_run_tau": summary["single_run_tau"],
              # Two yardsticks that each average k seeds: how alike they rank, per k.
              "mean_of_k_tau": summary["mean_of_k_tau"],
              # The same runs ranked by threshold-free scores of the kept model, where
              # every run recorded them: seed tau and its interval, per score.
              "seed_tau_by_score": threshold_free_agreement(done, designs, args.seeds),
              "spread": summary["spread"], "mean_seed_std": summary["mean_seed_std"],
              "spread_over_noise": summary["spread"] / max(summary["mean_seed_std"], 1e-12),
              # How much of a design's seed-to-seed spread its fitted-heads start explains.
              "start_final_corr": within_design_correlation(
                  [[done[d, s]["val_at_start"] for s in range(args.seeds)] for d in designs],
                  table),
              "plateau": args.plateau,
              "runs_past_plateau": sum(r["seeds_past_plateau"] for r in rows),
              # Wall time of this invocation; a resumed run counts only its own part, and
              # sum(train_seconds) is the training time behind every number.
              "minutes": (time.perf_counter() - started) / 60,
              "train_minutes": sum(sum(r["train_seconds"]) for r in rows) / 60,
              # Logs from before init_seconds was recorded leave it out.
              "init_minutes": sum(x or 0.0 for r in rows for x in r["init_seconds"]) / 60,
              "threads": args.threads, "jobs": args.jobs, "machine": f"{platform.machine()}, "
              f"{torch.get_num_threads()} torch threads", "date": str(datetime.date.today()),
              "per_design": rows}
    out.write_text(json.dumps(finite_or_null(result), indent=1) + "\n")
    print_table(result)


def threshold_free_agreement(done: dict, designs: list[str], seeds: int) -> dict:
    """{score: {"seed_tau", "seed_tau_ci", "spread_over_noise"}} for val and test AUC and
    log-likelihood, over the runs' records; a score some run lacks (logs from before it
    was recorded) is left out."""
    out = {}
    for name in ("val_auc", "val_ll", "test_auc", "test_ll"):
        if not all(name in done[d, s] for d in designs for s in range(seeds)):
            continue
        summary = summarize_designs([[done[d, s][name] for s in range(seeds)]
                                     for d in designs])
        out[name] = {"seed_tau": summary["seed_tau"], "seed_tau_ci": summary["seed_tau_ci"],
                     "spread_over_noise": summary["spread"]
                     / max(summary["mean_seed_std"], 1e-12)}
    return out


def seed_major(designs: list[str], seeds: int) -> list[tuple[str, int]]:
    """Every (design, seed) training, each design's first seed before any design's second."""
    return [(design, seed) for seed in range(seeds) for design in designs]


def seed_free_start(args) -> bool:
    """Whether every seed of a design starts from the same weights (a start that draws no
    random numbers, read by fitted heads): then it is computed once per design and process."""
    return (args.prompt_init in SEED_FREE_INITS and args.head_init == "probe"
            and args.init_draws == 1)


def design_cost(space, spec: str) -> float:
    """A training's relative cost, for splitting trainings between processes: 10 per slot it
    computes below the top one (the top computes its [CLS] rows only), 3 per fused slot (its
    query stage), 1 per prompt row, plus 2. Fitted to the measured seconds of the ten demo
    designs (`ranking_fixed.runs.jsonl`: within 3% for each)."""
    arch = parse_design(space, spec)
    fused = space.fused_slots(arch)
    top = max(space.fusable_slots)
    below_top = len([j for j in space.fusable_slots if min(fused) <= j < top])
    prompts = sum(arch[f"prompt_{j}"] for j in fused)
    return 10 * below_top + 3 * len(fused) + prompts + 2


def run_side_by_side(args, space, designs: list[str]) -> None:
    """Split the trainings, one per (design, seed), into --jobs groups of about equal cost
    (largest first, each to the cheapest group so far) and run each group in its own
    process, all appending to the same log (one short line per write). Splitting by
    training rather than by design lets a benchmark of one design use every core; with a
    seed-free start, a design's seeds stay in one process, which computes their start once.
    Returns when every process has ended."""
    groups: list[list[tuple[str, int]]] = [[] for _ in range(args.jobs)]
    units = ([[(d, s) for s in range(args.seeds)] for d in designs] if seed_free_start(args)
             else [[t] for t in seed_major(designs, args.seeds)])
    for unit in sorted(units, key=lambda u: -len(u) * design_cost(space, u[0][0])):
        min(groups, key=lambda g: sum(design_cost(space, d) for d, _ in g)).extend(unit)
    children = []
    for group in filter(None, groups):
        group.sort(key=lambda t: t[1])  # seed-major within a process too
        argv = [sys.executable, str(Path(__file__).resolve()),
                "--designs", ",".join(dict.fromkeys(d for d, _ in group)),
                "--trainings", ",".join(f"{d}@{s}" for d, s in group),
                "--jobs", "1", "--no-summary", "--out", args.out]
        # The settings that key the log (so the children's records count here), plus these.
        settings = {**settings_key(args), "seeds": args.seeds,
                    "head_lr_scale": args.head_lr_scale, "warmup_frac": args.warmup_frac,
                    "mapping_lr_scale": args.mapping_lr_scale, "init_draws": args.init_draws}
        for name, value in settings.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        children.append(subprocess.Popen(argv))
    failed = [c.args for c in children if c.wait() != 0]
    if failed:
        raise SystemExit(f"{len(failed)} of {len(children)} training processes failed; rerun "
                         "the same command to continue where they stopped")


def train_once(space, arch, backbone, slots, num_classes, metric, seed, args,
               shared_start: dict | None = None) -> dict:
    """`shared_start`: where a seed-free start is kept for the design's next seeds (empty
    until its first training has computed it)."""
    # --vary splits the seed's two sources of randomness, to see which one the seed noise is.
    init_seed = 0 if args.vary == "order" else seed
    order_seed = 0 if args.vary == "init" else seed
    torch.manual_seed(init_seed)
    model = build_pmf(space, arch, backbone, num_classes)
    start = model.first_fused_slot
    caches = {name: s.at(start) for name, s in slots.items()}
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, head_lr_scale=args.head_lr_scale,
                      mapping_lr_scale=args.mapping_lr_scale,
                      warmup_frac=args.warmup_frac, init_draws=args.init_draws, seed=init_seed,
                      batch_size=args.batch_size or space.batch_size,
                      precision=space.precision, prompt_init=args.prompt_init,
                      head_init=args.head_init, progress=False)
    started = time.perf_counter()
    if shared_start:
        model.load_trainable_state_dict(shared_start["weights"])
        draw_scores = None
    else:
        draw_scores = initialise_training(model, backbone, caches["train"], caches["val"], cfg,
                                          num_classes, metric)
        if shared_start is not None:
            shared_start["weights"] = {k: v.clone()
                                       for k, v in model.trainable_state_dict().items()}
    init_seconds = time.perf_counter() - started  # drawing starts, fitting the heads

    def forward(cache, rows):
        return model.forward_from(cache.streams(rows), cache.slot)
    # With fitted heads, fit scores the start itself (epoch 0); otherwise score it here.
    initial = None if args.head_init == "probe" else evaluate(forward, caches["val"], cfg,
                                                              metric)
    result = fit(model, forward, caches["train"], caches["val"],
                 dataclasses.replace(cfg, seed=order_seed), metric)
    if initial is None:
        initial = result.start_val
    model.eval()
    test_logits = predict(forward, caches["test"], cfg)
    val_logits = (result.val_logits if result.val_logits is not None
                  else predict(forward, caches["val"], cfg))
    return {"val": result.best_val, "test": score(metric, test_logits, caches["test"].labels),
            **threshold_free_scores({"val": val_logits, "test": test_logits}, caches,
                                    num_classes),
            "val_at_start": initial,
            "history": [h[f"val_{metric}"] for h in result.history],
            "init_seconds": init_seconds,
            **({"init_draw_scores": draw_scores} if draw_scores else {}),
            "seconds": result.seconds}


def threshold_free_scores(logits_by_split: dict, caches, num_classes: int) -> dict:
    """The kept model's mean log-likelihood (val_ll, test_ll) and, with two classes, its ROC
    AUC (val_auc, test_auc), from its logits per split: scores of the same model that do not
    hinge on where its decision threshold sits, to see whether they rank designs with less
    seed noise."""
    scores = {}
    for split, logits in logits_by_split.items():
        labels = caches[split].labels
        if labels.dim() == 1:
            scores[f"{split}_ll"] = mean_log_likelihood(logits, labels)
            if num_classes == 2:
                scores[f"{split}_auc"] = binary_auc(logits, labels)
    return scores


def finite_or_null(value):
    """JSON has no NaN: an undefined statistic (e.g. tau over constant scores) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite_or_null(v) for v in value]
    return value


def print_table(result: dict) -> None:
    print("\n| design | GiB | val per seed | mean ± std | seeds past the plateau |\n"
          "|---|---|---|---|---|")
    for r in result["per_design"]:
        print(f"| {r['arch_description']} | {r['mem_gb']:.3f} | "
              + " / ".join(f"{v:.3f}" for v in r["val_scores"])
              + f" | {r['val_mean']:.3f} ± {r['val_std']:.3f} | "
              f"{r['seeds_past_plateau']}/{len(r['val_scores'])} |")
    lo, hi = result["seed_tau_ci"]
    print(f"\nseed τ {result['seed_tau']:.3f} (90% CI {lo:.3f} – {hi:.3f}); one run against "
          f"the other seeds' mean τ {result['single_run_tau']:.3f}; "
          + "".join(f"two {k}-seed means τ {t:.3f}; " for k, t in
                    result["mean_of_k_tau"].items() if int(k) > 1)
          + "spread "
          f"{result['spread']:.3f} = {result['spread_over_noise']:.1f} × mean seed std "
          f"{result['mean_seed_std']:.3f}; {result['minutes']:.1f} min")
    for name, agreement in result["seed_tau_by_score"].items():
        lo, hi = agreement["seed_tau_ci"]
        print(f"ranked by {name}: seed τ {agreement['seed_tau']:.3f} (90% CI {lo:.3f} – "
              f"{hi:.3f}); spread {agreement['spread_over_noise']:.1f} × mean seed std")


if __name__ == "__main__":
    main()
