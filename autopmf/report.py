"""`autopmf log`: read a search run directory and explain what the search found.

Everything here reads files a search wrote (`config.yaml`, `search_log.jsonl`) and never
imports torch, so `autopmf log` stays fast even while a search is still running.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from autopmf.errors import AutopmfError
from autopmf.layout import (CONFIG, PLOT_BEST_SO_FAR, PLOT_SCORE_VS_MEMORY, PLOT_SLOT_FUSION,
                            PLOTS, SEARCH_LOG)
from autopmf.search_log import SearchLog, brief, is_scored, pareto_front



def _read_config(run: Path) -> dict:
    config = yaml.safe_load((run / CONFIG).read_text(encoding="utf-8"))
    if not isinstance(config, dict) or not isinstance(config.get("budget_gb"), (int, float)):
        raise AutopmfError(f"{run / CONFIG} has no numeric 'budget_gb': is this a run "
                           "written by `autopmf search`?")
    return config


def _check_run(run: str | Path) -> Path:
    run = Path(run)
    if not run.is_dir():
        raise AutopmfError(f"run directory {run} does not exist: run "
                           f"`autopmf search --out {run}` first")
    for name in (SEARCH_LOG, CONFIG):
        if not (run / name).is_file():
            raise AutopmfError(f"{run} is not a search run (no {name}): run "
                               f"`autopmf search --out {run}` first")
    return run


# ----- analysis ------------------------------------------------------------------------------
def _slots_of(arch: Mapping[str, Any]) -> list[int]:
    return sorted(int(k.split("_", 1)[1]) for k in arch if k.startswith("fusion_"))


def describe_arch(arch: Mapping[str, Any], fusable_slots: Iterable[int] | None = None) -> str:
    """`fuse 3:M2 5:M4` (shared prompts), `fuse 5:q4c0f2` (split QP/QCP/FCP), `/h96` suffix
    for a searched mapping width; `none` when no slot fuses."""
    slots = list(fusable_slots) if fusable_slots is not None else _slots_of(arch)
    parts = []
    for j in slots:
        if not arch.get(f"fusion_{j}"):
            continue
        if f"qp_{j}" in arch:
            text = (f"{j}:q{arch[f'qp_{j}']}c{arch.get(f'qcp_{j}', '?')}"
                    f"f{arch.get(f'fcp_{j}', '?')}")
        else:
            text = f"{j}:M{arch.get(f'prompt_{j}', '?')}"
        if f"mapping_{j}" in arch:
            text += f"/h{arch[f'mapping_{j}']}"
        parts.append(text)
    return "fuse " + " ".join(parts) if parts else "none"


def summarize(run: str | Path, top_k: int = 5) -> dict:
    """Everything `autopmf log` shows, as plain JSON-able data."""
    run = _check_run(run)
    config = _read_config(run)
    log = SearchLog.read(run / SEARCH_LOG)
    entries = sorted(log.entries, key=lambda e: e["trial"])
    budget = float(config["budget_gb"])
    scored = [e for e in entries if is_scored(e)]
    feasible = [e for e in scored if e["mem_gb"] <= budget]
    ranked = log.ranked(budget)  # its first is the search's best_arch.yaml

    best_so_far, best = [], -math.inf
    for e in feasible:  # already in trial order
        best = max(best, e["score"])
        best_so_far.append([e["trial"], best])

    space = config.get("space") or {}
    slots = space.get("fusable_slots")
    if slots is None:  # an older config: recover the slots from the logged choices
        slots = sorted({j for e in entries for j in _slots_of(e["arch"])})
    return {
        "budget_gb": budget,
        "trials": len(entries),
        "requested_trials": config.get("trials"),
        "scored": len(scored),
        "duplicates": sum(e["status"] == "duplicate" for e in entries),
        "failed": sum(e["status"] == "failed" for e in entries),
        "feasible": len(feasible),
        "over_budget": len(scored) - len(feasible),
        "best": brief(ranked[0]) if ranked else None,
        "top": [brief(e) for e in ranked[:top_k]],
        "best_so_far": best_so_far,
        "pareto": pareto_front(entries),
        "seconds": float(sum(e.get("seconds") or 0.0 for e in entries)),
        "metric": config.get("metric", "score"),
        "fusable_slots": list(slots),
        "all_scored": [brief(e) for e in scored],  # for the plots
    }


# ----- text ----------------------------------------------------------------------------------
def _table(rows: list[dict], slots, metric: str, rank: bool, budget: float) -> list[str]:
    head = (f"{'rank':>4} " if rank else "") + f"{'trial':>5} {metric:>10} {'mem GiB':>7}  arch"
    out = [head]
    for i, e in enumerate(rows, 1):
        out.append((f"{i:>4} " if rank else "") + f"{e['trial']:>5} {e['score']:>10.4f} "
                   f"{e['mem_gb']:>7.3f}  {describe_arch(e['arch'], slots)}"
                   + ("  (over budget)" if e["mem_gb"] > budget else ""))
    return out


def _as_given(gib: float) -> str:
    """Two decimals, or as many as the value has: .2f showed a 0.004 GiB budget as 0.00."""
    return f"{gib:.2f}" if round(gib, 2) == gib else f"{gib:g}"


def print_summary(summary: Mapping, space_slots: Iterable[int] | None = None,
                  file=None) -> None:
    """Human-readable report: header, top-K, best-so-far improvements, Pareto front."""
    file = file or sys.stdout
    s, metric = summary, summary["metric"]
    slots = list(space_slots) if space_slots is not None else s.get("fusable_slots")
    lines = [f"budget {_as_given(s['budget_gb'])} GiB | {s['trials']} trials "
             f"({s['scored']} scored, {s['duplicates']} duplicate, {s['failed']} failed) | "
             f"{s['feasible']} feasible | "
             + (f"best {metric} {s['best']['score']:.4f} at {s['best']['mem_gb']:.3f} GiB "
                f"(trial {s['best']['trial']})" if s["best"] else "no feasible candidate yet")
             + f" | {s['seconds']:.0f} s"]
    if s["over_budget"]:
        lines.append(f"WARNING: {s['over_budget']} scored candidate(s) exceed the budget; the "
                     "search should never score one: please report this")
    if s["best"]:
        lines += ["", f"top {len(s['top'])} feasible:"]
        lines += _table(s["top"], slots, metric, True, s["budget_gb"])
        # Only the trials where the best improved: the full curve is in --plot / --json.
        steps, prev = [], None
        for trial, best in s["best_so_far"]:
            if best != prev:
                steps.append(f"{trial}:{best:.4f}")
                prev = best
        lines += ["", "best so far (trial:" + metric + "): " + "  ".join(steps)]
    if s["pareto"]:
        lines += ["", f"Pareto front ({metric} vs memory):"]
        lines += _table(s["pareto"], slots, metric, False, s["budget_gb"])
    print("\n".join(lines), file=file)


# ----- plots ---------------------------------------------------------------------------------
def _save_png(fig, path: Path) -> Path:
    # Temp name in the same directory + os.replace: a reader never sees half a PNG.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_plots(run: str | Path, summary: Mapping) -> list[Path]:
    """score_vs_memory.png, best_so_far.png, slot_fusion_frequency.png under RUN/plots/."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede the pyplot import
    import matplotlib.pyplot as plt

    out = Path(run) / PLOTS
    out.mkdir(parents=True, exist_ok=True)
    metric, budget = summary["metric"], summary["budget_gb"]
    paths = []

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pts = summary["all_scored"]
    ok = [p for p in pts if p["mem_gb"] <= budget]
    over = [p for p in pts if p["mem_gb"] > budget]
    ax.scatter([p["mem_gb"] for p in ok], [p["score"] for p in ok], s=18, alpha=0.6,
               label=f"scored, within budget ({len(ok)})")
    if over:
        ax.scatter([p["mem_gb"] for p in over], [p["score"] for p in over], s=24, marker="x",
                   color="tab:red", label=f"over budget ({len(over)})")
    if summary["pareto"]:
        front = summary["pareto"]
        ax.step([p["mem_gb"] for p in front], [p["score"] for p in front], where="post",
                color="tab:orange", marker="o", ms=4, label="Pareto front")
    ax.axvline(budget, color="tab:red", ls="--", label=f"budget {budget:g} GiB")
    if summary["best"]:
        b = summary["best"]
        ax.scatter([b["mem_gb"]], [b["score"]], s=160, marker="*", color="gold",
                   edgecolors="black", zorder=5, label=f"best (trial {b['trial']})")
    ax.set(xlabel="predicted peak training memory (GiB)", ylabel=f"validation {metric}",
           title=f"{metric} vs memory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    paths.append(_save_png(fig, Path(run) / PLOT_SCORE_VS_MEMORY))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    curve = summary["best_so_far"]
    if curve:
        ax.step([t for t, _ in curve], [b for _, b in curve], where="post", marker=".")
    ax.set(xlabel="trial", ylabel=f"best feasible {metric}", title="best so far")
    ax.grid(alpha=0.3)
    paths.append(_save_png(fig, Path(run) / PLOT_BEST_SO_FAR))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    slots, top = summary["fusable_slots"], summary["top"]
    counts = [sum(1 for e in top if e["arch"].get(f"fusion_{j}")) for j in slots]
    ax.bar([str(j) for j in slots], counts, color="tab:green")
    ax.set_ylim(0, max(len(top), 1))
    ax.set(xlabel="fusable slot", ylabel="times fused",
           title=f"slot fusion among the top {len(top)} feasible")
    ax.yaxis.get_major_locator().set_params(integer=True)
    paths.append(_save_png(fig, Path(run) / PLOT_SLOT_FUSION))
    plt.close(fig)
    return paths
