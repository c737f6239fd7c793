"""`autopmf log`: read a search run directory and explain what the search found.

Everything here reads files a search wrote (`config.yaml`, `search_log.jsonl`) and never
imports torch, so `autopmf log` stays fast even while a search is still running.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from autopmf.errors import AutopmfError
from autopmf.layout import (CONFIG, FINALISTS, METRICS, PLOT_BEST_SO_FAR, PLOT_SCORE_VS_MEMORY,
                            PLOT_SLOT_FUSION, PLOTS, REFERENCE, SEARCH_LOG)
from autopmf.search_log import SearchLog, brief, is_scored, pareto_front
from autopmf.units import gib


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


def design_slug(space, arch: Mapping[str, Any]) -> str:
    """`2M2_3M2_4M2_5M2`: a folder name for one design of `space` (its canonical form)."""
    text = describe_arch(space.canonical(arch), space.fusable_slots)
    return text.removeprefix("fuse ").replace(" ", "_").replace(":", "").replace("/", "-")


def summarize(run: str | Path, top_k: int = 5) -> dict:
    """Everything `autopmf log` shows, as plain JSON-able data."""
    run = _check_run(run)
    config = _read_config(run)
    log = SearchLog.read(run / SEARCH_LOG)
    entries = sorted(log.entries, key=lambda e: e["trial"])
    budget = float(config["budget_gb"])
    scored = [e for e in entries if is_scored(e)]
    feasible = [e for e in scored if e["mem_gb"] <= budget]
    ranked = log.ranked(budget)  # its first is best_arch.yaml, or else a finalist won

    best_so_far, best = [], -math.inf
    for e in feasible:  # already in trial order
        best = max(best, e["score"])
        best_so_far.append([e["trial"], best])

    space = config.get("space") or {}
    slots = space.get("fusable_slots")
    if slots is None:  # an older config: recover the slots from the logged choices
        slots = sorted({j for e in entries for j in _slots_of(e["arch"])})
    winner = ranked[0] if ranked else None
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
        "tie_break": _tie_break(winner, feasible),
        "reference": _reference(run, slots),
        "finalists": _finalists(run),
    }


def _finalists(run: Path) -> dict | None:
    """finalists.json (`--finalists`): the shortlist's standalone scores and the winner, which
    is best_arch.yaml; None for a search without finalists or before they have all trained."""
    try:
        record = json.loads((run / FINALISTS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (isinstance(record, dict) and isinstance(record.get("finalists"), list)
          and isinstance(record.get("winner"), dict))
    return record if ok else None


def _tie_break(winner: Mapping | None, feasible: list[dict]) -> dict | None:
    """When the winner is not the first candidate to reach the best score: which one was,
    and why the winner beats it (the log's ranking: less memory, then the earlier trial)."""
    if winner is None:
        return None
    first = next(e for e in feasible if e["score"] == winner["score"])
    if first["trial"] == winner["trial"]:
        return None
    return {"first_trial": first["trial"], "first_mem_gb": first["mem_gb"],
            "winner_trial": winner["trial"], "winner_mem_gb": winner["mem_gb"],
            "rule": "equal score: less predicted memory wins, then the earlier trial"}


RETRAIN_DIRS = ("retrain", "reference")  # where a retrained PMF reference may be found


def _reference(run: Path, slots) -> dict | None:
    """The PMF reference design that fits the budget (written by the search), with its score:
    the validation score of a standalone retraining of that very design in RUN/retrain or
    RUN/reference if there is one, else its inherited score."""
    try:
        record = json.loads((run / REFERENCE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("arch"), dict):
        return None
    ref = dict(record, score=record.get("inherited_score"), score_kind="inherited",
               label=f"PMF reference (top {record.get('n_fused')} at M{record.get('prompt_len')})")
    design = describe_arch(record["arch"], slots)
    for name in RETRAIN_DIRS:
        try:
            metrics = json.loads((run / name / METRICS).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (isinstance(metrics, dict) and isinstance(metrics.get("arch"), dict)
                and describe_arch(metrics["arch"], slots) == design):
            ref.update(score=metrics.get("val_score"), score_kind="retrained",
                       retrained_in=str(run / name))
            break
    return ref


# ----- text ----------------------------------------------------------------------------------
def _table(rows: list[dict], slots, metric: str, rank: bool, budget: float) -> list[str]:
    head = (f"{'rank':>4} " if rank else "") + f"{'trial':>5} {metric:>10} {'mem GiB':>7}  arch"
    out = [head]
    for i, e in enumerate(rows, 1):
        out.append((f"{i:>4} " if rank else "") + f"{e['trial']:>5} {e['score']:>10.4f} "
                   f"{gib(e['mem_gb']):>7}  {describe_arch(e['arch'], slots)}"
                   + ("  (over budget)" if e["mem_gb"] > budget else ""))
    return out


def _finalists_table(record: Mapping, slots, metric: str) -> list[str]:
    """The finalists by inherited score, with their standalone scores; the winner marked."""
    out = [f"finalists: the top {len(record['finalists'])} by inherited {metric}, each trained "
           f"{record['epochs']} epoch(s) standalone; the best standalone val {metric} is "
           "best_arch.yaml",
           f"{'rank':>4} {'trial':>5} {'inherited':>9} {'standalone':>10} {'mem GiB':>7}  arch"]
    for f in record["finalists"]:
        won = "  <- winner" if f["trial"] == record["winner"]["trial"] else ""
        out.append(f"{f['rank']:>4} {f['trial']:>5} {f['inherited_score']:>9.4f} "
                   f"{f['val_score']:>10.4f} {gib(f['mem_gb']):>7}  "
                   f"{describe_arch(f['arch'], slots)}{won}")
    return out


def print_summary(summary: Mapping, space_slots: Iterable[int] | None = None,
                  file=None) -> None:
    """Human-readable report: header, top-K, best-so-far improvements, Pareto front."""
    file = file or sys.stdout
    s, metric = summary, summary["metric"]
    slots = list(space_slots) if space_slots is not None else s.get("fusable_slots")
    lines = [f"budget {gib(s['budget_gb'], exact=True)} GiB | {s['trials']} trials "
             f"({s['scored']} scored, {s['duplicates']} duplicate, {s['failed']} failed) | "
             f"{s['feasible']} feasible | "
             + (f"best {metric} {s['best']['score']:.4f} at {gib(s['best']['mem_gb'])} GiB "
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
        tie = s.get("tie_break")
        if tie:
            lines.append(f"the winner, trial {tie['winner_trial']}, ties trial "
                         f"{tie['first_trial']}'s {metric} and wins the tie on memory "
                         f"({gib(tie['winner_mem_gb'])} vs {gib(tie['first_mem_gb'])} GiB)")
    if s.get("finalists"):
        lines += [""] + _finalists_table(s["finalists"], slots, metric)
    ref = s.get("reference")
    if ref and ref.get("score") is not None:
        versus = ""
        if s["best"] and ref.get("inherited_score") is not None:
            versus = (f"; the winner's inherited {metric} "
                      f"{s['best']['score'] - ref['inherited_score']:+.4f} against it")
        lines += ["", f"{ref['label']}: {describe_arch(ref['arch'], slots)}, "
                  f"{gib(ref['mem_gb'])} GiB, {ref['score_kind']} {metric} {ref['score']:.4f}"
                  + versus]
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


def _save_plot(fig, path: Path, data: Mapping) -> Path:
    """The PNG and, beside it (same name, .json), the data it draws: what a script or a test
    reads instead of the pixels. Both written to a temporary name and renamed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(data), f, indent=1)
        os.replace(tmp, path.with_suffix(".json"))
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return _save_png(fig, path)


def write_plots(run: str | Path, summary: Mapping) -> list[Path]:
    """score_vs_memory.png, best_so_far.png, slot_fusion_frequency.png under RUN/plots/, each
    with the data it draws beside it (.json)."""
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
    ax.axvline(budget, color="tab:red", ls="--", label=f"budget {gib(budget, exact=True)} GiB")
    if summary["best"]:
        b = summary["best"]
        ax.scatter([b["mem_gb"]], [b["score"]], s=160, marker="*", color="gold",
                   edgecolors="black", zorder=5, label=f"best (trial {b['trial']})")
    ref = summary.get("reference")
    if ref and ref.get("score") is not None:
        ax.scatter([ref["mem_gb"]], [ref["score"]], s=110, marker="D", color="tab:purple",
                   edgecolors="black", zorder=6,
                   label=f"{ref['label']}, {ref['score_kind']} {ref['score']:.4f}")
    ax.set(xlabel="predicted peak training memory (GiB)", ylabel=f"validation {metric}",
           title=f"{metric} vs memory")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    paths.append(_save_plot(fig, Path(run) / PLOT_SCORE_VS_MEMORY, {
        "metric": metric, "budget_gb": budget, "scored": pts, "pareto": summary["pareto"],
        "best": summary["best"], "reference": ref}))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    curve = summary["best_so_far"]
    if curve:
        ax.step([t for t, _ in curve], [b for _, b in curve], where="post", marker=".")
    ax.set(xlabel="trial", ylabel=f"best feasible {metric}", title="best so far")
    ax.grid(alpha=0.3)
    paths.append(_save_plot(fig, Path(run) / PLOT_BEST_SO_FAR,
                            {"metric": metric, "best_so_far": curve,
                             "tie_break": summary.get("tie_break")}))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    slots, top = summary["fusable_slots"], summary["top"]
    counts = [sum(1 for e in top if e["arch"].get(f"fusion_{j}")) for j in slots]
    ax.bar([str(j) for j in slots], counts, color="tab:green")
    ax.set_ylim(0, max(len(top), 1) * 1.15)  # headroom: the tallest bar clears the frame
    ax.set(xlabel="fusable slot", ylabel="times fused",
           title=f"slot fusion among the top {len(top)} feasible")
    ax.yaxis.get_major_locator().set_params(integer=True)
    paths.append(_save_plot(fig, Path(run) / PLOT_SLOT_FUSION,
                            {"slots": list(slots), "times_fused": counts, "top": len(top)}))
    plt.close(fig)
    return paths
