"""How much of a probe score is the probe's own training sample? (issue 16)

The search scores each candidate by a linear probe fitted on a fixed sample of training rows
(`autopmf.inherited`, `--probe-examples`, 1,024 by default). This scores every design with
`--samples` probes fitted on disjoint samples of that size (the same validation rows, the same
supernet weights), and reports:
- the spread of one design's scores across samples against the spread between designs;
- how well two samples' probes rank the designs alike (Kendall tau between samples);
- how well one probe, and the mean of all, rank them against standalone training: the
  yardstick's seed-mean validation scores (`bench/ranking.py`) and, with `--retrains`, the
  test scores of `bench/search_quality.py`'s retrained designs.

    python bench/probe_noise.py --supernet RUN [--retrains STUDY/retrains] --threads 1

One entry per supernet in `bench/results/probe_noise.json`, replaced when measured again.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.baselines import select_probe  # noqa: E402
from autopmf.choices import PROBE_EXAMPLES  # noqa: E402
from autopmf.features import SlotCaches  # noqa: E402
from autopmf.head_init import cls_pairs  # noqa: E402
from autopmf.inherited import first_slot, probe_sample  # noqa: E402
from autopmf.ranking import kendall_tau_b  # noqa: E402
from autopmf.train import TrainConfig  # noqa: E402
from bench.ranking import parse_design  # noqa: E402
from bench.supernet_ranking import load_supernet  # noqa: E402


def designs_to_score(space, yardstick: dict, retrains: Path | None) -> dict[str, dict]:
    """{design name: {"arch", "yardstick_val"?, "retrained_test"?}}: the yardstick's designs
    with their seed-mean validation score, and each design retrained in `retrains` (its
    `<design>-split<D>.yaml` beside `<design>-split<D>-s<K>/metrics.json`) with its test
    scores."""
    designs = {row["design"]: {"arch": parse_design(space, row["design"]),
                               "yardstick_val": row["val_mean"]}
               for row in yardstick["per_design"]}
    by_arch = {json.dumps(d["arch"], sort_keys=True): name for name, d in designs.items()}
    for arch_file in sorted(retrains.glob("*-split*.yaml")) if retrains else []:
        runs = sorted(arch_file.parent.glob(f"{arch_file.stem}-s*/metrics.json"))
        if not runs:
            continue
        arch = space.canonical(space.validate(yaml.safe_load(arch_file.read_text())))
        name = by_arch.setdefault(json.dumps(arch, sort_keys=True), arch_file.stem)
        designs.setdefault(name, {"arch": arch})["retrained_test"] = [
            json.loads(run.read_text())["test_score"] for run in runs]
    return designs


def probe_scores(supernet, arch, train: SlotCaches, val: SlotCaches, samples: int,
                 cfg: TrainConfig, metric: str, num_classes: int) -> list[float]:
    """The design's validation score by `samples` probes, probe k fitted on every
    `samples`-th row of the training sample (disjoint samples of equal size)."""
    start = first_slot(supernet, arch)

    def features(cache, rows):
        return supernet.features(cache.streams(rows, cfg.device), cache.slot, arch)

    with torch.no_grad():
        train_cache, val_cache = train.at(start), val.at(start)
        train_x, val_x = cls_pairs(features, train_cache), cls_pairs(features, val_cache)
    return [select_probe(train_x[k::samples], train_cache.labels[k::samples], val_x,
                         val_cache.labels, num_classes, metric).val for k in range(samples)]


def agreement_with(truth_key: str, designs: dict, scores: dict[str, list[float]]) -> dict | None:
    """Kendall tau against `truth_key`'s mean: each single probe's, and the probes' mean."""
    names = [n for n, d in designs.items() if truth_key in d]
    if len(names) < 3:
        return None
    truth = [statistics.mean(designs[n][truth_key]) if isinstance(designs[n][truth_key], list)
             else designs[n][truth_key] for n in names]
    single = [kendall_tau_b([scores[n][k] for n in names], truth)
              for k in range(len(scores[names[0]]))]
    return {"designs": len(names), "single_probe_tau": single,
            "single_probe_tau_mean": statistics.mean(single),
            "mean_of_probes_tau": kendall_tau_b([statistics.mean(scores[n]) for n in names],
                                                truth)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--supernet", required=True, help="a run folder holding a trained "
                        "supernet (on the yardstick's data and split)")
    parser.add_argument("--ranking", default=str(ROOT / "bench/results/ranking.json"))
    parser.add_argument("--retrains", type=Path, help="bench/search_quality.py's retrains "
                        "folder: also score its designs, against their retrained test scores")
    parser.add_argument("--samples", type=int, default=3, help="disjoint probe samples")
    parser.add_argument("--probe-examples", type=int, default=PROBE_EXAMPLES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/probe_noise.json")
    args = parser.parse_args()
    if args.samples < 2:
        parser.error("--samples must be 2 or more")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    yardstick = json.loads(Path(args.ranking).read_text())
    args.untrained = False
    space, dataset, seed, supernet, caches = load_supernet(args, yardstick)
    supernet.eval()
    designs = designs_to_score(space, yardstick, args.retrains)
    val = SlotCaches(caches["val"], supernet.backbone)
    rows = probe_sample(caches["train"], args.samples * args.probe_examples, seed)
    if len(rows) < args.samples * args.probe_examples:
        raise SystemExit(f"the training split has {len(rows)} rows: too few for "
                         f"{args.samples} samples of {args.probe_examples}")
    train = SlotCaches(caches["train"].subset(rows), supernet.backbone, val.budget)
    cfg = TrainConfig(seed=seed, batch_size=space.batch_size, precision=space.precision,
                      progress=False)
    scores = {}
    for name, design in designs.items():
        scores[name] = probe_scores(supernet, design["arch"], train, val, args.samples, cfg,
                                    dataset.metric, len(dataset.label_names))
        print(name, " ".join(f"{s:.4f}" for s in scores[name]), flush=True)
    within = statistics.mean(statistics.stdev(s) for s in scores.values())
    between = statistics.stdev(statistics.mean(s) for s in scores.values())
    pairs = itertools.combinations(range(args.samples), 2)
    entry = {"supernet": args.supernet, "designs": len(designs), "samples": args.samples,
             "probe_examples": args.probe_examples,
             "within_design_std": within, "between_design_std": between,
             "probe_vs_probe_tau": [kendall_tau_b([s[a] for s in scores.values()],
                                                  [s[b] for s in scores.values()])
                                    for a, b in pairs],
             "against_yardstick_val": agreement_with("yardstick_val", designs, scores),
             "against_retrained_test": agreement_with("retrained_test", designs, scores),
             "scores": scores,
             "minutes": (time.perf_counter() - started) / 60,
             "machine": f"2-core CPU, {args.threads} torch thread(s)",
             "date": str(datetime.date.today())}
    print(json.dumps({k: v for k, v in entry.items() if k != "scores"}, indent=1))
    results = json.loads(args.out.read_text()) if args.out.exists() else {"supernets": []}
    results["supernets"] = [e for e in results["supernets"] if e["supernet"] != args.supernet]
    results["supernets"].append(entry)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
