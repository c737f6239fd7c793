"""Where a supernet's ranking is lost: the top designs, or the order of the rest? (issue 16)

Kendall's τ over n designs counts every pair. Split the yardstick's designs into its top k
(by seed-mean standalone score) and the rest, and the pairs fall in three kinds: top against
rest, within the top, and within the rest. For each supernet entry that
`bench/supernet_ranking.py` wrote (probe scoring by default), this prints and records:

- **separation**: the share of top-against-rest pairs the inherited scores order as the
  yardstick does (1: every top design above every other);
- **τ within the top** and **τ within the rest**;
- **lift over the start**: the mean, over the rest and over the top, of each design's
  inherited score minus its own score from the untrained supernet's entry with the same
  probe sample size (`--untrained`, from the fixed start: the design as standalone training
  starts it, read by the same probe on the same rows). Negative: supernet training left
  the design below where it began.

τ is an exact mix of the three kinds when nothing ties: (k(n-k)(2s-1) + C(k,2) τ_top +
C(n-k,2) τ_rest) / C(n,2), with s the separation. So with the top separated perfectly and
the rest in random order the expected τ is k(n-k) + C(k,2), over C(n,2) (0.533 for 3 of 10),
and τ ≥ 0.7 needs τ within the rest of at least 0.357. Entries are pooled by variant (seeds
grouped as `bench/variant_table.py` groups them).

    python bench/ranking_decomposition.py [--results bench/results/validate_fixed.json]

Writes bench/results/ranking_decomposition.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
from math import comb
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.choices import PROBE_EXAMPLES  # noqa: E402
from autopmf.files import atomic_write_json  # noqa: E402
from autopmf.ranking import kendall_tau_b  # noqa: E402
from bench.variant_table import grouped  # noqa: E402


def decompose(inherited: list[float], standalone: list[float], k: int) -> dict:
    """Separation of the yardstick's top k from the rest, and τ within each part."""
    order = sorted(range(len(standalone)), key=lambda i: -standalone[i])
    top, rest = order[:k], order[k:]
    pairs = [(i, j) for i in top for j in rest]
    ordered = sum(inherited[i] > inherited[j] for i, j in pairs)
    tied = sum(inherited[i] == inherited[j] for i, j in pairs)
    return {"separation": (ordered + tied / 2) / len(pairs),
            "tau_top": kendall_tau_b([inherited[i] for i in top], [standalone[i] for i in top]),
            "tau_rest": kendall_tau_b([inherited[i] for i in rest],
                                      [standalone[i] for i in rest]),
            "top": top, "rest": rest}


def mixed_tau(n: int, k: int, separation: float, tau_top: float, tau_rest: float) -> float:
    """τ from its three kinds of pairs (exact when no two scores tie)."""
    return ((k * (n - k) * (2 * separation - 1) + comb(k, 2) * tau_top
             + comb(n - k, 2) * tau_rest) / comb(n, 2))


def lift(inherited: list[float], start: list[float], rows: list[int]) -> float:
    return statistics.mean(inherited[i] - start[i] for i in rows)


def mean_std(values: list[float]) -> list[float]:
    return [statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default="bench/results/validate_fixed.json")
    parser.add_argument("--ranking", default="bench/results/ranking.json")
    parser.add_argument("--untrained", default="fixed start, untrained (--epochs 0), probe on",
                        help="the start's entries: those whose variant name begins so")
    parser.add_argument("--scoring", default="probe")
    parser.add_argument("--top", type=int, default=3, help="k: the yardstick's top designs")
    parser.add_argument("--out", default="bench/results/ranking_decomposition.json")
    args = parser.parse_args()

    yardstick = json.loads((ROOT / args.ranking).read_text())
    designs = [row["design"] for row in yardstick["per_design"]]
    standalone = [row["val_mean"] for row in yardstick["per_design"]]
    n, k = len(designs), args.top
    if not 0 < k < n:
        parser.error(f"--top must be between 1 and {n - 1}, got {k}")
    entries = [e for e in json.loads((ROOT / args.results).read_text())["variants"]
               if e.get("design_names", designs) == designs]
    for entry in entries:  # entries from before the field probed the default sample
        entry.setdefault("probe_examples", PROBE_EXAMPLES)
    starts = {e["probe_examples"]: e["by_scoring"][args.scoring]["inherited"] for e in entries
              if e["variant"].startswith(args.untrained) and args.scoring in e["by_scoring"]}
    for entry in entries:  # each scoring's result carries its entry's probe size
        for result in entry["by_scoring"].values():
            result["probe_examples"] = entry["probe_examples"]
        if entry["probe_examples"] not in starts:
            parser.error(f"{args.results} has no untrained entry ('{args.untrained} ...') "
                         f"with a probe on {entry['probe_examples']} examples, which "
                         f"{entry['variant']!r} needs as its start")
    top = [designs[i] for i in decompose(standalone, standalone, k)["top"]]
    variants = {}
    print(f"top {k} of {n} by seed-mean standalone score: {', '.join(top)}")
    print("| variant | seeds | τ mean | separation | τ within the top | τ within the rest | "
          "lift of the rest | lift of the top |")
    print("|---|---|---|---|---|---|---|---|")
    for variant, seeds in grouped(entries, args.scoring).items():
        rows = []
        for seed in sorted(seeds):
            inherited = seeds[seed]["inherited"]
            start = starts[seeds[seed]["probe_examples"]]
            parts = decompose(inherited, standalone, k)
            rows.append({"seed": seed, "kendall_tau": seeds[seed]["kendall_tau"],
                         "separation": parts["separation"], "tau_top": parts["tau_top"],
                         "tau_rest": parts["tau_rest"],
                         "lift_rest": lift(inherited, start, parts["rest"]),
                         "lift_top": lift(inherited, start, parts["top"])})
        pooled = {key: mean_std([row[key] for row in rows])
                  for key in ("kendall_tau", "separation", "tau_top", "tau_rest", "lift_rest",
                              "lift_top")}
        variants[variant] = {"seeds": rows, "mean_std": pooled}

        def shown(key):
            mean, std = pooled[key]
            return f"{mean:.3f}" + (f" ± {std:.3f}" if len(rows) > 1 else "")
        print(f"| {variant} | {len(rows)} | {shown('kendall_tau')} | {shown('separation')} | "
              f"{shown('tau_top')} | {shown('tau_rest')} | {shown('lift_rest')} | "
              f"{shown('lift_top')} |")
    atomic_write_json(ROOT / args.out, {
        "yardstick": args.ranking, "results": args.results, "scoring": args.scoring,
        "designs": designs, "top_k": k, "top": top,
        "tau_if_top_separated_and_rest_random": mixed_tau(n, k, 1.0, 1.0, 0.0),
        "tau_rest_needed_for_0.7": (0.7 * comb(n, 2) - k * (n - k) - comb(k, 2))
        / comb(n - k, 2),
        "variants": variants, "date": str(datetime.date.today())})


if __name__ == "__main__":
    main()
