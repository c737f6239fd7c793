"""Measure the peak memory of one real training step (never the estimator).

The step is `autopmf.train.fit`'s: forward from raw inputs under autocast, loss, zero_grad,
backward, AdamW.step(). A fresh PMF model (new prompts, mapping MLPs, heads and optimizer) is
built per architecture over the shared frozen backbone; two steps run and the second is measured,
so that AdamW's lazily created moments exist (steady state).

* CUDA: `torch.cuda.max_memory_allocated()` over the second step, after resetting the peak.
* CPU: the bytes of every tensor alive when the first step starts (weights, buffers, batch),
  plus the torch profiler's allocation record (`profile_memory=True`), summed event by event
  from the start of the first step; the peak of that sum during the second step.
"""

from __future__ import annotations

import contextlib
import gc
import os
from typing import Mapping

import torch

from autopmf.build import build_pmf
from autopmf.metrics import loss_fn
from autopmf.space import SearchSpace
from autopmf.train import autocast
from supernet.backbone import FrozenBackbone

MEASURED_STEP = "autopmf.measured_step"


def synthetic_batch(space: SearchSpace, num_classes: int, device: str, seed: int = 0
                    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """A batch of the space's shapes. Memory does not depend on the values: texts are always
    padded to max_text_len."""
    gen = torch.Generator().manual_seed(seed)
    b, n, s = space.batch_size, space.max_text_len, space.image_size
    lengths = torch.randint(2, n + 1, (b, 1), generator=gen)
    batch = {"input_ids": torch.randint(2, 100, (b, n), generator=gen),
             "attention_mask": (torch.arange(n) < lengths).long(),
             "pixels": torch.randn(b, 3, s, s, generator=gen)}
    labels = torch.randint(0, num_classes, (b,), generator=gen)
    return {k: v.to(device) for k, v in batch.items()}, labels.to(device)


def training_step(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                  labels: torch.Tensor, optimizer: torch.optim.Optimizer, precision: str,
                  device: str) -> None:
    """One step in the order of `autopmf.train.fit`."""
    with autocast(precision, device):
        logits = model(batch)
    loss = loss_fn("accuracy", logits, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def measure_peak_bytes(space: SearchSpace, arch: Mapping[str, int], backbone: FrozenBackbone,
                       device: str = "cpu", num_classes: int = 2,
                       batch: tuple[dict, torch.Tensor] | None = None) -> int:
    """Peak allocated bytes of a steady-state training step of `arch` on `device` (the
    backbone must already be there). `batch`: (inputs, labels) on `device`, else synthetic."""
    model = build_pmf(space, arch, backbone, num_classes)
    return _measure(model, space, device, num_classes, batch)


def measure_full_finetune_bytes(space: SearchSpace, backbone: FrozenBackbone,
                                device: str = "cpu", num_classes: int = 2,
                                batch: tuple[dict, torch.Tensor] | None = None) -> int:
    """The same for full fine-tuning (`FullFineTune`: every weight trained)."""
    from autopmf.memory.finetune import FullFineTune, unfrozen

    with unfrozen(backbone):
        return _measure(FullFineTune(backbone, num_classes), space, device, num_classes, batch)


def _measure(model: torch.nn.Module, space: SearchSpace, device: str, num_classes: int,
             batch: tuple[dict, torch.Tensor] | None) -> int:
    gc.collect()  # nothing of an earlier measurement may linger on the device
    model = model.to(device)
    inputs, labels = batch if batch is not None else synthetic_batch(space, num_classes, device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])

    def step():
        training_step(model, inputs, labels, optimizer, space.precision, device)

    if torch.device(device).type == "cuda":
        return _cuda_peak(step, device)
    alive = [*model.parameters(), *model.buffers(), *inputs.values(), labels]
    return _live_bytes(alive) + _cpu_peak_above_start(step)


def _cuda_peak(step, device: str) -> int:
    step()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _live_bytes(tensors) -> int:
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def _cpu_peak_above_start(step) -> int:
    """Peak, during the second of two steps, of the bytes allocated since the first began."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
        with record_function(MEASURED_STEP):
            step()
    events = list(prof.profiler.kineto_results.events())  # raw events, in recorded order
    window = next(e for e in events if e.name() == MEASURED_STEP)
    allocations = sorted(((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]"),
                         key=lambda event: event[0])
    level = peak = 0
    for when, nbytes in allocations:
        if when > window.end_ns():
            break
        level += nbytes
        if when >= window.start_ns():
            peak = max(peak, level)
    return peak


@contextlib.contextmanager
def _quiet_stderr():
    """The profiler's C++ side logs its start/stop (and frees of blocks allocated before it
    started, which are correctly ignored) straight to fd 2: silence it while measuring."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
