"""The one training loop (`train_loop`), of a fixed model (`fit`: `autopmf train`, `retrain`)
and of the weight-sharing supernet (supernet_train), with what differs between them in hooks.

The loop is deliberately plain: shuffle, AdamW over the trainable parameters only, linear
warm-up then cosine decay, validation and a checkpoint each epoch. `fit` shuffles with one
seeded generator and keeps the best validation weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol

import torch
from torch import nn

from autopmf.distributed import DistContext
from autopmf.errors import AutopmfError
from autopmf.features import inference_rows
from autopmf.metrics import loss_fn, score
from autopmf.progress import Progress, say

if TYPE_CHECKING:
    from autopmf.checkpoint import EpochCheckpoints


class Examples(Protocol):
    labels: torch.Tensor
    tokens_per_example: int  # sizes inference batches (features.inference_rows)

    def __len__(self) -> int: ...


Forward = Callable[[Examples, torch.Tensor], torch.Tensor]  # (examples, rows) -> logits


@dataclass
class TrainConfig:
    epochs: int = 8
    lr: float = 3e-3
    # Heads read unnormalised [CLS] features (DINOv2-small: norm ~40): with Adam, each step
    # moves a logit by about lr * sum|x|, so they need a much smaller step than the prompts.
    head_lr_scale: float = 0.01
    # The mapping MLPs' rate, as a multiple of lr: their weights move the fused features the
    # most per Adam step (BENCHMARKS.md, "Why every run first loses what the probe read").
    mapping_lr_scale: float = 1.0
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    batch_size: int = 32
    eval_batch_size: int = 256
    seed: int = 0
    # The seed the data (and so its splits) is loaded with; None: `seed`. Setting it lets
    # another seed retrain on the very same split (`autopmf validate --seeds`).
    data_seed: int | None = None
    precision: str = "fp32"
    # How fused slots start (supernet.init.PROMPT_INITS): exactly the paper's draw from `seed`
    # ("paper"), or the paper's draw seeded by position, the same for every seed ("fixed").
    prompt_init: str = "paper"
    # How many random starts of the fused slots to draw, keeping the one a linear probe reads
    # best on training examples (autopmf.init_draws); 1: the constructors' draw alone.
    init_draws: int = 1
    # How the heads start (autopmf.head_init.HEAD_INITS): fitted as a linear probe of the
    # untrained model's [CLS] pair, or the paper's random init.
    head_init: str = "probe"
    device: str = "cpu"
    progress: bool = True

    @property
    def split_seed(self) -> int:
        """The seed the data is loaded (and split) with."""
        return self.seed if self.data_seed is None else self.data_seed


@dataclass
class FitResult:
    best_val: float
    best_epoch: int  # 0: the weights training started from
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    start_val: float | None = None  # the validation score before training, when measured
    # The kept weights' validation logits, when this fit computed them (not after a resume
    # that restored the best epoch): a caller that needs them need not predict again.
    val_logits: torch.Tensor | None = None


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
    batch = min(cfg.eval_batch_size, inference_rows(examples.tokens_per_example))
    for start in range(0, len(examples), batch):
        rows = torch.arange(start, min(start + batch, len(examples)))
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
    """Heads (modules named `heads`, at any depth: a few-shot supernet's are its shots', or a
    bare linear probe) get lr * head_lr_scale; with mapping_lr_scale other than 1, the
    mapping MLPs (`text_to_image`, `image_to_text`) get lr * mapping_lr_scale in a third
    group (only then, so the optimizer state of runs without it keeps its shape)."""
    heads, mappings, rest = [], [], []
    split_mappings = cfg.mapping_lr_scale != 1.0
    for name, p in model.named_parameters():
        if p.requires_grad:
            modules = name.split(".")[:-1]
            if "heads" in modules or isinstance(model, nn.Linear):
                heads.append(p)
            elif split_mappings and {"text_to_image", "image_to_text"} & set(modules):
                mappings.append(p)
            else:
                rest.append(p)
    groups = [{"params": rest, "lr": cfg.lr},
              {"params": heads, "lr": cfg.lr * cfg.head_lr_scale}]
    if split_mappings:
        groups.append({"params": mappings, "lr": cfg.lr * cfg.mapping_lr_scale})
    return groups


def batches_per_epoch(examples: int, batch_size: int, full_only: bool = False) -> int:
    """Steps in an epoch: every example once, the last batch partial; `full_only` drops that
    partial batch (distributed training, where every rank must take the same steps)."""
    return examples // batch_size if full_only else math.ceil(examples / batch_size)


class LoopHooks:
    """What differs between the trainings that `train_loop` runs, the way Lightning's hooks
    do: which examples an epoch visits in which order, what a step's forward is, the
    optimizer step, the per-epoch validation, and what else a checkpoint must carry."""

    def start(self) -> None:
        """Before the first epoch of a training that is not resumed from a checkpoint."""

    def order(self, epoch: int) -> torch.Tensor:
        """The training examples' indices in epoch `epoch`'s order."""
        raise NotImplementedError

    def forward(self, step: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) of the training examples `rows` at step `step` (counted from the
        start of training)."""
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, metric: str) -> torch.Tensor:
        """The step's loss on what `forward` returned: the task's loss of its logits."""
        return loss_fn(metric, logits, labels.to(logits.device))

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def validate(self, epoch: int, loss: float, seconds: float) -> tuple[dict, str]:
        """The history record of epoch `epoch` (its mean training loss, and its training
        time), and the words its progress line ends with."""
        raise NotImplementedError

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """What else a checkpoint carries to the next epoch: tensors, and JSON-able state."""
        return {}, {}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        """Restore `state_dict`'s; ValueError naming what does not fit."""


def train_loop(model: nn.Module, hooks: LoopHooks, cfg: TrainConfig, metric: str, steps: int,
               checkpoints: EpochCheckpoints | None = None, desc: str = "train",
               dist: DistContext = DistContext()) -> list[dict]:
    """The one training loop, of a standalone model (`fit`) and of the supernet: AdamW over
    `model`'s trainable parameters, linear warm-up then cosine decay, `steps` batches an
    epoch, then a validation and a checkpoint (with `checkpoints`; a resumed loop continues
    from the newest one and ends bit-identical). Returns the history, a record an epoch.
    Distributed (`dist`), each rank takes its share of every batch, and the first rank
    alone validates, records and checkpoints."""
    optimizer = torch.optim.AdamW(param_groups(model, cfg), weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(cfg.epochs * steps, cfg.warmup_frac))
    history: list[dict] = []
    start_epoch = 0
    restored = checkpoints.restore(model, optimizer, schedule, hooks) if checkpoints else None
    if restored:
        start_epoch, history = restored
    else:
        hooks.start()
    for epoch in range(start_epoch, cfg.epochs):
        started = time.perf_counter()
        model.train()
        order = hooks.order(epoch)
        bar = Progress(f"{desc} {epoch + 1}/{cfg.epochs}", steps,
                       enabled=cfg.progress and dist.is_main)
        total = 0.0
        for step in range(steps):
            batch = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            rows = batch[dist.rank::dist.world_size]  # this rank's share of the batch
            with autocast(cfg.precision, cfg.device):
                logits, labels = hooks.forward(epoch * steps + step, rows)
            loss = hooks.loss(logits, labels, metric)
            check_finite_loss(loss.item(), epoch, step, cfg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            hooks.optimizer_step(optimizer)
            schedule.step()
            total += loss.item()
            bar.update(1, loss=f"{total / (step + 1):.4f}")
        bar.close()
        loss = total / max(1, steps)
        if dist.is_main:
            model.eval()
            record, shown = hooks.validate(epoch, loss, time.perf_counter() - started)
            history.append(record)
            if cfg.progress:
                say(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f}  {shown}")
            if checkpoints:
                checkpoints.save(epoch + 1, model, optimizer, schedule, history, hooks)
        dist.barrier()
    return history


class _BestEpoch(LoopHooks):
    """`fit`'s hooks: batches of one shuffling generator, plain AdamW steps, and the best
    validation weights so far (epoch 0: the start, when its heads are fitted)."""

    def __init__(self, model: nn.Module, forward: Forward, train: Examples, val: Examples,
                 cfg: TrainConfig, metric: str):
        self.model, self.run, self.train, self.val = model, forward, train, val
        self.cfg, self.metric = cfg, metric
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.best_val, self.best_epoch = -math.inf, -1
        self.best_state: list[torch.Tensor] | None = None
        self.best_logits: torch.Tensor | None = None
        self.start_val: float | None = None

    def start(self) -> None:
        if self.cfg.head_init == "probe":
            # Fitted heads make the untrained model a real candidate ("epoch 0"): on a task
            # that only fusion solves, it already reads the task's signal, and the first
            # steps of training can lose it before they improve on it.
            self.model.eval()
            self.best_logits = predict(self.run, self.val, self.cfg)
            self.start_val = self.best_val = score(self.metric, self.best_logits,
                                                   self.val.labels)
            self.best_epoch = 0
            self.best_state = [p.detach().clone() for p in self.trainable]

    def order(self, epoch: int) -> torch.Tensor:
        return torch.randperm(len(self.train), generator=self.generator)

    def forward(self, step: int, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run(self.train, rows), self.train.labels[rows]

    def validate(self, epoch: int, loss: float, seconds: float) -> tuple[dict, str]:
        logits = predict(self.run, self.val, self.cfg)
        val_score = score(self.metric, logits, self.val.labels)
        if val_score > self.best_val:
            self.best_val, self.best_epoch = val_score, epoch + 1
            self.best_state = [p.detach().clone() for p in self.trainable]
            self.best_logits = logits
        return ({"epoch": epoch + 1, "loss": loss, f"val_{self.metric}": val_score},
                f"val {self.metric} {val_score:.4f}")

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"best.{i}": t for i, t in enumerate(self.best_state or [])}
        tensors["generator"] = self.generator.get_state()
        return tensors, {"best_val": self.best_val, "best_epoch": self.best_epoch,
                         "start_val": self.start_val}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        if "generator" not in tensors:
            raise ValueError("it holds no shuffling state")
        if not {"best_val", "best_epoch"} <= state.keys():
            raise ValueError("state.json lacks the best-so-far score")
        best = [tensors[f"best.{i}"] for i in range(sum(k.startswith("best.") for k in tensors))]
        if len(best) not in (0, len(self.trainable)) or any(
                b.dtype != p.dtype or b.shape != p.shape for b, p in zip(best, self.trainable)):
            raise ValueError("its best-so-far weights do not fit this model")
        self.generator.set_state(tensors["generator"])
        self.best_state = best or None
        self.best_logits = None  # not checkpointed: the caller predicts them if it needs them
        self.best_val, self.best_epoch = state["best_val"], state["best_epoch"]
        self.start_val = state.get("start_val")


def fit(model: nn.Module, forward: Forward, train: Examples, val: Examples, cfg: TrainConfig,
        metric: str, desc: str = "train", checkpoints: EpochCheckpoints | None = None
        ) -> FitResult:
    """Train `model`'s trainable parameters; on return it holds the best-validation weights.
    With `checkpoints`, each epoch ends with a checkpoint, and a resumed fit continues from
    the newest one."""
    started = time.perf_counter()
    hooks = _BestEpoch(model, forward, train, val, cfg, metric)
    history = train_loop(model, hooks, cfg, metric, batches_per_epoch(len(train),
                                                                      cfg.batch_size),
                         checkpoints, desc)
    if hooks.best_state is not None:
        with torch.no_grad():
            for p, best in zip(hooks.trainable, hooks.best_state):
                p.copy_(best)
    return FitResult(best_val=hooks.best_val, best_epoch=hooks.best_epoch, history=history,
                     seconds=time.perf_counter() - started, start_val=hooks.start_val,
                     val_logits=hooks.best_logits)
