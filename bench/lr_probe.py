"""Learning-rate probe: the PMF reference design trained with several (lr, head scale) pairs,
val accuracy per epoch, in one process (encoders loaded once).

    python bench/lr_probe.py --epochs 4 --threads 1 0.01,0.01 0.003,0.1
"""

from __future__ import annotations

import argparse
import time

import torch

from autopmf.build import build_backbone, build_pmf
from autopmf.data.registry import load_dataset
from autopmf.features import build_feature_cache, encode_split
from autopmf.space import load_space
from autopmf.train import TrainConfig, fit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("pairs", nargs="+", help="lr,head_lr_scale")
    parser.add_argument("--space", default="demo")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--arch", default="2:4", help="reference design N:M")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    space = load_space(args.space)
    dataset = load_dataset(args.data, seed=0, image_size=space.image_size)
    backbone = build_backbone(space)
    n_fused, m = (int(x) for x in args.arch.split(":"))
    arch = space.reference_arch(n_fused, m)
    encoded = {name: encode_split(split, backbone, space)
               for name, split in dataset.splits().items()}
    for pair in args.pairs:
        lr, head_scale = (float(x) for x in pair.split(","))
        torch.manual_seed(0)
        model = build_pmf(space, arch, backbone, len(dataset.label_names))
        caches = {name: build_feature_cache(enc, backbone, model.first_fused_slot)
                  for name, enc in encoded.items()}

        def forward(cache, rows):
            return model.forward_from(cache.streams(rows, "cpu"), cache.slot)
        cfg = TrainConfig(epochs=args.epochs, lr=lr, head_lr_scale=head_scale, progress=False)
        started = time.perf_counter()
        result = fit(model, forward, caches["train"], caches["val"], cfg, dataset.metric)
        print(f"lr {lr} heads x{head_scale}: val "
              + " ".join(f"{h[f'val_{dataset.metric}']:.3f}" for h in result.history)
              + f"  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
