"""How a fused slot's trainable weights start.

`paper`: the PMF paper's initialisation, and nothing more: prompts N(0, 0.02), the mapping
MLPs at PyTorch's default Linear init (what the module constructors already do).

`centred`: the same, then the mapping MLPs are set from data (LSUV-style): on a sample of
training streams entering the slot, each first-layer unit is scaled to unit standard
deviation and its bias set to minus its mean, and the second layer's bias removes the mean
output. Why: the query prompts' outputs are dominated by a part that is the same for every
input (the encoder's own bias, read through near-uniform attention); a freshly initialised
mapping passes that shared part on, so the tokens it hands the other encoder barely depend on
the input and the cross-modal path starts with almost no signal. Centred, the mapped tokens
(after the mapping's LayerNorm) are mostly the input-dependent part. Only biases and the
first layer's row scales change: the model is the same PMF model, with another starting
point.

`cls`: the paper's draw of every prompt, then each query prompt shifted by the mean [CLS]
state entering its slot (over a sample of training streams). Why: a query prompt near zero
attends to every token alike, so its output is nearly the same for every input; one that
starts where the encoder's own [CLS] does reads the input as [CLS] does, from step 0 (issue
15's first direction). The noise keeps the M prompts of a slot apart.

`principal`: a start with no random part, so that a run's seed changes only its data order.
Why: on the demo task most of the seed-to-seed spread of a design's score comes from the random
draw of its prompts and mappings (BENCHMARKS.md, "Which of the seed's random choices is the
noise?"), which makes the ranking of designs a ranking of lucky draws. Every prompt bank takes
principal directions of the tokens entering its slot (at the paper's norm, 0.02 sqrt(d); the
banks of one side take interleaved directions, so no two prompts coincide). Each mapping reads
the principal coordinates of its input (the query outputs, standardised) through ReLU pairs
(+z, -z) and writes coordinate k along the other encoder's k-th principal direction, weighted by
its share of that encoder's variance: an exact linear map from one encoder's main axes of
variation to the other's, before the LayerNorm. Directions are ordered by variance, so the
first units and prompts (what a narrower subnet of a supernet uses) are the leading ones, and
a prompt's direction does not depend on its bank's length. The sample is a fixed one, not the
run's seed's.

`fixed`: the paper's distributions, N(0, 0.02) prompts and PyTorch's default Linear init, but
drawn from a seed fixed by position (slot, parameter, row or hidden unit) instead of the
run's seed. Why: the same as `principal` (the seed then changes the data order alone), without
changing what is drawn: a design starts from one fixed draw of the paper's start. Seeded by
position, a supernet's banks hold exactly what each subnet's would at the same slot, so a
subnet extracted before training starts as that design trained alone does (with the mapping
widths the same: the second layer's range depends on the built width, as PyTorch's does).
"""

from __future__ import annotations

import zlib
from typing import Callable, Mapping

import numpy as np
import torch

from supernet.fusion import PROMPT_INIT_STD, FusionSlot, LayerFn, SlicedMLP, Streams

# The first is the default. `fixed` made the yardstick's seeds rank its designs alike (lr 3e-4,
# 2 epochs), but at the default lr 3e-3 its first demo runs were worse (BENCHMARKS.md, "A start
# that does not depend on the seed"): it is the yardstick's start, not yet the default.
PROMPT_INITS = ("paper", "fixed", "centred", "cls", "principal")
SEED_FREE_INITS = ("principal", "fixed")  # starts that draw no random numbers at all


@torch.no_grad()
def centre_mapping(mlp: SlicedMLP, inputs: torch.Tensor) -> None:
    """Scale and centre `mlp`'s units on `inputs` [..., d_in] (all of its hidden units, so
    every narrower slice of it is centred too)."""
    x = inputs.reshape(-1, inputs.shape[-1]).to(mlp.fc1.weight.dtype)
    pre = x @ mlp.fc1.weight.T
    mlp.fc1.weight.div_(pre.std(dim=0).clamp_min(1e-6).unsqueeze(1))
    pre = x @ mlp.fc1.weight.T
    mlp.fc1.bias.copy_(-pre.mean(dim=0))
    hidden = torch.relu(pre + mlp.fc1.bias)
    mlp.fc2.bias.copy_(-(hidden @ mlp.fc2.weight.T).mean(dim=0))


@torch.no_grad()
def centre_mappings(slots: Mapping[int, FusionSlot], streams_at: Callable[[int], Streams],
                    layer_fns: Callable[[int], tuple[LayerFn, LayerFn]]) -> None:
    """`centred` initialisation of every slot in `slots` (slot index -> module, at its full
    size); `streams_at(j)`: a sample of the frozen streams entering slot j; `layer_fns(j)`:
    slot j's (text layer, image layer)."""
    for j, slot in slots.items():
        text_q, image_q = slot.query(streams_at(j), *layer_fns(j), slot.size)
        centre_mapping(slot.text_to_image, text_q)
        centre_mapping(slot.image_to_text, image_q)


@torch.no_grad()
def shift_queries_to_cls(slots: Mapping[int, FusionSlot],
                         streams_at: Callable[[int], Streams]) -> None:
    """`cls` initialisation: every query prompt of each slot in `slots` plus the mean [CLS]
    (first) token of the streams entering that slot."""
    for j, slot in slots.items():
        streams = streams_at(j)
        for prompts, stream in ((slot.text_query, streams.text),
                                (slot.image_query, streams.image)):
            prompts.add_(stream[:, 0].mean(dim=0).to(prompts.dtype))


def principal_axes(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean [d], variances [d] descending, directions [d, d] as columns) of the rows of
    `x` [n, d], in float64. Each direction's sign is fixed (its largest entry positive), so
    the result depends on the data alone."""
    x = x.reshape(-1, x.shape[-1]).double()
    mean = x.mean(dim=0)
    centred = x - mean
    variances, axes = torch.linalg.eigh(centred.T @ centred / max(len(x) - 1, 1))
    variances, axes = variances.flip(0).clamp_min(0), axes.flip(1)
    peak = axes.abs().argmax(dim=0)
    axes = axes * torch.sign(axes[peak, torch.arange(axes.shape[1])]).unsqueeze(0)
    return mean, variances, axes


@torch.no_grad()
def principal_prompts(banks: list[torch.Tensor], tokens: torch.Tensor) -> None:
    """Fill `banks` (each [rows, d]) with principal directions of `tokens` [n, d], at the
    norm of the paper's N(0, 0.02) draw: row r of bank b takes direction r * len(banks) + b
    (cycling if that passes d), so no two rows coincide, and a bank's first rows are the same
    whatever its length (a supernet's banks start as every subnet's would)."""
    _, _, axes = principal_axes(tokens)
    d = axes.shape[0]
    for b, bank in enumerate(banks):
        columns = (torch.arange(bank.shape[0]) * len(banks) + b) % d
        bank.copy_((axes[:, columns].T * PROMPT_INIT_STD * d ** 0.5).to(bank.dtype))


@torch.no_grad()
def principal_mapping(mlp: SlicedMLP, inputs: torch.Tensor, targets: torch.Tensor) -> None:
    """Set `mlp` so that hidden units (2k, 2k+1) are relu(+z_k), relu(-z_k), z_k the k-th
    standardised principal coordinate of `inputs` [..., d_in], and the output before the
    LayerNorm is sum_k z_k w_k t_k: t_k the k-th principal direction of `targets` [n, d_out],
    w_k the square root of its share of their variance."""
    mean, variances, axes = principal_axes(inputs)
    _, target_variances, target_axes = principal_axes(targets)
    hidden = mlp.fc1.out_features
    unit = torch.arange(hidden)
    sign = 1.0 - 2.0 * (unit % 2).double()  # +z, -z, +z, ...
    k_in = (unit // 2) % axes.shape[1]
    k_out = (unit // 2) % target_axes.shape[1]
    scale = variances[k_in].clamp_min(1e-12 * float(variances[0]) + 1e-30).rsqrt()
    weight = sign.unsqueeze(1) * scale.unsqueeze(1) * axes[:, k_in].T
    mlp.fc1.weight.copy_(weight.to(mlp.fc1.weight.dtype))
    mlp.fc1.bias.copy_((-(weight @ mean)).to(mlp.fc1.bias.dtype))
    share = (target_variances / target_variances.sum().clamp_min(1e-30)).sqrt()
    mlp.fc2.weight.copy_((target_axes[:, k_out] * (sign * share[k_out]).unsqueeze(0))
                         .to(mlp.fc2.weight.dtype))
    mlp.fc2.bias.zero_()


def stream_tokens(streams: Streams) -> tuple[torch.Tensor, torch.Tensor]:
    """Every real token of the (text, image) streams, as rows [n, d]."""
    return streams.text[streams.text_mask], streams.image.reshape(-1, streams.image.shape[-1])


@torch.no_grad()
def principal_slots(slots: Mapping[int, FusionSlot], streams_at: Callable[[int], Streams],
                    layer_fns: Callable[[int], tuple[LayerFn, LayerFn]]) -> None:
    """`principal` initialisation of every slot in `slots` (arguments as centre_mappings')."""
    for j, slot in slots.items():
        streams = streams_at(j)
        text_tokens, image_tokens = stream_tokens(streams)
        principal_prompts([slot.text_query, slot.text_query_context, slot.text_fusion_context],
                          text_tokens)
        principal_prompts([slot.image_query, slot.image_query_context,
                           slot.image_fusion_context], image_tokens)
        text_q, image_q = slot.query(streams, *layer_fns(j), slot.size)
        principal_mapping(slot.text_to_image, text_q, image_tokens)
        principal_mapping(slot.image_to_text, image_q, text_tokens)
        for mlp in (slot.text_to_image, slot.image_to_text):
            mlp.norm.reset_parameters()


def position_generator(slot: int, name: str, index: int = 0) -> torch.Generator:
    """A generator seeded by a parameter's position alone: slot, parameter name, row."""
    state = np.random.SeedSequence([slot, zlib.crc32(name.encode()), index]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _uniform(n: int, bound: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) * (2 * bound) - bound


@torch.no_grad()
def fixed_draw(slots: Mapping[int, FusionSlot]) -> None:
    """`fixed` initialisation of every slot in `slots`: each prompt row, each first-layer
    unit (its weights and bias), each second-layer column and bias drawn from its own
    position's generator, with the constructors' distributions."""
    for j, slot in slots.items():
        for name, param in slot.named_parameters():
            if param.dim() == 2 and "." not in name:  # a prompt bank: one draw per row
                for r in range(param.shape[0]):
                    param[r] = torch.randn(param.shape[1], generator=position_generator(
                        j, name, r)) * PROMPT_INIT_STD
        for prefix, mlp in (("text_to_image", slot.text_to_image),
                            ("image_to_text", slot.image_to_text)):
            fc1, fc2 = mlp.fc1, mlp.fc2
            bound = fc1.in_features ** -0.5  # nn.Linear's default range
            for i in range(fc1.out_features):
                row = _uniform(fc1.in_features + 1, bound,
                               position_generator(j, f"{prefix}.fc1", i))
                fc1.weight[i], fc1.bias[i] = row[:-1], row[-1]
            bound = fc2.in_features ** -0.5
            for i in range(fc2.in_features):
                fc2.weight[:, i] = _uniform(fc2.out_features, bound,
                                            position_generator(j, f"{prefix}.fc2", i))
            fc2.bias.copy_(_uniform(fc2.out_features, bound,
                                    position_generator(j, f"{prefix}.fc2.bias")))
            mlp.norm.reset_parameters()
