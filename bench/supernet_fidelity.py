"""Subnets with the supernet's weights against the same architectures trained alone.

    python bench/supernet_fidelity.py SUPERNET_RUN STANDALONE_RUN [STANDALONE_RUN ...]

SUPERNET_RUN: an `autopmf supernet` or `autopmf search` directory. Each STANDALONE_RUN: an
`autopmf train` or `retrain` directory, trained on the same data. Every reference subnet of
the supernet and the architecture of every standalone run are scored with inherited weights on
the whole validation and test splits (the per-epoch reference scores in supernet_metrics.json
use a 512-example subset of val); each standalone run's own scores are printed beside them.
One markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autopmf.build import build_backbone  # noqa: E402
from autopmf.data.registry import load_dataset  # noqa: E402
from autopmf.feature_store import feature_caches  # noqa: E402
from autopmf.features import SlotCaches  # noqa: E402
from autopmf.files import load_tensors  # noqa: E402
from autopmf.report import describe_arch  # noqa: E402
from autopmf.space import space_from_dict  # noqa: E402
from autopmf.inherited import heads_score  # noqa: E402
from autopmf.supernet_train import METRICS, WEIGHTS, load_supernet_weights  # noqa: E402
from autopmf.train import TrainConfig  # noqa: E402
from supernet.supernet import Supernet  # noqa: E402


def standalone_row(run: Path, data: str, data_seed: int) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    if metrics["data"] != data:
        sys.exit(f"{run} was trained on {metrics['data']!r}, the supernet on {data!r}")
    cfg = metrics["train_config"]
    seed = cfg["seed"] if cfg.get("data_seed") is None else cfg["data_seed"]
    if seed != data_seed:
        sys.exit(f"{run} used data seed {seed}, the supernet {data_seed}: another split")
    return {"arch": metrics["arch"], "val": metrics["val_score"],
            "test": metrics["test_score"],
            "alone": f"{cfg['epochs']} epochs, seed {cfg['seed']} ({run.name})"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("supernet_run", type=Path)
    parser.add_argument("standalone_runs", type=Path, nargs="*")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record = json.loads((args.supernet_run / METRICS).read_text())
    space = space_from_dict(record["space"])
    seed = record["config"]["seed"]
    dataset = load_dataset(record["data"], seed=seed, image_size=space.image_size)
    backbone = build_backbone(space)
    supernet = Supernet(space, backbone, len(dataset.label_names))
    load_supernet_weights(supernet, load_tensors(args.supernet_run / WEIGHTS))
    caches = feature_caches(space, dataset, backbone, supernet.lowest_fusable_slot)
    slots = {name: SlotCaches(caches[name], backbone) for name in ("val", "test")}
    cfg = TrainConfig(progress=False)

    rows = [{"name": name, "arch": arch} for name, arch in record["references"].items()]
    rows += [{"name": "alone", **standalone_row(run, record["data"], seed)}
             for run in args.standalone_runs]
    epochs = record["config"]["epochs"]
    print(f"Supernet {args.supernet_run} ({epochs} epochs, {record['config']['sampling']}, "
          f"warm-up {record['config']['warmup_epochs']} x {record['config']['warmup']}); "
          f"{dataset.metric} on the whole splits.\n")
    print("| subnet | fused slot:M | inherited val | inherited test | alone val | alone test "
          "| trained alone |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        arch = space.validate(row["arch"])
        inherited = {split: heads_score(supernet, arch, slots[split], cfg, dataset.metric)
                     for split in slots}
        alone = ([f"{row['val']:.3f}", f"{row['test']:.3f}", row["alone"]] if "alone" in row
                 else ["", "", ""])
        cells = [row["name"], describe_arch(arch), f"{inherited['val']:.3f}",
                 f"{inherited['test']:.3f}", *alone]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
