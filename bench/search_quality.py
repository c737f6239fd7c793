"""Search quality: the searched architecture vs. the PMF reference design that fits the same
budget vs. the best of a random search with the same number of trials on the same supernet,
all retrained standalone the same way.

Takes a finished `autopmf search` run (its supernet is reused, not retrained), runs the random
search beside it (`RUN-random`), retrains the three designs with the same epochs and seeds,
all on the search's data split (`retrains/<design>-split<D>-s<K>` beside the runs, two at a
time, one thread each: a design that several strategies or search seeds found on one split
trains once), and prints one markdown table row per design (mean and range over the seeds).
Every step is a plain `autopmf` command and resumes: re-running skips what is finished.

Several search runs (the same search with other --seed values) make a search-seeds x
retrain-seeds study: each gets its own random search and retrains, and
bench/results/search_quality.json gets, per strategy, the mean, std and per-seed test scores,
the number of designs in the space that fit the budget, and in how many search seeds
evolution's winner beat random search's. `--sample N` adds N designs drawn uniformly from
those that fit, retrained once each: how many of them come within one seed std of the best
design found, for when evolution and random search tie because good designs are common.

    python bench/search_quality.py runs/demo --epochs 5 --seeds 3
    python bench/search_quality.py runs/s0 runs/s1 runs/s2 --epochs 2 --lr 3e-4 --seeds 3 \
        --sample 12
"""

from __future__ import annotations

import argparse
import json
import random
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


def reference_that_fits(space, budget_gb: float, num_classes: int) -> tuple[str, float, dict]:
    """The budget's PMF reference (`Budget.pmf_reference`): (reference:N:M, predicted GiB,
    architecture)."""
    from autopmf.budget import Budget
    from autopmf.memory import GIB

    budget = Budget.load(space, budget_gb, num_classes)
    found = budget.pmf_reference()
    if found is None:
        raise SystemExit(f"no PMF reference design fits {budget_gb} GiB")
    n, m, arch = found
    return f"reference:{n}:{m}", budget.estimate(arch) / GIB, arch


def mean_and_range(scores: list[float]) -> str:
    """0.712 for one seed; 0.712 (0.690–0.734) for several."""
    mean = sum(scores) / len(scores)
    if len(scores) == 1:
        return f"{mean:.3f}"
    return f"{mean:.3f} ({min(scores):.3f}–{max(scores):.3f})"


def feasible_count(space, budget_gb: float, num_classes: int) -> tuple[int, bool]:
    """(designs that fit, exact): counted one by one in a small space, estimated from a
    uniform sample of designs in a large one (`Budget.designs_within`)."""
    from autopmf.budget import Budget

    fitting, _, exact = Budget.load(space, budget_gb, num_classes).designs_within()
    return fitting, exact


def run_budget(search_run: Path) -> tuple:
    """(space, budget GiB, number of classes) of a finished search run."""
    from autopmf.space import space_from_dict

    config = read_yaml(search_run / "config.yaml")
    metrics = json.loads((search_run / "supernet_metrics.json").read_text())
    return space_from_dict(config["space"]), config["budget_gb"], metrics["num_classes"]


def feasible_archs(space, budget_gb: float) -> list[dict]:
    """Every distinct design of the space that the memory model fits into the budget (a slot
    that does not fuse has no other choice, as in `space.canonical`): for `--sample`, in a
    space small enough to list."""
    import itertools

    from autopmf.memory import GIB, estimate_bytes, load_profile

    profile, limit = load_profile(space), budget_gb * GIB
    choices = space.choices()
    per_slot = {j: [k for k in choices if k.rsplit("_", 1)[-1] == str(j) and k != f"fusion_{j}"]
                for j in space.fusable_slots}
    fits = []
    for fusion in itertools.product((0, 1), repeat=len(space.fusable_slots)):
        fused = [j for j, on in zip(space.fusable_slots, fusion) if on]
        base = {f"fusion_{j}": on for j, on in zip(space.fusable_slots, fusion)}
        base.update({k: choices[k][0] for j in space.fusable_slots for k in per_slot[j]})
        keys = [k for j in fused for k in per_slot[j]]
        for values in itertools.product(*(choices[k] for k in keys)):
            arch = dict(base, **dict(zip(keys, values)))
            if estimate_bytes(space, arch, profile) <= limit:
                fits.append(arch)
    return fits


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
    parser.add_argument("--sample", type=int, default=0, metavar="N",
                        help="also retrain N designs drawn uniformly from those that fit the "
                        "budget (seed 0, once each, on the first run's split): how many come "
                        "within one std of the best design found, i.e. how common good "
                        "designs are when evolution and random search tie")
    args = parser.parse_args()
    # Counted before any random search runs, so that a --sample this space cannot take is
    # refused at once.
    feasible, exact = feasible_count(*run_budget(args.runs[0]))
    if args.sample and not exact:
        raise SystemExit(f"--sample lists every design that fits; this space has about "
                         f"{feasible:,}: leave --sample out")
    studies = [plan(run, args) for run in args.runs]
    first = studies[0]
    sample = (random.Random(0).sample(feasible_archs(first["space"], first["budget_gb"]),
                                      args.sample) if args.sample else [])
    # One pool for every study: a design found by several strategies or search seeds on the
    # same split trains once per seed (same arch, seed, split and settings: the same run).
    jobs = {}
    for st in studies:
        jobs.update(st["jobs"])
    for arch in sample:
        jobs.update(first["retrain"].jobs(arch, 1))
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(run, jobs.values()))
    studies = [dict(st, rows=table(st, args)) for st in studies]
    strategies = {"evolution": "search", "random": "random", "reference": "reference"}
    result = {"budget_gb": studies[0]["budget_gb"], "trials": studies[0]["trials"],
              "epochs": args.epochs, "lr": args.lr, "search_seeds": len(studies),
              "retrain_seeds": args.seeds,
              # The searches' finalists stage (0: winners by inherited score alone).
              "finalists": first["config"].get("finalists", 0),
              "finalist_epochs": first["config"].get("finalist_epochs"),
              "data": studies[0]["data"],
              "data_seeds": [st["split_seed"] for st in studies],
              "feasible_designs": feasible,
              # False: estimated from a uniform sample of designs (a space too large to list)
              "feasible_designs_exact": exact,
              "strategies": {}}
    for strategy, name in strategies.items():
        per_seed = [st["rows"][name]["test"] for st in studies]
        flat = [v for scores in per_seed for v in scores]
        result["strategies"][strategy] = {
            "mean": statistics.mean(flat), "std": statistics.stdev(flat) if len(flat) > 1 else 0.0,
            "per_seed": per_seed, "val_per_seed": [st["rows"][name]["val"] for st in studies],
            # The supernet's score of the design (the search's own log; the reference's from
            # the search run's reference.json): what the strategy optimised.
            "inherited_per_seed": [st["rows"][name]["inherited_val"] for st in studies],
            # Which trial found the winner: past the population's size, a mutation did.
            "found_at_trial_per_seed": [st["inherited"].get(name, {}).get("trial")
                                        for st in studies],
            # With --finalists: per search seed, each finalist's trial, inherited and
            # standalone validation scores (finalists.json); the winner is `archs`.
            **({"finalists_per_seed": [st["finalists"][name] for st in studies]}
               if name in studies[0]["finalists"] else {}),
            "archs": [st["rows"][name]["arch"] for st in studies]}
    result["evolution_beats_random"] = [
        statistics.mean(st["rows"]["search"]["test"])
        > statistics.mean(st["rows"]["random"]["test"]) for st in studies]
    if sample:
        result["feasible_sample"] = sampled(studies, sample, feasible)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "strategies"}))
    print(f"wrote {args.out}")


def sampled(studies: list[dict], sample: list[dict], feasible: int) -> dict:
    """The sampled designs' test scores (one seed each), against the best design the studies
    retrained (highest mean test): how many are within one of its seed stds."""
    rows = [row for st in studies for row in st["rows"].values()]
    best = max(rows, key=lambda row: statistics.mean(row["test"]))
    mean, std = statistics.mean(best["test"]), statistics.stdev(best["test"])
    retrain = studies[0]["retrain"]
    runs = [read_metrics(retrain.folders(arch, 1)[0]) for arch in sample]
    test = [m["test_score"] for m in runs]
    within = sum(score >= mean - std for score in test)
    return {"designs": len(sample), "retrain_seeds": 1, "archs": sample, "test": test,
            "val": [m["val_score"] for m in runs],
            "best": {"arch": best["arch"], "test_mean": mean, "test_std": std},
            "within_1std_of_best": within,
            "estimated_feasible_within_1std": round(within / len(sample) * feasible)}


def random_search(search_run: Path, random_run: Path, space_file: Path, config: dict) -> None:
    """The same number of random trials on the search's own supernet (`--supernet-from`)."""
    from autopmf.choices import PROBE_EXAMPLES

    supernet = config["supernet"]
    run(["search", "--space", str(space_file), "--data", config["data"],
         "--budget-gb", str(config["budget_gb"]), "--trials", str(config["trials"]),
         "--strategy", "random", "--seed", str(config["seed"]),
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
         *(["--data-seed", str(supernet["data_seed"])] if "data_seed" in supernet else []),
         "--supernet-scope", "budget" if supernet.get("budget_gb") else "full",
         "--inherited-score", config.get("inherited_score", "heads"),
         "--probe-examples", str(config.get("probe_examples", PROBE_EXAMPLES)),
         # The same finalists stage, if the search had one: both strategies choose alike.
         "--finalists", str(config.get("finalists", 0)),
         "--finalist-epochs", str(config.get("finalist_epochs", 2)),
         "--supernet-from", str(search_run), "--out", str(random_run), "--quiet", "--resume"])


def plan(search_run: Path, args) -> dict:
    """One search run: its random search (run now), and the retrain jobs of its three designs:
    {folder: command}, each folder named by design, seed and split, beside the runs."""
    from autopmf.space import load_space

    config = read_yaml(search_run / "config.yaml")
    budget, data, supernet = config["budget_gb"], config["data"], config["supernet"]
    # Every retrain, like the supernet, learns on the search's split (its --data-seed).
    split_seed = supernet.get("data_seed", config["seed"])
    random_run = search_run.with_name(search_run.name + "-random")
    retrains = search_run.parent / "retrains"
    retrains.mkdir(parents=True, exist_ok=True)
    space_file = search_run.parent / f"{search_run.name}-space.yaml"  # as the search recorded it
    space_file.write_text(yaml.safe_dump(config["space"], sort_keys=False))
    if not (random_run / "best_arch.yaml").exists():
        random_search(search_run, random_run, space_file, config)
    space = load_space(str(space_file))
    _, reference_gb, reference_arch = reference_that_fits(space, budget,
                                                          run_budget(search_run)[2])
    archs = {"search": read_yaml(search_run / "best_arch.yaml")["arch"],
             "random": read_yaml(random_run / "best_arch.yaml")["arch"],
             "reference": reference_arch}
    retrain = Retrains(space, space_file, data, split_seed, supernet.get("prompt_init", "paper"),
                       retrains, args)
    folders, jobs = {}, {}  # per design, its retrain folders; per folder, its command
    for name, arch in archs.items():
        folders[name] = retrain.folders(arch, args.seeds)
        jobs.update(retrain.jobs(arch, args.seeds))
    inherited = {name: read_yaml(folder / "best_arch.yaml")
                 for name, folder in (("search", search_run), ("random", random_run))}
    finalists = {name: [{k: f[k] for k in ("trial", "inherited_score", "val_score")}
                        for f in json.loads((folder / "finalists.json").read_text())[
                            "finalists"]]
                 for name, folder in (("search", search_run), ("random", random_run))
                 if (folder / "finalists.json").exists()}
    reference_file = search_run / "reference.json"
    if reference_file.exists():
        inherited["reference"] = {"score": json.loads(reference_file.read_text())[
            "inherited_score"]}
    return {"budget_gb": budget, "trials": config["trials"], "data": data, "space": space,
            "config": config,
            "split_seed": split_seed, "archs": archs, "folders": folders, "jobs": jobs,
            "inherited": inherited, "finalists": finalists, "reference_gb": reference_gb,
            "run": search_run,
            "retrain": retrain}


class Retrains:
    """Standalone retrains of designs on one split, each in `retrains/<design>-split<D>-s<K>`
    (so one design trains once per seed, whoever asks for it), all the same way."""

    def __init__(self, space, space_file: Path, data: str, split_seed: int, prompt_init: str,
                 folder: Path, args):
        self.space, self.space_file, self.data = space, space_file, data
        self.split_seed, self.folder = split_seed, folder
        self.common = ["--epochs", str(args.epochs), "--lr", str(args.lr), "--threads", "1",
                       "--quiet", "--no-baselines", "--prompt-init", prompt_init, "--resume",
                       "--data-seed", str(split_seed)]

    def _slug(self, arch: dict) -> str:
        from autopmf.report import design_slug

        return f"{design_slug(self.space, arch)}-split{self.split_seed}"

    def folders(self, arch: dict, seeds: int) -> list[Path]:
        return [self.folder / f"{self._slug(arch)}-s{seed}" for seed in range(seeds)]

    def jobs(self, arch: dict, seeds: int) -> dict[Path, list[str]]:
        """{folder: the `autopmf train` command that fills it}."""
        arch_file = self.folder / f"{self._slug(arch)}.yaml"
        arch_file.write_text(yaml.safe_dump(self.space.canonical(arch), sort_keys=True))
        return {folder: ["train", "--space", str(self.space_file), "--data", self.data,
                         "--arch", str(arch_file), "--seed", str(seed), "--out", str(folder)]
                + self.common for seed, folder in enumerate(self.folders(arch, seeds))}


def read_metrics(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def table(st: dict, args) -> dict:
    """The three designs' retrained scores; prints their markdown table."""
    from autopmf.report import describe_arch

    rows = {}
    for name, folders in st["folders"].items():
        runs = [read_metrics(folder) for folder in folders]
        inherited = st["inherited"].get(name, {})
        rows[name] = {"arch": runs[0]["arch"], "fused_slots": runs[0]["fused_slots"],
                      "retrained_in": [str(folder) for folder in folders],
                      "mem_gb": inherited.get("mem_gb", st["reference_gb"]),
                      "inherited_val": inherited.get("score"),
                      "val": [m["val_score"] for m in runs],
                      "test": [m["test_score"] for m in runs]}
    print(f"\n{st['run']}: budget {st['budget_gb']} GiB, {st['trials']} trials, retrain "
          f"{args.epochs} epochs, data {st['data']} (split {st['split_seed']}), "
          f"seeds 0..{args.seeds - 1}")
    print("| design | fused | predicted GiB | inherited val | retrained val | test |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        slots = describe_arch(row["arch"], st["space"].fusable_slots).removeprefix("fuse ")
        inherited = "—" if row["inherited_val"] is None else f"{row['inherited_val']:.3f}"
        print(f"| {name} | {slots} | {row['mem_gb']:.3f} | {inherited} | "
              f"{mean_and_range(row['val'])} | {mean_and_range(row['test'])} |")
    return rows


if __name__ == "__main__":
    main()
