"""One row per supernet variant, its seeds pooled: the record issue 16 asks for.

Reads the entries `bench/supernet_ranking.py` wrote (by default
`bench/results/validate_fixed.json`, every variant measured against the fixed-start
yardstick) and groups the entries whose names differ only in their seed (", seed N" and
"(data seed N)" are dropped from the name; an entry without a seed is seed 0). Prints a
Markdown table: per variant, the seeds, each seed's τ (of --scoring), their mean ±
std, the worst seed's interval lower bound and the mean regret.

    python bench/variant_table.py [--results FILE] [--scoring probe]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = re.compile(r",? seed (\d+)")
DATA_SEED = re.compile(r" \(data seed \d+\)")


def variant_and_seed(name: str) -> tuple[str, int]:
    """('fixed start, top-slot, ..., probe on 4,096', 1) from 'fixed start, top-slot, ...,
    seed 1 (data seed 0), probe on 4,096'."""
    name = DATA_SEED.sub("", name)  # first: it holds " seed N" too
    found = SEED.search(name)
    seed = int(found.group(1)) if found else 0
    return SEED.sub("", name).strip(", "), seed


def grouped(entries: list[dict], scoring: str) -> dict[str, dict[int, dict]]:
    """{variant: {seed: that scoring's agreement}}: entries without the scoring are left
    out, and a seed measured twice keeps its last entry."""
    groups: dict[str, dict[int, dict]] = {}
    for entry in entries:
        result = entry.get("by_scoring", {}).get(scoring)
        if result is None and entry.get("scoring") == scoring:
            result = entry
        if result is None:
            continue
        variant, seed = variant_and_seed(entry["variant"])
        groups.setdefault(variant, {})[seed] = result
    return groups


def table(groups: dict[str, dict[int, dict]]) -> str:
    lines = ["| variant | seeds | τ per seed | τ mean ± std | worst lower bound | "
             "mean regret |", "|---|---|---|---|---|---|"]
    for variant, seeds in groups.items():
        taus = [seeds[s]["kendall_tau"] for s in sorted(seeds)]
        spread = f" ± {statistics.stdev(taus):.3f}" if len(taus) > 1 else ""
        lines.append(
            f"| {variant} | {', '.join(map(str, sorted(seeds)))} | "
            f"{' / '.join(f'{t:.3f}' for t in taus)} | {statistics.mean(taus):.3f}{spread} | "
            f"{min(seeds[s]['kendall_tau_ci'][0] for s in seeds):.3f} | "
            f"{statistics.mean(seeds[s]['regret'] for s in seeds):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=str(ROOT / "bench/results/validate_fixed.json"))
    parser.add_argument("--scoring", default="probe")
    args = parser.parse_args()
    results = json.loads(Path(args.results).read_text())
    groups = grouped(results["variants"], args.scoring)
    if not groups:
        sys.exit(f"no entry of {args.results} has a {args.scoring!r} scoring")
    print(table(groups))


if __name__ == "__main__":
    main()
