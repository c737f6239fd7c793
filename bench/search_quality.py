"""Search quality: the searched architecture vs. the PMF reference design that fits the same
budget vs. the best of a random search with the same number of trials on the same supernet,
all retrained standalone the same way.

Takes a finished `autopmf search` run (its supernet is reused, not retrained), runs the random
search beside it (`RUN-random`), retrains the three designs with the same epochs and seeds,
all on the search's data split (`RUN-quality/<name>[-sK]`, two at a time, one thread each),
and prints one markdown table row per design (mean and range over the seeds) plus a JSON
summary. Every step is a plain `autopmf` command and resumes: re-running skips what is
finished.

    python bench/search_quality.py runs/demo --epochs 5 --seeds 3
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="a finished autopmf search run")
    parser.add_argument("--epochs", type=int, default=6, help="retrain epochs (all designs)")
    parser.add_argument("--jobs", type=int, default=2, help="retrains run side by side")
    parser.add_argument("--seeds", type=int, default=1,
                        help="retrain each design with seeds 0..N-1 (on the search's data "
                        "split) and report the mean and range")
    args = parser.parse_args()
    config = read_yaml(args.run / "config.yaml")
    budget, data, trials = config["budget_gb"], config["data"], config["trials"]
    supernet = config["supernet"]
    random_run = args.run.with_name(args.run.name + "-random")
    quality = args.run.with_name(args.run.name + "-quality")
    quality.mkdir(parents=True, exist_ok=True)
    space_name = str(quality / "space.yaml")  # the search's space, as it recorded it
    Path(space_name).write_text(yaml.safe_dump(config["space"], sort_keys=False))
    if not (random_run / "best_arch.yaml").exists():
        run(["search", "--space", space_name, "--data", data, "--budget-gb", str(budget),
             "--trials", str(trials), "--strategy", "random", "--seed", str(config["seed"]),
             "--epochs", str(supernet["epochs"]), "--sampling", supernet["sampling"],
             "--warmup-epochs", str(supernet.get("warmup_epochs", 0)),
             "--warmup", supernet.get("warmup", "largest"),
             "--lr", str(supernet["lr"]), "--head-lr-scale", str(supernet["head_lr_scale"]),
             "--batch-size", str(supernet["batch_size"]),
             "--precision", supernet["precision"],
             "--supernet-scope", "budget" if supernet.get("budget_gb") else "full",
             "--supernet-from", str(args.run), "--out", str(random_run), "--quiet",
             "--resume"])
    from autopmf.space import load_space

    space = load_space(space_name)
    reference, reference_gb, reference_arch = reference_that_fits(space, budget)
    common = ["--epochs", str(args.epochs), "--threads", "1", "--quiet", "--no-baselines",
              "--resume", "--data-seed", str(config["seed"])]
    designs = {
        "search": ["retrain", "--arch", str(args.run / "best_arch.yaml")],
        "random": ["retrain", "--arch", str(random_run / "best_arch.yaml")],
        "reference": ["train", "--space", space_name, "--data", data, "--arch", reference],
    }
    archs = {"search": read_yaml(args.run / "best_arch.yaml")["arch"],
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
        source = {"search": args.run, "random": random_run}.get(name)
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
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
