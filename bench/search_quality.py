"""Search quality: the searched architecture vs. the PMF reference design that fits the same
budget vs. the best of a random search with the same number of trials on the same supernet,
all retrained standalone the same way.

Takes a finished `autopmf search` run (its supernet is reused, not retrained), runs the random
search beside it (`RUN-random`), retrains the three designs with the same epochs and seed
(`RUN-quality/<name>`, two at a time, one thread each), and prints one markdown table row per
design plus a JSON summary. Every step is a plain `autopmf` command and resumes: re-running
skips what is finished.

    python bench/search_quality.py runs/demo --epochs 6
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


def reference_that_fits(space_file: Path, budget_gb: float) -> tuple[str, float]:
    from autopmf.memory import GIB, load_profile, reference_within_budget
    from autopmf.space import load_space

    space = load_space(space_file)
    found = reference_within_budget(space, int(budget_gb * GIB), load_profile(space))
    if found is None:
        raise SystemExit(f"no PMF reference design fits {budget_gb} GiB")
    arch, nbytes = found
    fused = space.fused_slots(arch)
    return f"reference:{len(fused)}:{arch[f'prompt_{fused[0]}']}", nbytes / GIB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run", type=Path, help="a finished autopmf search run")
    parser.add_argument("--epochs", type=int, default=6, help="retrain epochs (all designs)")
    parser.add_argument("--jobs", type=int, default=2, help="retrains run side by side")
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
    reference, reference_gb = reference_that_fits(Path(space_name), budget)
    common = ["--epochs", str(args.epochs), "--threads", "1", "--quiet", "--no-baselines",
              "--resume"]
    jobs = {
        "search": ["retrain", "--arch", str(args.run / "best_arch.yaml")],
        "random": ["retrain", "--arch", str(random_run / "best_arch.yaml")],
        "reference": ["train", "--space", space_name, "--data", data, "--arch", reference],
    }
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda item: run(item[1] + ["--out", str(quality / item[0])] + common),
                      jobs.items()))

    rows = {}
    for name in jobs:
        metrics = json.loads((quality / name / "metrics.json").read_text())
        source = {"search": args.run, "random": random_run}.get(name)
        inherited = read_yaml(source / "best_arch.yaml") if source else {}
        rows[name] = {"arch": metrics["arch"], "fused_slots": metrics["fused_slots"],
                      "mem_gb": inherited.get("mem_gb", reference_gb),
                      "inherited_val": inherited.get("score"),
                      "val": metrics["val_score"], "test": metrics["test_score"]}
    print(f"\nbudget {budget} GiB, {trials} trials, retrain {args.epochs} epochs, data {data}")
    print("| design | fused slot:M | predicted GiB | inherited val | retrained val | test |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        slots = " ".join(f"{j}:M{row['arch'][f'prompt_{j}']}" for j in row["fused_slots"])
        inherited = "—" if row["inherited_val"] is None else f"{row['inherited_val']:.3f}"
        print(f"| {name} | {slots} | {row['mem_gb']:.3f} | {inherited} | {row['val']:.3f} | "
              f"{row['test']:.3f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
