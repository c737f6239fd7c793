"""What can be read off a design at its standalone start, and does it rank? (issue 16)

From the fixed start (`--prompt-init fixed`) an untrained supernet's subnets are bit for bit
the yardstick's designs at their start, so nothing here is trained. For each design of the
yardstick (`bench/results/ranking.json`) it measures two families of signals and each one's
Kendall τ (90% bootstrap interval) against the designs' seed-mean standalone scores:

- **Readouts of the [CLS] pair by a ridge classifier** (closed form, the classifier a
  per-step loss without shared heads would refit on every batch): leave-one-out accuracy
  within training batches of 32, and the validation accuracy of ridge fitted on 1,024
  training examples at several penalties, beside the search's logistic probe on the same
  examples. The question: can a classifier refitted on one batch read what the probe reads?
- **Zero-cost trainability proxies** with heads fitted as the probe (as a standalone run
  starts): the start's training loss, the L1 and L2 norms of the gradient of the weights the
  design trains, SNIP (sum |g·w|), and the count of those weights. Adam's first step lowers
  the loss by about lr × the gradient's L1 norm, so that norm is the first-order guess at
  how fast a design starts to learn.

    python bench/start_signals.py --threads 1

Writes bench/results/start_signals.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.baselines import feature_scale, select_probe  # noqa: E402
from autopmf.build import build_backbone, initialise_supernet  # noqa: E402
from autopmf.data.registry import load_dataset  # noqa: E402
from autopmf.feature_store import feature_caches  # noqa: E402
from autopmf.features import SlotCaches  # noqa: E402
from autopmf.files import atomic_write_json  # noqa: E402
from autopmf.head_init import cls_pairs, fit_heads  # noqa: E402
from autopmf.inherited import first_slot, probe_sample  # noqa: E402
from autopmf.metrics import score  # noqa: E402
from autopmf.ranking import correlation_ci, kendall_tau_b  # noqa: E402
from autopmf.space import load_space  # noqa: E402
from bench.ranking import parse_design  # noqa: E402
from supernet.supernet import Supernet  # noqa: E402

PENALTIES = (1e-3, 1e-2, 1e-1, 1.0)
BATCH = 32
BATCHES = 8  # training batches each batch-level signal is averaged over
PROBE_EXAMPLES = 1024
VAL_EXAMPLES = 512


def standardised(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Features standardised by `train`'s statistics as the probe standardises them
    (`feature_scale`), scaled so a row's squared norm is about 1: a ridge penalty of 1 then
    weighs like one example."""
    mean, std = feature_scale(train)
    return [(x - mean) / std / math.sqrt(train.shape[1]) for x in (train, *others)]


def centred_targets(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, num_classes).double() - 1.0 / num_classes


def ridge_accuracy(train: torch.Tensor, train_labels: torch.Tensor, val: torch.Tensor,
                   val_labels: torch.Tensor, num_classes: int, penalty: float) -> float:
    """Validation accuracy of kernel ridge regression on centred one-hot targets."""
    rows, val_rows = standardised(train.double(), val.double())
    kernel = rows @ rows.T
    alpha = torch.linalg.solve(kernel + penalty * torch.eye(len(rows), dtype=rows.dtype),
                               centred_targets(train_labels, num_classes))
    return score("accuracy", (val_rows @ rows.T) @ alpha, val_labels)


def leave_one_out_accuracy(batch: torch.Tensor, labels: torch.Tensor, num_classes: int,
                           penalty: float = 1.0) -> float:
    """Accuracy of each example's ridge prediction by the classifier fitted on the rest of
    its batch (exact: with H = K (K + λI)^-1, (ŷ_i - H_ii y_i) / (1 - H_ii))."""
    (rows,) = standardised(batch.double())
    targets = centred_targets(labels, num_classes)
    kernel = rows @ rows.T
    hat = torch.linalg.solve(kernel + penalty * torch.eye(len(rows), dtype=rows.dtype), kernel)
    leverage = hat.diagonal().unsqueeze(1)
    held_out = (hat @ targets - leverage * targets) / (1 - leverage)
    return score("accuracy", held_out, labels)


def gradient_signals(supernet: Supernet, arch: dict, cache, order: torch.Tensor) -> dict:
    """Training loss and gradient norms over BATCHES batches, heads as fitted."""
    supernet.train()
    supernet.zero_grad()
    loss_sum = 0.0
    for b in range(BATCHES):
        rows = order[b * BATCH:(b + 1) * BATCH]
        logits = supernet(cache.streams(rows, "cpu"), cache.slot, arch)
        loss = torch.nn.functional.cross_entropy(logits, cache.labels[rows]) / BATCHES
        loss.backward()
        loss_sum += loss.item()
    l1 = l2 = snip = count = 0.0
    regions = supernet.used_regions(arch)
    for name, weight in supernet.named_parameters():
        region = regions.get(name)
        if not name.startswith("fusion.") or region is None or weight.grad is None:
            continue  # the heads train at a hundredth of the rate: left out
        grad, used = weight.grad[region].double(), weight.detach()[region].double()
        l1 += grad.abs().sum().item()
        l2 += grad.pow(2).sum().item()
        snip += (grad * used).abs().sum().item()
        count += grad.numel()
    supernet.zero_grad()
    return {"start_loss": loss_sum, "grad_l1": l1, "grad_l2": math.sqrt(l2), "snip": snip,
            "trained_weights": count}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranking", default=str(ROOT / "bench/results/ranking.json"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "bench/results/start_signals.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    yardstick = json.loads(Path(args.ranking).read_text())
    if yardstick.get("prompt_init") != "fixed":
        sys.exit("start_signals needs a fixed-start yardstick (--prompt-init fixed): only "
                 "then is an untrained supernet's subnet each design's standalone start")
    space = load_space(yardstick["space"])
    dataset = load_dataset(yardstick["task"], seed=yardstick.get("data_seed", 0),
                           image_size=space.image_size)
    backbone = build_backbone(space)
    num_classes = len(dataset.label_names)
    torch.manual_seed(0)
    supernet = Supernet(space, backbone, num_classes)
    caches = feature_caches(space, dataset, backbone, supernet.lowest_fusable_slot)
    initialise_supernet(supernet, caches["train"], "fixed", 0, "cpu")
    train, val = SlotCaches(caches["train"], backbone), SlotCaches(caches["val"], backbone)
    probe_rows = probe_sample(caches["train"], PROBE_EXAMPLES, 0)
    val_rows = probe_sample(caches["val"], VAL_EXAMPLES, 0)
    order = torch.randperm(len(caches["train"]), generator=torch.Generator().manual_seed(1))

    designs, standalone, rows = [], [], []
    for entry in yardstick["per_design"]:
        arch = parse_design(space, entry["design"])
        start = first_slot(supernet, arch)
        train_cache = train.at(start).subset(probe_rows)
        val_cache = val.at(start).subset(val_rows)

        def features(cache, batch_rows, arch=arch):
            return supernet.features(cache.streams(batch_rows, "cpu"), cache.slot, arch)
        supernet.eval()
        train_x, val_x = cls_pairs(features, train_cache), cls_pairs(features, val_cache)
        row = {"design": entry["design"],
               "logistic_probe": select_probe(train_x, train_cache.labels, val_x,
                                              val_cache.labels, num_classes, "accuracy").val}
        for penalty in PENALTIES:
            row[f"ridge_{penalty:g}"] = ridge_accuracy(train_x, train_cache.labels, val_x,
                                                       val_cache.labels, num_classes, penalty)
        batches = [order[b * BATCH:(b + 1) * BATCH] for b in range(BATCHES)]
        row["batch_loo_ridge"] = sum(
            leave_one_out_accuracy(cls_pairs(features, batch), batch.labels, num_classes)
            for batch in (train.at(start).subset(b) for b in batches)) / BATCHES
        fit_heads(supernet.heads, features, train_cache, val_cache, num_classes, "accuracy")
        row.update(gradient_signals(supernet, arch, train.at(start), order))
        print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
              flush=True)
        designs.append(entry["design"])
        standalone.append(entry["val_mean"])
        rows.append(row)

    signals = [k for k in rows[0] if k != "design"]
    taus = {}
    for signal in signals:
        values = [row[signal] for row in rows]
        taus[signal] = {"kendall_tau": kendall_tau_b(values, standalone),
                        "kendall_tau_ci": list(correlation_ci(values, standalone))}
        print(f"{signal:>16}: tau {taus[signal]['kendall_tau']:+.3f} "
              f"[{taus[signal]['kendall_tau_ci'][0]:+.3f}, "
              f"{taus[signal]['kendall_tau_ci'][1]:+.3f}]")
    atomic_write_json(Path(args.out), {
        "yardstick": Path(args.ranking).name, "designs": designs, "standalone": standalone,
        "per_design": rows, "tau": taus, "probe_examples": PROBE_EXAMPLES,
        "val_examples": VAL_EXAMPLES, "batch": BATCH, "batches": BATCHES,
        "minutes": (time.perf_counter() - started) / 60,
        "machine": f"{platform.machine()}, {args.threads} torch threads",
        "date": str(datetime.date.today())})


if __name__ == "__main__":
    main()
