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
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from supernet.fusion import FusionSlot, LayerFn, SlicedMLP, Streams

PROMPT_INITS = ("paper", "centred", "cls")  # the first is the default


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
