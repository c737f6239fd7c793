"""Search quality: the searched architecture vs. the PMF reference design that fits the same
budget vs. the best of a random search with the same number of trials on the same supernet,
all retrained standalone the same way.

Takes a finished `autopmf search` run (its supernet is reused, not retrained), runs the random
search beside it (`RUN-random`), retrains the three designs with the same epochs and seeds,
all on the search's data split (`RUN-quality/<name>[-sK]`, two at a time, one thread each),
and prints one markdown table row per design (mean and range over the seeds). Every step is
a plain `autopmf` command and resumes: re-running skips what is finished.

Several search runs (the same search with other --seed values) make a search-seeds x
retrain-seeds study: each gets its own random search and retrains, and
bench/results/search_quality.json gets, per strategy, the mean, std and per-seed test scores,
the number of designs in the space that fit the budget, and in how many search seeds
evolution's winner beat random search's.

    python bench/search_quality.py runs/demo --epochs 5 --seeds 3
    python bench/search_quality.py runs/s0 runs/s1 runs/s2 --epochs 5 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

AUTOPMF = [sys.executable, "-m", "autopmf.cli"]


def run(args: list[str]) -> None:
    print("$ autopmf " + " ".join(args), flush=True)
    subprocess.run(AUTOPMF + args, check=True, stdout=subprocess.DEVNULL)


def read_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def reference_that_fits(space, budget_gb: float) -> tuple[str, float, dict]:
    """The budget's PMF reference: (reference:N:M, predicted GiB, architecture)."""
    from autopmf.memory import GIB, load_profile, reference_within_budget

    found = reference_within_budget(space, int(budget_gb * GIB), load_profile(space))
    if found is None:
        raise SystemExit(f"no PMF reference design fits {budget_gb} GiB")
    arch, nbytes = found
    fused = space.fused_slots(arch)
    return f"reference:{len(fused)}:{arch[f'prompt_{fused[0]}']}", nbytes / GIB, arch


def mean_and_range(scores: list[float]) -> str:
    """0.712 for one seed; 0.712 (0.690–0.734) for several."""
    mean = sum(scores) / len(scores)
    if len(scores) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(scores):.3f}–{max(scores):.3f})"


def feasible_designs(space, budget_gb: float) -> int:
    """How many distinct designs of the space the memory model fits into the budget (a slot
    that does not fuse has no other choice, as in `space.canonical`)."""
    import itertools

    from autopmf.memory import GIB, estimate_bytes, load_profile

    profile, limit = load_profile(space), budget_gb * GIB
    choices = space.choices()
    per_slot = {j: [k for k in choices if k.rsplit("_", 1)[-1] == str(j) and k != f"fusion_{j}"]
                for j in space.fusable_slots}
    count = 0
    for fusion in itertools.product((0, 1), repeat=len(space.fusable_slots)):
        fused = [j for j, on in zip(space.fusable_slots, fusion) if on]
        base = {f"fusion_{j}": on for j, on in zip(space.fusable_slots, fusion)}
        base.update({k: choices[k][0] for j in space.fusable_slots for k in per_slot[j]})
        keys = [k for j in fused for k in per_slot[j]]
        for values in itertools.product(*(choices[k] for k in keys)):
            arch = dict(base, **dict(zip(keys, values)))
            count += estimate_bytes(space, arch, profile) <= limit
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", type=Path, nargs="+",
                        help="finished autopmf search runs (one per search seed)")
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).parent / "results" / "search_quality.json")
    parser.add_argument("--epochs", type=int, default=6, help="retrain epochs (all designs)")
    parser.add_argument("--lr", type=float, default=3e-3, help="retrain learning rate")
    parser.add_argument("--jobs", type=int, default=2, help="retrains run side by side")
    parser.add_argument("--seeds", type=int, default=1,
                        help="retrain each design with seeds 0..N-1 (on the search's data "
                        "split) and report the mean and range")
    args = parser.parse_args()
    studies = [study(run, args) for run in args.runs]
    strategies = {"evolution": "search", "random": "random", "reference": "reference"}
    result = {"budget_gb": studies[0]["budget_gb"], "trials": studies[0]["trials"],
              "epochs": args.epochs, "lr": args.lr, "search_seeds": len(studies),
              "retrain_seeds": args.seeds,
              "data": studies[0]["data"],
              "feasible_designs": feasible_designs(studies[0]["space"], studies[0]["budget_gb"]),
              "strategies": {}}
    for strategy, name in strategies.items():
        per_seed = [st["rows"][name]["test"] for st in studies]
        flat = [v for scores in per_seed for v in scores]
        result["strategies"][strategy] = {
            "mean": statistics.mean(flat), "std": statistics.stdev(flat) if len(flat) > 1 else 0.0,
            "per_seed": per_seed, "archs": [st["rows"][name]["arch"] for st in studies]}
    result["evolution_beats_random"] = [
        statistics.mean(st["rows"]["search"]["test"])
        > statistics.mean(st["rows"]["random"]["test"]) for st in studies]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "strategies"}))
    print(f"wrote {args.out}")


def study(search_run: Path, args) -> dict:
    """One search run: its random search, the three designs' retrains, their table."""
    config = read_yaml(search_run / "config.yaml")
    budget, data, trials = config["budget_gb"], config["data"], config["trials"]
    supernet = config["supernet"]
    # Every retrain, like the supernet, learns on the search's split (its --data-seed).
    split_seed = supernet.get("data_seed", config["seed"])
    random_run = search_run.with_name(search_run.name + "-random")
    quality = search_run.with_name(search_run.name + "-quality")
    quality.mkdir(parents=True, exist_ok=True)
    space_name = str(quality / "space.yaml")  # the search's space, as it recorded it
    Path(space_name).write_text(yaml.safe_dump(config["space"], sort_keys=False))
    from autopmf.choices import PROBE_EXAMPLES

    if not (random_run / "best_arch.yaml").exists():
        run(["search", "--space", space_name, "--data", data, "--budget-gb", str(budget),
             "--trials", str(trials), "--strategy", "random", "--seed", str(config["seed"]),
             "--epochs", str(supernet["epochs"]), "--sampling", supernet["sampling"],
             "--warmup-epochs", str(supernet.get("warmup_epochs", 0)),
             "--warmup", supernet.get("warmup", "largest"),
             "--lr", str(supernet["lr"]), "--head-lr-scale", str(supernet["head_lr_scale"]),
             "--batch-size", str(supernet["batch_size"]),
             "--precision", supernet["precision"],
             "--prompt-init", supernet.get("prompt_init", "paper"),
             "--head-init", supernet.get("head_init", "probe"),
             "--few-shot", supernet.get("few_shot", "none"),
             *(["--distill"] if supernet.get("distill") else []),
             "--data-seed", str(split_seed),
             "--supernet-scope", "budget" if supernet.get("budget_gb") else "full",
             "--inherited-score", config.get("inherited_score", "heads"),
             "--probe-examples", str(config.get("probe_examples", PROBE_EXAMPLES)),
             "--supernet-from", str(search_run), "--out", str(random_run), "--quiet",
             "--resume"])
    from autopmf.space import load_space

    space = load_space(space_name)
    reference, reference_gb, reference_arch = reference_that_fits(space, budget)
    common = ["--epochs", str(args.epochs), "--lr", str(args.lr), "--threads", "1", "--quiet",
              "--no-baselines",
              "--prompt-init", supernet.get("prompt_init", "paper"),
              "--resume", "--data-seed", str(split_seed)]
    designs = {
        "search": ["retrain", "--arch", str(search_run / "best_arch.yaml")],
        "random": ["retrain", "--arch", str(random_run / "best_arch.yaml")],
        "reference": ["train", "--space", space_name, "--data", data, "--arch", reference],
    }
    archs = {"search": read_yaml(search_run / "best_arch.yaml")["arch"],
             "random": read_yaml(random_run / "best_arch.yaml")["arch"],
             "reference": reference_arch}
    # A design that is the same architecture as an earlier one (the random search often
    # draws the evolution's winner) shares its retrains: same arch, seed and split.
    canonical = {name: space.canonical(arch) for name, arch in archs.items()}
    trained_as = {name: next(n for n in archs if canonical[n] == canonical[name])
                  for name in archs}

    def out_dir(name: str, seed: int) -> Path:
        name = trained_as[name]
        return quality / (name if seed == 0 else f"{name}-s{seed}")
    jobs = [design + ["--seed", str(seed), "--out", str(out_dir(name, seed))] + common
            for seed in range(args.seeds) for name, design in designs.items()
            if trained_as[name] == name]
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, jobs))

    rows = {}
    for name in designs:
        runs = [json.loads((out_dir(name, seed) / "metrics.json").read_text())
                for seed in range(args.seeds)]
        source = {"search": search_run, "random": random_run}.get(name)
        inherited = read_yaml(source / "best_arch.yaml") if source else {}
        rows[name] = {"arch": runs[0]["arch"], "fused_slots": runs[0]["fused_slots"],
                      "retrained_as": trained_as[name],
                      "mem_gb": inherited.get("mem_gb", reference_gb),
                      "inherited_val": inherited.get("score"),
                      "val": [m["val_score"] for m in runs],
                      "test": [m["test_score"] for m in runs]}
    print(f"\nbudget {budget} GiB, {trials} trials, retrain {args.epochs} epochs, data {data}, "
          f"seeds 0..{args.seeds - 1}")
    print("| design | fused slot:M | predicted GiB | inherited val | retrained val | test |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        slots = " ".join(f"{j}:M{row['arch'][f'prompt_{j}']}" for j in row["fused_slots"])
        inherited = "—" if row["inherited_val"] is None else f"{row['inherited_val']:.3f}"
        same = "" if row["retrained_as"] == name else f" (= {row['retrained_as']})"
        print(f"| {name}{same} | {slots} | {row['mem_gb']:.3f} | {inherited} | "
              f"{mean_and_range(row['val'])} | {mean_and_range(row['test'])} |")
    return {"budget_gb": budget, "trials": trials, "data": data, "space": space, "rows": rows}


if __name__ == "__main__":
    main()
