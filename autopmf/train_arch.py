"""`autopmf train`: train one fixed architecture standalone and write its run directory.

Flow: data -> frozen encoders -> feature cache at the first fused slot -> PMF model -> fit ->
val/test scores (+ linear-probe baselines) -> metrics.json, weights.safetensors, arch.yaml.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Mapping

import torch

from autopmf.baselines import frozen_feature_baselines, late_fusion_verdict
from autopmf.build import build_backbone, build_pmf, initialise_fusion
from autopmf.checkpoint import EpochCheckpoints, remove_checkpoints
from autopmf.data.registry import load_dataset
from autopmf.feature_store import feature_caches
from autopmf.features import FeatureCache
from autopmf.files import atomic_write_json, save_tensors
from autopmf.head_init import fit_heads
from autopmf.init_draws import keep_best_draw
from autopmf.layout import ARCH, CONFIG, METRICS, TRAIN_OUTPUTS, WEIGHTS
from autopmf.metrics import metrics_for, score
from autopmf.progress import announce_data, announce_encoders, duration, say
from autopmf.run_dir import (claim_run_dir, fingerprint, holds_run_lock, run_settings,
                             tensors_digest)
from autopmf.space import SearchSpace, save_arch
from autopmf.train import TrainConfig, fit, predict
from autopmf.units import gib
from supernet.backbone import FrozenBackbone
from supernet.init import SEED_FREE_INITS
from supernet.pmf import PMFModel

SPLITS = ("train", "val", "test")
OUTPUTS = TRAIN_OUTPUTS


@holds_run_lock
def train_architecture(space: SearchSpace, arch: Mapping[str, int], data_spec: str, out: Path,
                       cfg: TrainConfig, baselines: bool = True, force: bool = False,
                       init_weights: Mapping[str, torch.Tensor] | None = None,
                       measure_memory: bool = False, resume: bool = False,
                       feature_cache: str = "auto") -> dict:
    """Train `arch` standalone (from `init_weights`, e.g. inherited from a supernet, or from
    scratch) and write its run directory; `measure_memory` adds its measured and predicted
    peak training memory. `resume` continues an interrupted run from its newest epoch
    checkpoint (a finished one is returned as it is). `feature_cache`: where the frozen
    streams come from (feature_store: auto, disk, memory or off)."""
    arch = space.validate(arch)
    identity = run_identity(space, arch, data_spec, cfg, init_weights, baselines)
    claim = claim_run_dir(out, identity, resume=resume, force=force, what="training run",
                          outputs=OUTPUTS, finished=METRICS)
    if resume and (out / CONFIG).exists() and (out / METRICS).exists():
        return json.loads((out / METRICS).read_text())
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = load_dataset(data_spec, seed=cfg.split_seed, image_size=space.image_size)
    announce_data(dataset)
    backbone = build_backbone(space).to(cfg.device)
    announce_encoders(space, backbone)
    torch.manual_seed(cfg.seed)
    model = build_pmf(space, arch, backbone, len(dataset.label_names)).to(cfg.device)
    if init_weights is not None:
        model.load_trainable_state_dict(init_weights)
    claim.start()  # only once the inputs and the model are built: a refused run changes nothing
    if measure_memory:
        say(f"memory: this design's peak training memory is predicted at "
            f"{gib(predicted_gb(space, arch, backbone, cfg.device, len(dataset.label_names)))}"
            f" GiB ({torch.device(cfg.device).type}, batch {space.batch_size}, "
            f"{space.precision}); measured after training")

    t0 = time.perf_counter()
    caches = feature_caches(space, dataset, backbone, model.first_fused_slot, cfg.device,
                            feature_cache, cfg.precision)
    cache_seconds = time.perf_counter() - t0
    draw_scores = None
    if init_weights is None:
        draw_scores = initialise_training(model, backbone, caches["train"], caches["val"], cfg,
                                          len(dataset.label_names), dataset.metric)

    def forward(cache, rows):
        return model.forward_from(cache.streams(rows, cfg.device), cache.slot)

    result = fit(model, forward, caches["train"], caches["val"], cfg, dataset.metric,
                 checkpoints=EpochCheckpoints(out, fingerprint(identity), resume))
    model.eval()
    # Every metric reported for this kind of labels (F1-macro and F1-micro for multi-label),
    # from one prediction per split; the dataset's metric is the headline score.
    scores = {}
    for name in ("val", "test"):
        logits = predict(forward, caches[name], cfg)
        scores[name] = {m: score(m, logits, caches[name].labels)
                        for m in metrics_for(dataset.multilabel)}

    metrics = {
        "data": data_spec, "metric": dataset.metric, "label_names": dataset.label_names,
        "arch": arch,
        "fused_slots": space.fused_slots(arch),
        "val_score": scores["val"][dataset.metric],
        "test_score": scores["test"][dataset.metric], "scores": scores,
        "best_epoch": result.best_epoch, "history": result.history,
        "val_at_start": result.start_val,
        # With init_draws > 1: each random start's probe score on training examples (the
        # best was kept).
        **({"init_draw_scores": draw_scores} if draw_scores else {}),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_params": sum(p.numel() for p in model.parameters()),
        "examples": {name: len(split) for name, split in dataset.splits().items()},
        "seconds": {"feature_cache": cache_seconds, "train": result.seconds},
        "train_config": vars(cfg),
    }
    if baselines:
        # The encoders' final [CLS] features: the cached streams continued, not encoded again.
        t0 = time.perf_counter()
        say("baselines: fitting linear probes on the frozen [CLS] features (text-only, "
            "image-only, late fusion)")
        metrics["baselines"] = frozen_feature_baselines(backbone, caches,
                                                        len(dataset.label_names), dataset.metric)
        say("baselines: done in " + duration(time.perf_counter() - t0) + " (val "
            + ", ".join(f"{name} {b['val']:.4f}" for name, b in metrics["baselines"].items())
            + ")")
        metrics["late_fusion_verdict"] = late_fusion_verdict(metrics["val_score"],
                                                             metrics["baselines"])
    if measure_memory:
        metrics.update(memory_report(space, arch, backbone, cfg.device,
                                     len(dataset.label_names)))
    metrics["seconds"]["total"] = time.perf_counter() - started

    save_arch(out / ARCH, space, arch)
    save_tensors(out / WEIGHTS, model.trainable_state_dict(),
                 metadata={"arch": json.dumps(arch), "space": space.name})
    atomic_write_json(out / METRICS, metrics)  # last: its presence marks the run done
    remove_checkpoints(out)  # finished: nothing left to resume
    return metrics


def initialise_training(model: PMFModel, backbone: FrozenBackbone, train: FeatureCache,
                        val: FeatureCache, cfg: TrainConfig, num_classes: int,
                        metric: str) -> list[float] | None:
    """A freshly built model's starting point, by cfg.prompt_init, cfg.init_draws and
    cfg.head_init (the caches must start at or below the model's first fused slot).
    -> each draw's probe score when more than one was drawn, else None."""
    if cfg.init_draws < 1:
        raise ValueError(f"init_draws must be 1 or more, got {cfg.init_draws}")
    if cfg.init_draws > 1 and cfg.prompt_init in SEED_FREE_INITS:
        raise ValueError(f"init_draws {cfg.init_draws}: prompt_init {cfg.prompt_init!r} has no "
                         "random start to draw")
    slots = {j: model.fusion[str(j)] for j in model.slot_configs}

    def initialise(slots, seed):
        initialise_fusion(slots, backbone, train, cfg.prompt_init, seed, cfg.device)

    draw_scores = None
    if cfg.init_draws > 1 and slots:
        draw_scores = keep_best_draw(
            slots, lambda cache, rows: model.features_from(cache.streams(rows, cfg.device),
                                                           cache.slot),
            train, cfg.init_draws, cfg.seed, num_classes, metric, initialise)
    else:
        initialise(slots, cfg.seed)
    if cfg.head_init == "probe":
        fit_heads(model.heads,
                  lambda cache, rows: model.features_from(cache.streams(rows, cfg.device),
                                                          cache.slot),
                  train, val, num_classes, metric)
    return draw_scores


def run_identity(space: SearchSpace, arch: Mapping[str, int], data_spec: str,
                 cfg: TrainConfig, init_weights: Mapping[str, torch.Tensor] | None,
                 baselines: bool) -> dict:
    """What makes two trainings the same run (resume must match it)."""
    return {"space": space.to_dict(), "arch": dict(arch), "data": data_spec,
            "init": "scratch" if init_weights is None else tensors_digest(init_weights),
            "baselines": baselines, "train": run_settings(cfg)}


def predicted_gb(space: SearchSpace, arch: Mapping[str, int], backbone, device: str,
                 num_classes: int) -> float:
    """The memory model's peak training memory of `arch` on `device`'s kind, GiB."""
    from autopmf.memory import GIB, estimate_bytes, load_profile

    kind = torch.device(device).type
    return estimate_bytes(space, arch, load_profile(space, kind, num_classes,
                                                    backbone=backbone)) / GIB


def memory_report(space: SearchSpace, arch: Mapping[str, int], backbone, device: str,
                  num_classes: int) -> dict:
    """Measured (a real isolated training step) and predicted peak training memory, GiB."""
    from autopmf.memory import GIB
    from autopmf.memory.measure import measure_peak_bytes

    measured = measure_peak_bytes(space, arch, backbone, device, num_classes)
    return {"mem_gb_measured": measured / GIB,
            "mem_gb_predicted": predicted_gb(space, arch, backbone, device, num_classes),
            "memory_device": torch.device(device).type}
