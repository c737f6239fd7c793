"""`autopmf validate RUN`: can the supernet be trusted?

Flow: read the search log -> pick K scored, feasible, distinct candidates spread over memory
and score -> retrain each standalone from scratch (the `autopmf retrain` path, the data and
seed the search used) into RUN/validate/arch-NNN/ -> rank correlation (Kendall tau-b,
Spearman rho) between the inherited (log) scores and the standalone validation scores ->
validate.json, validate.png.

Each retrain directory is named after the candidate's trial (and seed), so a rerun (with the
same or a larger K, or more seeds) reuses every finished retrain and resumes an interrupted one.

Why `--seeds`: on a task whose learning starts with a plateau, how soon a standalone run
leaves it depends on its seed, so one retrain per architecture is a noisy target. With several
seeds the standalone score is their mean, and the rank correlation between the seeds' own
scores says how much agreement the standalone ranking itself allows.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import yaml

from autopmf.errors import AutopmfError
from autopmf.ranking import (average_ranks, correlation_ci, kendall_tau_b, regret,
                             seed_agreement, single_run_tau, spearman_rho, top_k_hit)
from autopmf.layout import CONFIG as CONFIG_NAME
from autopmf.report import describe_arch, summarize
from autopmf.space import space_from_dict

SUBDIR = "validate"
SUMMARY = "validate.json"
PLOT = "validate.png"


# ----- choosing the architectures --------------------------------------------------------
def candidates(entries: Sequence[Mapping], budget_gb: float) -> list[Mapping]:
    """Scored, feasible entries, one per architecture (its first trial)."""
    seen, out = set(), []
    for e in sorted(entries, key=lambda e: e["trial"]):
        key = json.dumps(e["arch"], sort_keys=True)
        if e["mem_gb"] <= budget_gb and key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _quantiles(values: Sequence[float]) -> np.ndarray:
    """Each value's average rank mapped onto [0, 1]."""
    n = len(values)
    return (average_ranks(values) - 1) / max(n - 1, 1)


def select_spread(entries: Sequence[Mapping], k: int) -> list[Mapping]:
    """K entries spread over both the memory range and the score range, deterministically.

    Rule: sort by (memory, trial) and cut into K contiguous strata of near-equal size, so each
    memory quantile range gives exactly one pick. Score targets are K evenly spaced score
    quantiles 0, 1/(K-1), ..., 1. Strata and targets are then matched greedily, closest first:
    of all (stratum, target) pairs still open, take the one whose stratum holds an entry with
    the score quantile nearest the target (ties: lower stratum, lower target, earlier trial),
    pick that entry, close both. Memory and score being correlated, a perfect Latin square is
    rarely possible; this keeps the memory spread exact and the score spread as close as the
    log allows. Returned in order of memory.
    """
    if not 1 <= k <= len(entries):
        raise ValueError(f"k={k} outside 1..{len(entries)}")
    by_mem = sorted(entries, key=lambda e: (e["mem_gb"], e["trial"]))
    score_q = _quantiles([e["score"] for e in by_mem])  # by position in by_mem
    strata = np.array_split(np.arange(len(by_mem)), k)
    targets = np.linspace(0.0, 1.0, k) if k > 1 else np.array([0.5])

    options = []  # (distance, stratum, target, trial, entry index)
    for s, stratum in enumerate(strata):
        for ti, target in enumerate(targets):
            distance, trial, i = min((abs(score_q[i] - target), by_mem[i]["trial"], int(i))
                                     for i in stratum)
            options.append((distance, s, ti, trial, i))
    picked, used_strata, used_targets = [], set(), set()
    for _, s, ti, _, i in sorted(options):
        if s not in used_strata and ti not in used_targets:
            used_strata.add(s)
            used_targets.add(ti)
            picked.append(i)
    return [by_mem[i] for i in sorted(picked)]


# ----- retraining ------------------------------------------------------------------------
def arch_dir(run: Path, trial: int, seed_offset: int = 0) -> Path:
    # Named after the trial, not the pick's position, so that another K reuses retrains.
    name = f"arch-{trial:03d}" + (f"-s{seed_offset}" if seed_offset else "")
    return run / SUBDIR / name


def _search_setting(run: Path) -> dict:
    """The space, data spec and data seed the search used, from RUN/config.yaml."""
    config = yaml.safe_load((run / CONFIG_NAME).read_text(encoding="utf-8"))
    if not isinstance(config.get("space"), Mapping) or not config.get("data"):
        raise AutopmfError(f"{run / CONFIG_NAME} names no space or data: is this a run "
                           "written by `autopmf search`?")
    # The supernet's seed is the one its data (and so its validation split) was loaded with.
    seed = (config.get("supernet") or {}).get("seed", config.get("seed", 0))
    return {"space": space_from_dict(config["space"], source=f"{run / CONFIG_NAME} (space)"),
            "data": config["data"], "seed": int(seed)}


def _check_same_settings(out: Path, identity: dict) -> None:
    """A retrain left by a validate with other settings (e.g. --epochs) is not resumed:
    train_architecture would refuse it too, but in words about --out, which validate has not."""
    from autopmf.run_dir import CONFIG

    if not (out / CONFIG).exists():
        return
    previous = yaml.safe_load((out / CONFIG).read_text(encoding="utf-8")) or {}
    if {key: previous.get(key) for key in identity} != identity:
        raise AutopmfError(f"{out} holds a retrain with other settings (another --epochs, or "
                           "a search redone since); rerun with those, or pass --force to "
                           "retrain every architecture")


def retrain_standalone(setting: dict, entry: Mapping, out: Path, epochs: int, device: str,
                       progress: bool, force: bool, seed_offset: int = 0) -> dict:
    """Standalone training from scratch, as `autopmf retrain` does, with the search's seed
    plus `seed_offset` (on the search's data split either way); a finished retrain in `out` is
    returned as it is, an interrupted one resumes."""
    from autopmf.train import TrainConfig
    from autopmf.train_arch import run_identity, train_architecture

    space = setting["space"]
    arch = space.validate(entry["arch"])
    seed = setting["seed"] + seed_offset
    cfg = TrainConfig(epochs=epochs, seed=seed, data_seed=setting["seed"] if seed_offset else None,
                      batch_size=space.batch_size, precision=space.precision, device=device,
                      progress=progress)
    if not force:
        _check_same_settings(out, run_identity(space, arch, setting["data"], cfg, None, False))
    # Baselines do not depend on the architecture: leave them out of every retrain.
    return train_architecture(space, arch, setting["data"], out, cfg, baselines=False,
                              force=force, resume=not force)


# ----- the whole command -----------------------------------------------------------------
def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None  # JSON has no NaN


def validate_run(run: str | Path, archs: int = 10, epochs: int = 8, device: str = "cpu",
                 progress: bool = True, force: bool = False, seeds: int = 1) -> dict:
    """Retrain `archs` of the run's candidates (`seeds` times each) and correlate inherited
    with standalone scores (the mean over seeds); writes RUN/validate/validate.json and
    validate.png and returns the summary."""
    from autopmf.files import atomic_write_json  # imports torch: not at parser-build time

    run = Path(run)
    summary = summarize(run)  # one-line errors for a missing run, log or config
    if archs < 2:
        raise AutopmfError(f"--archs {archs}: a rank correlation needs at least 2 architectures")
    if epochs < 1:
        raise AutopmfError(f"--epochs {epochs}: give at least 1 epoch")
    if seeds < 1:
        raise AutopmfError(f"--seeds {seeds}: give at least 1 seed")
    pool = candidates(summary["all_scored"], summary["budget_gb"])
    if archs > len(pool):
        raise AutopmfError(f"--archs {archs}: {run} has only {len(pool)} distinct scored "
                           f"candidates within the budget; ask for at most {len(pool)}")
    setting = _search_setting(run)
    rows = []
    picks = select_spread(pool, archs)
    # Seed by seed, so that every architecture has its first seed before any has a second.
    runs = {}
    for offset in range(seeds):
        for i, entry in enumerate(picks, 1):
            out = arch_dir(run, entry["trial"], offset)
            if progress:
                which = f"seed {offset + 1}/{seeds}, " if seeds > 1 else ""
                print(f"validate: [{which}{i}/{archs}] trial {entry['trial']} -> {out}",
                      file=sys.stderr, flush=True)
            runs[entry["trial"], offset] = retrain_standalone(
                setting, entry, out, epochs, device, progress, force, offset)
    rows = []
    for entry in picks:
        done = [runs[entry["trial"], offset] for offset in range(seeds)]
        val, test = [m["val_score"] for m in done], [m["test_score"] for m in done]
        rows.append({"name": arch_dir(run, entry["trial"]).name, "trial": entry["trial"],
                     "arch": entry["arch"], "mem_gb": entry["mem_gb"],
                     "inherited_score": entry["score"], "val_score": float(np.mean(val)),
                     "test_score": float(np.mean(test)), "val_scores": val,
                     "test_scores": test})
    result = {"run": str(run), "metric": summary["metric"], "epochs": epochs, "n": len(rows),
              "designs": len(rows), "seeds": seeds,
              "variant": _supernet_variant(run), **agreement(rows), "archs": rows}
    folder = run / SUBDIR
    result["plot"] = str(write_scatter(folder / PLOT, result))
    atomic_write_json(folder / SUMMARY, result)
    return result


def agreement(rows: Sequence[Mapping]) -> dict:
    """How well the inherited scores rank the designs against the seed-mean standalone
    validation scores: tau and rho with bootstrap 90% intervals (over designs), whether the
    supernet's top design is among the standalone top 1 and top 3, the regret of picking it,
    and how alike the seeds themselves rank the designs."""
    inherited = [r["inherited_score"] for r in rows]
    standalone = [r["val_score"] for r in rows]
    return {"kendall_tau": _finite_or_none(kendall_tau_b(inherited, standalone)),
            "kendall_tau_ci": [_finite_or_none(v) for v in correlation_ci(inherited, standalone)],
            "spearman_rho": _finite_or_none(spearman_rho(inherited, standalone)),
            "spearman_rho_ci": [_finite_or_none(v) for v in
                                correlation_ci(inherited, standalone, spearman_rho)],
            "top1_hit": top_k_hit(inherited, standalone, 1),
            "top3_hit": top_k_hit(inherited, standalone, 3),
            "regret": regret(inherited, standalone),
            "seed_kendall_tau": _finite_or_none(seed_agreement([r["val_scores"] for r in rows])),
            # One retrain against the other seeds' mean: what the inherited scores, also
            # read against the seed mean, can hardly beat.
            "single_run_kendall_tau": _finite_or_none(
                single_run_tau([r["val_scores"] for r in rows]))}


def _supernet_variant(run: Path) -> dict:
    """The supernet training rule behind the inherited scores (from RUN/config.yaml)."""
    config = yaml.safe_load((run / CONFIG_NAME).read_text(encoding="utf-8")) or {}
    supernet = config.get("supernet") or {}
    return {key: supernet.get(key) for key in ("sampling", "warmup", "warmup_epochs", "epochs",
                                               "prompt_init", "budget_gb")}


# ----- output ----------------------------------------------------------------------------
def _interval(bounds: Sequence[float | None]) -> str:
    lo, hi = bounds
    return "" if lo is None else f"(90% CI {lo:.3f} to {hi:.3f})"


def _coefficient(value: float | None) -> str:
    return "undefined (constant scores)" if value is None else f"{value:.3f}"


def write_scatter(path: Path, result: Mapping) -> Path:
    """Inherited (x) against standalone validation score (y), one labelled point per arch."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede the pyplot import
    import matplotlib.pyplot as plt

    from autopmf.report import _save_png

    rows, metric = result["archs"], result["metric"]
    fig, ax = plt.subplots(figsize=(5.6, 4.6))
    x, y = [r["inherited_score"] for r in rows], [r["val_score"] for r in rows]
    if result.get("seeds", 1) > 1:  # the range over seeds behind each mean
        spread = [[r["val_score"] - min(r["val_scores"]) for r in rows],
                  [max(r["val_scores"]) - r["val_score"] for r in rows]]
        ax.errorbar(x, y, yerr=spread, fmt="none", ecolor="0.6", elinewidth=1, zorder=1)
    points = ax.scatter(x, y, c=[r["mem_gb"] for r in rows], cmap="viridis", s=30, zorder=2)
    fig.colorbar(points, ax=ax, label="predicted training memory (GiB)")
    for r in rows:
        ax.annotate(str(r["trial"]), (r["inherited_score"], r["val_score"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel=f"inherited-weights validation {metric}",
           ylabel=f"standalone validation {metric}"
                  + (f" (mean of {result['seeds']} seeds)" if result.get("seeds", 1) > 1
                     else ""),
           title=f"n={result['n']}  Kendall τ={_coefficient(result['kendall_tau'])}  "
                 f"Spearman ρ={_coefficient(result['spearman_rho'])}")
    ax.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_png(fig, path)
    plt.close(fig)
    return path


def print_result(result: Mapping) -> None:
    print(f"{'trial':>5} {'mem GiB':>7} {'inherited':>9} {'val':>7} {'test':>7}  arch"
          + ("  (val, test: mean over seeds)" if result.get("seeds", 1) > 1 else ""))
    for r in result["archs"]:
        print(f"{r['trial']:>5} {r['mem_gb']:>7.3f} {r['inherited_score']:>9.4f} "
              f"{r['val_score']:>7.4f} {r['test_score']:>7.4f}  "
              f"{describe_arch(r['arch'])}")
    print(f"\ninherited vs standalone validation {result['metric']} over {result['n']} "
          f"architectures: Kendall τ {_coefficient(result['kendall_tau'])} "
          f"{_interval(result['kendall_tau_ci'])}, Spearman ρ "
          f"{_coefficient(result['spearman_rho'])} {_interval(result['spearman_rho_ci'])}")
    if result["top1_hit"]:
        place = "the standalone best"
    else:
        place = "in the standalone top 3" if result["top3_hit"] else "outside the standalone top 3"
    print(f"the supernet's top design is {place}; regret {result['regret']:.4f} (the best "
          "standalone score minus its own)")
    if result.get("seeds", 1) > 1:
        def shown(tau):
            return "undefined" if tau is None else f"{tau:.3f}"
        print(f"standalone scores are the mean of {result['seeds']} seeds; the seeds agree "
              f"with each other at Kendall τ {shown(result['seed_kendall_tau'])}, and one "
              f"seed's retrain ranks against the others' mean at "
              f"{shown(result.get('single_run_kendall_tau'))} (the most a supernet's "
              "ranking can be expected to reach)")
    print(f"wrote {Path(result['run']) / SUBDIR / SUMMARY}, {result['plot']}")


def cmd_validate(args) -> int:
    result = validate_run(args.run, archs=args.archs, epochs=args.epochs, device=args.device,
                          progress=not (args.quiet or args.json), force=args.force,
                          seeds=args.seeds)
    if args.json:
        print(json.dumps(result))  # exactly one JSON object on stdout
    else:
        print_result(result)
    return 0


def add_validate_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "validate", help="rank correlation of inherited vs standalone scores of a search run")
    p.add_argument("run", help="search run directory (the --out of `autopmf search`)")
    p.add_argument("--archs", type=int, default=10,
                   help="how many logged architectures to retrain (spread over memory and score)")
    p.add_argument("--epochs", type=int, default=8, help="standalone training epochs per arch")
    p.add_argument("--seeds", type=int, default=1,
                   help="standalone retrains per architecture, seed after seed on the same data "
                        "split; their mean is the standalone score")
    p.add_argument("--force", action="store_true",
                   help="retrain every chosen architecture, even one already retrained")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores)")
    p.set_defaults(func=cmd_validate)
