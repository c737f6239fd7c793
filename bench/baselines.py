"""Baselines on real frozen encoders: autopmf's linear probes against scikit-learn.

For each dataset: the final [CLS] features of the space's frozen encoders; autopmf's text-only,
image-only and late-fusion probes (autopmf.baselines, as `autopmf train` reports them); and a
converged scikit-learn LogisticRegression (lbfgs) on the same standardised features at the
regularisation the probe chose. Writes bench/results/baselines.json.

    python bench/baselines.py --threads 2 digits "easyvqa:image_fraction=0.25"
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import torch
from sklearn.linear_model import LogisticRegression

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.baselines import BASELINES, cls_features, linear_probe, standardiser  # noqa: E402
from autopmf.build import build_backbone  # noqa: E402
from autopmf.data.registry import load_dataset  # noqa: E402
from autopmf.features import build_feature_cache, encode_split  # noqa: E402
from autopmf.space import load_space  # noqa: E402


def sklearn_test_accuracy(features, which: str, c: float) -> float:
    scale = standardiser(features["train"].view(which))
    x = {s: scale(f.view(which)).numpy() for s, f in features.items()}
    model = LogisticRegression(C=c, max_iter=10000, tol=1e-8)
    model.fit(x["train"], features["train"].labels.numpy())
    return float(model.score(x["test"], features["test"].labels.numpy()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("datasets", nargs="+")
    parser.add_argument("--space", default="demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench/results/baselines.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    backbone = build_backbone(space)
    results = {}
    for spec in args.datasets:
        started = time.perf_counter()
        data = load_dataset(spec, seed=0, image_size=space.image_size)
        top = {name: build_feature_cache(encode_split(split, backbone, space), backbone,
                                         backbone.num_slots)
               for name, split in data.splits().items()}
        features = {s: cls_features(backbone, c) for s, c in top.items()}
        rows = {}
        for name, which in BASELINES.items():
            probe = linear_probe(features, which, len(data.label_names), data.metric)
            reference = sklearn_test_accuracy(features, which, probe["C"])
            rows[name] = {**probe, "sklearn_test": reference,
                          "gap": probe["test"] - reference}
            print(f"{spec:>30} {name:>12}: test {probe['test']:.4f} (C={probe['C']}), "
                  f"scikit-learn {reference:.4f}", flush=True)
        results[spec] = {"examples": {s: len(c) for s, c in top.items()},
                         "classes": len(data.label_names), "baselines": rows,
                         "seconds": time.perf_counter() - started}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"space": args.space, "threads": args.threads,
                               "date": str(datetime.date.today()), "datasets": results},
                              indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
