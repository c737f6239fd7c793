"""`autopmf search`: the best architecture whose training fits a memory budget.

Flow: check the budget against the memory model (fail fast, write nothing) -> train or reuse
the supernet -> NNI RegularizedEvolution over the space, every candidate repaired into the
budget and scored on the validation split with inherited weights -> search_log.jsonl (one
line per candidate, as scored) -> best_arch.yaml and pareto.json.

Resume replays the search: the strategy is deterministic given the seed and the scores, so it
is run again from the start while every candidate already in the log takes its logged score
instead of being scored again. The result equals an uninterrupted run's.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from autopmf.budget import Budget, device_kind
from autopmf.choices import INHERITED_SCORINGS, PROBE_EXAMPLES, STRATEGIES
from autopmf.data.registry import load_dataset
from autopmf.errors import AutopmfError
from autopmf.inherited import InheritedScorer
from autopmf.files import atomic_copy, atomic_write_json, load_tensors
from autopmf.memory import GIB
from autopmf.progress import Progress, announce_budget, announce_data
from autopmf.layout import BEST_ARCH as BEST
from autopmf.layout import FINALISTS, PARETO, REFERENCE
from autopmf.layout import SEARCH_LOG as LOG
from autopmf.layout import SUPERNET_METRICS, SUPERNET_WEIGHTS
from autopmf.report import describe_arch
from autopmf.run_dir import claim_run_dir, holds_run_lock, run_settings
from autopmf.search_log import SearchLog, status_for
from autopmf.space import SearchSpace, save_arch
from autopmf.units import gib
from autopmf.supernet_train import (SupernetConfig, check_supernet_settings,
                                    supernet_fingerprint, supernet_of_run)



@dataclass
class SearchConfig:
    budget_gb: float
    trials: int = 60
    population: int = 16
    tournament: int = 4
    mutation_prob: float = 0.15
    strategy: str = "evolution"  # "random": the same repaired sampling, never mutated
    # How a candidate is scored with the supernet's weights (autopmf.inherited): by a linear
    # probe of its own [CLS] pair, or through the shared heads.
    inherited_score: str = INHERITED_SCORINGS[0]
    # Training examples each candidate's probe is fitted on: more bring it closer to a probe
    # of the whole split, at the cost of a longer forward pass per candidate (BENCHMARKS.md,
    # "The supernet's heads and probes were fitted on too few examples").
    probe_examples: int = PROBE_EXAMPLES
    seed: int = 0
    progress: bool = True
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    # Another search run whose trained supernet to reuse (same space, data and supernet
    # settings, checked by fingerprint): e.g. evolution vs random search on one supernet.
    supernet_from: Path | None = None
    # Finalists (autopmf.finalists): the top `finalists` candidates by inherited score each
    # train standalone for `finalist_epochs` epochs, and the best validation score wins; 0
    # picks the winner by inherited score alone. 2 epochs: after one, from the fixed start at
    # lr 3e-4, most finalists were still below their start (BENCHMARKS.md, "Finalists").
    finalists: int = 0
    finalist_epochs: int = 2


# ----- one candidate --------------------------------------------------------------------
class CandidateScorer:
    """What the search does with each candidate NNI proposes, in order: take its logged score
    when resuming (replay), else score it (a repeat of a scored architecture takes that
    score), and log it. Returns the score for NNI."""

    def __init__(self, space: SearchSpace, scorer, estimate, log: SearchLog,
                 replay: list[dict], bar):
        self.space, self.scorer, self.estimate = space, scorer, estimate
        self.log, self.replay, self.bar = log, replay, bar
        self.trial = 0
        self.scored: dict[str, float] = {}

    def __call__(self, arch: dict[str, int]) -> float:
        self.trial += 1
        key = json.dumps(self.space.canonical(arch), sort_keys=True)
        if self.trial <= len(self.replay):
            entry = self.replay[self.trial - 1]
            if entry["arch"] != arch:
                raise AutopmfError(
                    f"{self.log.path}: trial {self.trial} differs from this search's; the log "
                    "comes from another seed or space — use a new --out or --force")
        else:
            started = time.perf_counter()
            mem_gb = self.estimate(arch) / GIB
            if key in self.scored:
                score, status = self.scored[key], "duplicate"
            else:
                score = self.scorer(arch)
                status = status_for(score)  # no finite score: "failed", never a best
            entry = {"trial": self.trial, "arch": arch, "mem_gb": round(mem_gb, 6),
                     "score": score, "status": status,
                     "seconds": round(time.perf_counter() - started, 4)}
            self.log.append(entry)
        self.scored[key] = entry["score"]
        _show_candidate(self.bar, entry, self.log, self.space,
                        replayed=self.trial <= len(self.replay))
        return entry["score"]


def _show_candidate(bar: Progress, entry: dict, log: SearchLog, space: SearchSpace,
                    replayed: bool) -> None:
    """The bar's best so far; in a log file (or --verbose), a line for this candidate."""
    best = log.best()
    shown = {} if best is None else {"best": f"{best['score']:.4f}",
                                     "mem": f"{gib(best['mem_gb'])} GiB"}
    bar.update(1, **shown)
    note = " (from the log)" if replayed else " (duplicate)" if entry["status"] == "duplicate" \
        else " (failed: no finite score)" if entry["status"] == "failed" else ""
    bar.item(f"trial {entry['trial']} {describe_arch(entry['arch'], space.fusable_slots)}, "
             f"{gib(entry['mem_gb'])} GiB, score {entry['score']:.4f}{note}"
             + ("" if best is None else
                f"; best {best['score']:.4f} (trial {best['trial']}, {gib(best['mem_gb'])} GiB)"))


def pmf_reference_record(budget: Budget, scorer, entries: list[dict]) -> dict | None:
    """The PMF paper's design that fits the budget (`Budget.pmf_reference`) with its inherited
    score (its logged one if the search scored it): what the winner has to beat."""
    found = budget.pmf_reference()
    if found is None:
        return None
    n, m, arch = found
    space = budget.space
    logged = next((e for e in entries if e["status"] == "scored"
                   and space.canonical(e["arch"]) == space.canonical(arch)), None)
    return {"n_fused": n, "prompt_len": m, "arch": arch,
            "mem_gb": round(budget.estimate(arch) / GIB, 6),
            "inherited_score": logged["score"] if logged else scorer(arch),
            "trial": logged["trial"] if logged else None}


# ----- the run directory -----------------------------------------------------------------
def _check_supernet_source(source: Path, expected_fingerprint: str) -> None:
    """--supernet-from: refuse, before anything is written, a run with no finished supernet
    or one trained for another space, encoder pair, data or settings."""
    if not (source / SUPERNET_METRICS).is_file() or not (source / SUPERNET_WEIGHTS).is_file():
        raise AutopmfError(f"--supernet-from {source}: no finished supernet there (needs "
                           f"{SUPERNET_WEIGHTS} and {SUPERNET_METRICS}); run a search or "
                           "`autopmf supernet` into it first")
    try:
        record = json.loads((source / SUPERNET_METRICS).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict) or record.get("fingerprint") != expected_fingerprint:
        raise AutopmfError(f"--supernet-from {source}: its supernet was trained for another "
                           "space, encoder pair, data or supernet settings; give this search "
                           "the options that run used, or leave out --supernet-from")
    load_tensors(source / SUPERNET_WEIGHTS)  # a damaged file: one line, nothing copied


def _copy_supernet(source: Path, out: Path) -> None:
    """Reuse `source`'s finished supernet (checked by `_check_supernet_source`)."""
    if source.resolve() == out.resolve():
        return
    for name in (SUPERNET_WEIGHTS, SUPERNET_METRICS):  # metrics last: it marks "finished"
        atomic_copy(source / name, out / name)


# Settings the identity names only when not at their default (searches from before them
# resume).
OPTIONAL_IDENTITY = ("inherited_score", "probe_examples", "finalists", "finalist_epochs")


def _run_identity(space: SearchSpace, data_spec: str, cfg: SearchConfig) -> dict:
    """What makes two searches the same search (resume must match it)."""
    return {"space": space.to_dict(), "data": data_spec, "budget_gb": cfg.budget_gb,
            "trials": cfg.trials, "population": cfg.population, "tournament": cfg.tournament,
            "mutation_prob": cfg.mutation_prob, "strategy": cfg.strategy, "seed": cfg.seed,
            "supernet": run_settings(cfg.supernet),
            # Named only when not the shared heads, which searches before the option used:
            # those stay resumable.
            **({} if cfg.inherited_score == "heads" else
               {"inherited_score": cfg.inherited_score}),
            # Likewise named only when not the default, so earlier probe searches resume.
            **({} if cfg.probe_examples == PROBE_EXAMPLES else
               {"probe_examples": cfg.probe_examples}),
            # Likewise: searches without finalists resume as before.
            **({} if cfg.finalists == 0 else
               {"finalists": cfg.finalists, "finalist_epochs": cfg.finalist_epochs})}


@holds_run_lock
def run_search(space: SearchSpace, data_spec: str, out: Path, cfg: SearchConfig,
               resume: bool = False, force: bool = False) -> dict:
    if not (cfg.budget_gb > 0 and math.isfinite(cfg.budget_gb * GIB)):
        raise AutopmfError(f"--budget-gb must be a positive number of GiB, got {cfg.budget_gb}")
    if cfg.trials < 1 or cfg.population < 1:
        raise AutopmfError("--trials and --population must be at least 1")
    if cfg.strategy not in STRATEGIES:
        raise AutopmfError(f"--strategy {cfg.strategy!r}: use {' or '.join(STRATEGIES)}")
    if cfg.inherited_score not in INHERITED_SCORINGS:
        raise AutopmfError(f"--inherited-score {cfg.inherited_score!r}: use "
                           f"{' or '.join(INHERITED_SCORINGS)}")
    if cfg.probe_examples < 1:
        raise AutopmfError(f"--probe-examples must be at least 1, got {cfg.probe_examples}")
    if cfg.finalists < 0:
        raise AutopmfError(f"--finalists must be 0 (off) or more, got {cfg.finalists}")
    if cfg.finalists and cfg.finalist_epochs < 1:
        raise AutopmfError(f"--finalist-epochs must be at least 1, got {cfg.finalist_epochs}")
    if cfg.supernet.epochs == 0 and cfg.inherited_score == "heads":
        raise AutopmfError("--inherited-score heads reads the supernet's shared heads, which "
                           "an untrained supernet (--epochs 0) does not fit; use "
                           "--inherited-score probe, or train it (--epochs 1 or more)")
    check_supernet_settings(cfg.supernet, space)
    out = Path(out)
    identity = _run_identity(space, data_spec, cfg)
    claim = claim_run_dir(out, identity, resume=resume, force=force, what="search",
                          outputs=(LOG, BEST, PARETO, REFERENCE, FINALISTS, SUPERNET_METRICS,
                                   SUPERNET_WEIGHTS), optional_keys=OPTIONAL_IDENTITY)
    dataset = load_dataset(data_spec, seed=cfg.supernet.split_seed, image_size=space.image_size)
    num_classes, dataset_metric = len(dataset.label_names), dataset.metric
    budget = Budget.load(space, cfg.budget_gb, num_classes, cfg.supernet.device)
    budget.check_feasible()  # nothing fits: clear error, nothing written
    announce_data(dataset)
    announce_budget(budget, cfg.budget_gb)
    if cfg.supernet_from is not None:
        _check_supernet_source(Path(cfg.supernet_from),
                               supernet_fingerprint(space, data_spec, cfg.supernet))
    out.mkdir(parents=True, exist_ok=True)
    # All inputs checked:
    claim.start(metric=dataset_metric, memory_device=device_kind(cfg.supernet.device))
    started = time.perf_counter()
    if cfg.supernet_from is not None:
        _copy_supernet(Path(cfg.supernet_from), out)
    same_budget = cfg.supernet.budget_gb == cfg.budget_gb  # else the whole space, or another
    run = supernet_of_run(space, data_spec, out, cfg.supernet,
                          budget=budget if same_budget else None)
    scorer = InheritedScorer(run.supernet, run.caches["train"], run.val_slots, cfg.supernet,
                             run.metric, run.supernet.num_classes, cfg.inherited_score,
                             cfg.probe_examples)

    log = SearchLog.start(out / LOG, resume)
    replay = list(log.entries)
    # Random search is evolution whose initial (random, repaired) population is every trial.
    population = cfg.trials if cfg.strategy == "random" else min(cfg.population, cfg.trials)
    bar = Progress("search", cfg.trials, unit="candidate", enabled=cfg.progress)
    from autopmf.nni_space import run_evolution  # NNI only when a search runs

    candidates = CandidateScorer(space, scorer, budget.estimate, log, replay, bar)
    run_evolution(space, budget, candidates, trials=cfg.trials, population=population,
                  tournament=min(cfg.tournament, population), mutation_prob=cfg.mutation_prob,
                  seed=cfg.seed)
    bar.close()

    best = log.best(cfg.budget_gb)
    if best is None:
        raise AutopmfError("the search scored no architecture within the budget; raise "
                           "--budget-gb or --trials")
    front = log.pareto()
    atomic_write_json(out / PARETO, front)
    reference = pmf_reference_record(budget, scorer, log.entries)
    if reference is not None:
        atomic_write_json(out / REFERENCE, reference)
    chosen = {}
    if cfg.finalists:
        best, chosen = _run_finalists(space, data_spec, out, log, cfg, force)
    save_arch(out / BEST, space, best["arch"], score=best["score"], mem_gb=best["mem_gb"],
              trial=best["trial"], budget_gb=cfg.budget_gb, data=data_spec,
              metric=run.metric, **chosen)
    return {"best": best, "pareto": front, "trials": len(log.entries),
            "seconds": time.perf_counter() - started, "metric": run.metric,
            **({"finalists": chosen} if chosen else {})}


def _run_finalists(space: SearchSpace, data_spec: str, out: Path, log: SearchLog,
                   cfg: SearchConfig, force: bool) -> tuple[dict, dict]:
    """Train the shortlist (autopmf.finalists) -> (the winner's log entry, what best_arch.yaml
    records of how it was chosen)."""
    from autopmf.finalists import finalist_train_config, shortlist, train_finalists

    train_cfg = finalist_train_config(cfg.supernet, cfg.finalist_epochs, cfg.progress)
    record = train_finalists(space, data_spec, out,
                             shortlist(space, log.entries, cfg.budget_gb, cfg.finalists),
                             train_cfg, cfg.supernet.feature_cache, force=force)
    winner = record["winner"]
    entry = next(e for e in log.entries if e["trial"] == winner["trial"])
    return entry, {"chosen_by": f"finalists ({len(record['finalists'])} trained "
                                f"{record['epochs']} epoch(s) standalone)",
                   "finalist_val_score": winner["val_score"]}
