"""How much do a fused slot's query outputs depend on the input, under each prompt init?

For one design, per fused slot and per prompt initialisation: the relative spread across
examples of the query prompts' outputs and of the tokens the mappings hand the other encoder,
mean over examples of |x - mean x| / |mean x| (0: the same for every input). Untrained model,
a seeded sample of training examples entering the slot (the frozen streams).

    python bench/query_spread.py --design 4:4+5:4 --inits paper,centred,cls --seeds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autopmf.build import build_backbone, build_pmf, initialise_fusion  # noqa: E402
from autopmf.data.registry import load_dataset  # noqa: E402
from autopmf.features import build_feature_cache, encode_split, stream_sampler  # noqa: E402
from autopmf.space import load_space  # noqa: E402
from bench.ranking import parse_design  # noqa: E402


def relative_spread(x: torch.Tensor) -> float:
    """x [B, ...] -> mean_b |x_b - mean| / |mean|."""
    flat = x.reshape(x.shape[0], -1)
    centre = flat.mean(0)
    return ((flat - centre).norm(dim=1).mean() / centre.norm()).item()


@torch.no_grad()
def spreads(model, backbone, streams_at) -> dict[str, float]:
    out = {}
    for j in model.slot_configs:
        slot = model.fusion[str(j)]
        layers = (backbone.text_layer_fn(j), backbone.image_layer_fn(j))
        text_q, image_q = slot.query(streams_at(j), *layers, slot.size)
        out[f"slot {j} text queries"] = relative_spread(text_q)
        out[f"slot {j} image queries"] = relative_spread(image_q)
        out[f"slot {j} text->image tokens"] = relative_spread(slot.text_to_image(text_q))
        out[f"slot {j} image->text tokens"] = relative_spread(slot.image_to_text(image_q))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="demo")
    parser.add_argument("--data", default="digits")
    parser.add_argument("--design", default="4:4+5:4")
    parser.add_argument("--inits", default="paper,centred,cls")
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)

    space = load_space(args.space)
    backbone = build_backbone(space)
    dataset = load_dataset(args.data, seed=0, image_size=space.image_size)
    arch = parse_design(space, args.design)
    num_classes = len(dataset.label_names)
    first_slot = min(j for j in space.fusable_slots if arch[f"fusion_{j}"])
    cache = build_feature_cache(encode_split(dataset.train, backbone, space), backbone,
                                first_slot)
    inits = args.inits.split(",")
    table: dict[str, dict[str, list[float]]] = {}
    for seed in range(args.seeds):
        for init in inits:
            torch.manual_seed(seed)
            model = build_pmf(space, arch, backbone, num_classes)
            slots = {j: model.fusion[str(j)] for j in model.slot_configs}
            initialise_fusion(slots, backbone, cache, init, seed)
            for row, value in spreads(model, backbone, stream_sampler(cache, backbone,
                                                                      seed + 1)).items():
                table.setdefault(row, {}).setdefault(init, []).append(value)

    print(f"design {args.design}, {args.seeds} seeds: relative spread across 256 examples "
          "(mean over seeds)\n")
    print("| | " + " | ".join(inits) + " |\n|---|" + "---|" * len(inits))
    for row, by_init in table.items():
        print(f"| {row} | " + " | ".join(f"{statistics.mean(by_init[i]):.3f}" for i in inits)
              + " |")


if __name__ == "__main__":
    main()
