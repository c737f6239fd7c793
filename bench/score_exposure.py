"""Do a supernet's inherited scores follow how often each design's first fused slot trained?
(issue 16)

For each trained supernet and its scores (a `bench/supernet_ranking.py --out` file), the
sampler is replayed (sampling is a pure function of seed and step) to count the steps whose
subnet first fuses each slot; each yardstick design's exposure is its own lowest fused slot's
count. Printed per supernet: Spearman's rho between that exposure and the design's gain over
the untrained supernet's score, and between exposure and the score itself, beside the
score's Kendall tau against the yardstick. Nothing is trained or scored.

    python bench/score_exposure.py --untrained UNTRAINED.json RUN:SCORES.json [...] \
        [--out bench/results/score_exposure.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autopmf.files import atomic_write_json  # noqa: E402
from autopmf.layout import SUPERNET_METRICS  # noqa: E402
from autopmf.ranking import kendall_tau_b, spearman_rho  # noqa: E402
from autopmf.space import space_from_dict  # noqa: E402
from autopmf.supernet_train import budget_fit  # noqa: E402
from bench.ranking import parse_design  # noqa: E402
from supernet.sampling import ArchSampler, steps_by_edge_slot  # noqa: E402


def probe_entry(path: str) -> dict:
    return json.loads(Path(path).read_text())["variants"][0]


def steps_by_lowest_slot(run: Path, designs: list[str]) -> tuple[dict[int, int], list[int]]:
    """Training steps per lowest fused slot, replayed from the run's recorded settings, and
    each design's lowest fused slot in the run's space."""
    metrics = json.loads((run / SUPERNET_METRICS).read_text())
    cfg = metrics["config"]
    space = space_from_dict(metrics["space"])
    fit, largest, warmup_archs = budget_fit(space, cfg["budget_gb"], metrics["num_classes"],
                                            "cpu", cfg["warmup"])
    steps = metrics["steps_per_epoch"]
    sampler = ArchSampler(space, cfg["sampling"], cfg["seed"], fit=fit, largest=largest,
                          warmup_steps=cfg["warmup_epochs"] * steps, warmup_archs=warmup_archs,
                          total_steps=cfg["epochs"] * steps)
    lowest = [min(space.fused_slots(parse_design(space, design))) for design in designs]
    return steps_by_edge_slot(sampler, range(sampler.warmup_steps,
                                             cfg["epochs"] * steps))["bottom"], lowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--untrained", required=True,
                        help="supernet_ranking.py scores of the untrained supernet")
    parser.add_argument("runs", nargs="+", metavar="RUN:SCORES",
                        help="a trained supernet's folder and its supernet_ranking.py scores")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()
    untrained = probe_entry(args.untrained)
    designs, yardstick = untrained["design_names"], untrained["standalone"]
    start = untrained["by_scoring"]["probe"]["inherited"]
    rows = []
    for pair in args.runs:
        run, scores_path = pair.split(":", 1)
        entry = probe_entry(scores_path)
        if entry["design_names"] != designs:
            sys.exit(f"{scores_path} scores other designs than {args.untrained}")
        scores = entry["by_scoring"]["probe"]["inherited"]
        shares, lowest = steps_by_lowest_slot(Path(run), designs)
        exposure = [shares[slot] for slot in lowest]
        gain = [s - s0 for s, s0 in zip(scores, start)]
        row = {"supernet": run, "scores": scores_path,
               "steps_by_lowest_slot": dict(sorted(shares.items())),
               "rho_gain_exposure": spearman_rho(gain, exposure),
               "rho_score_exposure": spearman_rho(scores, exposure),
               "tau_score_yardstick": kendall_tau_b(scores, yardstick)}
        rows.append(row)
        print(f"{run}: steps per lowest slot {row['steps_by_lowest_slot']}  "
              f"rho(gain, exposure) {row['rho_gain_exposure']:.2f}  "
              f"rho(score, exposure) {row['rho_score_exposure']:.2f}  "
              f"tau(score, yardstick) {row['tau_score_yardstick']:.3f}")
    if args.out:
        atomic_write_json(Path(args.out), {
            "designs": designs, "untrained": args.untrained,
            "rho_yardstick_untrained": spearman_rho(yardstick, start), "supernets": rows,
            "date": datetime.date.today().isoformat()})


if __name__ == "__main__":
    main()
