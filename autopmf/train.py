"""Training one fixed model: the loop of `autopmf train` and `retrain`.

The loop is deliberately plain: shuffle with a seeded generator, AdamW over the trainable
parameters only, linear warm-up then cosine decay, validation each epoch, keep the best
validation weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import torch
from torch import nn

from autopmf.errors import AutopmfError
from autopmf.metrics import loss_fn, score
from autopmf.progress import Progress, say

if TYPE_CHECKING:
    from autopmf.checkpoint import EpochCheckpoints


class Examples(Protocol):
    labels: torch.Tensor

    def __len__(self) -> int: ...


Forward = Callable[[Examples, torch.Tensor], torch.Tensor]  # (examples, rows) -> logits


@dataclass
class TrainConfig:
    epochs: int = 8
    lr: float = 3e-3
    # Heads read unnormalised [CLS] features (DINOv2-small: norm ~40): with Adam, each step
    # moves a logit by about lr * sum|x|, so they need a much smaller step than the prompts.
    head_lr_scale: float = 0.01
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    batch_size: int = 32
    eval_batch_size: int = 256
    seed: int = 0
    # The seed the data (and so its splits) is loaded with; None: `seed`. Setting it lets
    # another seed retrain on the very same split (`autopmf validate --seeds`).
    data_seed: int | None = None
    precision: str = "fp32"
    # How fused slots start (supernet.init.PROMPT_INITS): exactly the paper's, or "centred"
    # mappings (BENCHMARKS.md, "Fusion that learns from the first step").
    prompt_init: str = "paper"
    # How the heads start (autopmf.head_init.HEAD_INITS): fitted as a linear probe of the
    # untrained model's [CLS] pair, or the paper's random init.
    head_init: str = "probe"
    device: str = "cpu"
    progress: bool = True


@dataclass
class FitResult:
    best_val: float
    best_epoch: int  # 0: the weights training started from
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    start_val: float | None = None  # the validation score before training, when measured


def autocast(precision: str, device: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


def warmup_cosine(total_steps: int, warmup_frac: float) -> Callable[[int], float]:
    warmup = max(1, int(total_steps * warmup_frac))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


@torch.no_grad()
def predict(forward: Forward, examples: Examples, cfg: TrainConfig) -> torch.Tensor:
    parts = []
    for start in range(0, len(examples), cfg.eval_batch_size):
        rows = torch.arange(start, min(start + cfg.eval_batch_size, len(examples)))
        with autocast(cfg.precision, cfg.device):
            parts.append(forward(examples, rows).float().cpu())
    return torch.cat(parts)


def evaluate(forward: Forward, examples: Examples, cfg: TrainConfig, metric: str) -> float:
    return score(metric, predict(forward, examples, cfg), examples.labels)


def check_finite_loss(loss: float, epoch: int, step: int, cfg: TrainConfig) -> None:
    """Stop a diverged run before its NaN weights are stepped, checkpointed or saved."""
    if not math.isfinite(loss):
        raise AutopmfError(f"the training loss became {loss} at epoch {epoch + 1}, step "
                           f"{step + 1} (training diverged); lower --lr (it was {cfg.lr:g}) "
                           "and rerun with --force")


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Heads (modules named `heads`, or a bare linear probe) get lr * head_lr_scale."""
    heads, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            is_head = name.startswith("heads.") or isinstance(model, nn.Linear)
            (heads if is_head else rest).append(p)
    return [{"params": rest, "lr": cfg.lr},
            {"params": heads, "lr": cfg.lr * cfg.head_lr_scale}]


def fit(model: nn.Module, forward: Forward, train: Examples, val: Examples, cfg: TrainConfig,
        metric: str, desc: str = "train", checkpoints: EpochCheckpoints | None = None
        ) -> FitResult:
    """Train `model`'s trainable parameters; on return it holds the best-validation weights.
    With `checkpoints`, each epoch ends with a checkpoint, and a resumed fit continues from
    the newest one."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.epochs * steps_per_epoch, cfg.warmup_frac))
    generator = torch.Generator().manual_seed(cfg.seed)
    result = FitResult(best_val=-math.inf, best_epoch=-1)
    best_state = None
    started = time.perf_counter()
    start_epoch = 0
    restored = (checkpoints.restore(model, optimizer, schedule, generator) if checkpoints
                else None)
    if restored:
        start_epoch, best_state, saved = restored
        result.history, result.best_val, result.best_epoch = (
            saved["history"], saved["best_val"], saved["best_epoch"])
        result.start_val = saved.get("start_val")
    elif cfg.head_init == "probe":
        # Fitted heads make the untrained model a real candidate ("epoch 0"): on a task
        # that only fusion solves, it already reads the task's signal, and the first steps
        # of training can lose it before they improve on it.
        model.eval()
        result.start_val = result.best_val = evaluate(forward, val, cfg, metric)
        result.best_epoch = 0
        best_state = [p.detach().clone() for p in trainable]
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        bar = Progress(f"{desc} {epoch + 1}/{cfg.epochs}", steps_per_epoch,
                       enabled=cfg.progress)
        total_loss = 0.0
        for step in range(steps_per_epoch):
            rows = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            with autocast(cfg.precision, cfg.device):
                logits = forward(train, rows)
            loss = loss_fn(metric, logits, train.labels[rows].to(logits.device))
            check_finite_loss(loss.item(), epoch, step, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item()
            bar.update(1, loss=f"{total_loss / (step + 1):.4f}")
        bar.close()
        model.eval()
        val_score = evaluate(forward, val, cfg, metric)
        result.history.append({"epoch": epoch + 1, "loss": total_loss / steps_per_epoch,
                               f"val_{metric}": val_score})
        if cfg.progress:
            say(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss "
                       f"{total_loss / steps_per_epoch:.4f}  val {metric} {val_score:.4f}")
        if val_score > result.best_val:
            result.best_val, result.best_epoch = val_score, epoch + 1
            best_state = [p.detach().clone() for p in trainable]
        if checkpoints:
            checkpoints.save(epoch + 1, model, optimizer, schedule, generator, best_state,
                             {"history": result.history, "best_val": result.best_val,
                              "best_epoch": result.best_epoch,
                              "start_val": result.start_val})
    if best_state is not None:
        with torch.no_grad():
            for p, best in zip(trainable, best_state):
                p.copy_(best)
    result.seconds = time.perf_counter() - started
    return result
