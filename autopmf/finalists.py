"""The search's finalists: its top candidates by inherited score, each trained standalone for
a short while, the winner chosen by that training's validation score.

Why: the supernet's inherited scores find the good region of a space but order its top
candidates mostly by noise. On the demo's distilled supernet a candidate's probe score moves
by about 0.01 with its probe's training sample, as much as the top candidates differ
(BENCHMARKS.md, "How much of a probe score is the probe's own sample?"). So the supernet
shortlists and a little real training picks: 3 finalists x 2 epochs raised the retrained
winners by 0.013-0.018 on two spaces; 1 epoch from the fixed start mostly read each
finalist's start (BENCHMARKS.md, "Finalists").

Each finalist trains in RUN/finalists/<design>, a training run of its own (`autopmf train`'s
files): an interrupted search resumes with the finished finalists read back and the
interrupted one continued from its checkpoint. RUN/finalists.json, written once all have
trained, records them and the winner.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Iterable, Mapping

from autopmf.files import atomic_write_json
from autopmf.layout import FINALISTS, FINALISTS_DIR
from autopmf.report import design_slug
from autopmf.search_log import ranked
from autopmf.space import SearchSpace
from autopmf.train import TrainConfig


def shortlist(space: SearchSpace, entries: Iterable[Mapping], budget_gb: float,
              k: int) -> list[dict]:
    """The `k` best distinct designs within `budget_gb` by inherited score (the log's order:
    higher score, then less memory, then the earlier trial)."""
    picked, seen = [], set()
    for entry in ranked(entries, budget_gb):
        key = json.dumps(space.canonical(entry["arch"]), sort_keys=True)
        if key not in seen:
            seen.add(key)
            picked.append(dict(entry))
        if len(picked) == k:
            break
    return picked


def finalist_train_config(supernet_cfg: TrainConfig, epochs: int, progress: bool) -> TrainConfig:
    """The finalists train as the supernet did (rate, start, seed, data split, batch,
    precision), for `epochs` epochs of their own."""
    settings = {f.name: getattr(supernet_cfg, f.name) for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**dict(settings, epochs=epochs, progress=progress))


def pick_winner(finalists: list[dict]) -> dict:
    """The finalist with the best standalone validation score; on a tie, the better inherited
    score, then the shortlist's order."""
    return min(finalists, key=lambda f: (-f["val_score"], -f["inherited_score"], f["rank"]))


def train_finalists(space: SearchSpace, data_spec: str, out: Path, shortlisted: list[dict],
                    cfg: TrainConfig, feature_cache: str = "auto",
                    force: bool = False) -> dict:
    """Train each shortlisted candidate standalone in out/finalists/<design> and write
    out/finalists.json: {"epochs", "finalists": [...], "winner": the chosen one}. Finished
    finalists are read back, not trained again (unless `force`)."""
    from autopmf.progress import say
    from autopmf.train_arch import train_architecture

    finalists = []
    for rank, entry in enumerate(shortlisted, 1):
        folder = Path(out) / FINALISTS_DIR / design_slug(space, entry["arch"])
        say(f"finalist {rank} of {len(shortlisted)}: {design_slug(space, entry['arch'])} "
            f"(inherited {entry['score']:.4f}), {cfg.epochs} epoch(s) standalone")
        started = time.perf_counter()
        # --force retrains it; otherwise a finished one is read back and an interrupted one
        # resumes (a folder of other settings is refused by its own run identity).
        metrics = train_architecture(space, entry["arch"], data_spec, folder, cfg,
                                     baselines=False, force=force, resume=not force,
                                     feature_cache=feature_cache)
        finalists.append({"rank": rank, "trial": entry["trial"], "arch": entry["arch"],
                          "mem_gb": entry["mem_gb"], "inherited_score": entry["score"],
                          "val_score": metrics["val_score"],
                          "run": f"{FINALISTS_DIR}/{folder.name}",
                          "seconds": round(time.perf_counter() - started, 2)})
    winner = pick_winner(finalists)
    record = {"epochs": cfg.epochs, "finalists": finalists, "winner": winner}
    atomic_write_json(Path(out) / FINALISTS, record)
    return record
