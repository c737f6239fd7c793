"""The `autopmf` command: a thin layer over the library API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from autopmf import __version__
from autopmf.choices import (DEFAULT_SLOT_BYTES, DEVICES, FEATURE_CACHE_MODES,
                             INHERITED_SCORINGS, PROBE_EXAMPLES, RETRAIN_INITS, STRATEGIES,
                             SUPERNET_SCOPES)
from autopmf.errors import AutopmfError
from autopmf.layout import (BEST_ARCH, FINALISTS, PARETO, SEARCH_LOG, SUPERNET_METRICS,
                            SUPERNET_WEIGHTS, TRAIN_OUTPUTS)
from autopmf.units import GIB, gib

DEMO_SPACE = "demo"
DEMO_DATA = "digits"  # identity statements, no negation: PMF learns them on a CPU in minutes
DEMO_TASK = ("is the statement true of the image? (scikit-learn's 8x8 digits, each with "
             "statements such as 'this is a 3', half of them false)")
# Without a warm-up the demo's supernet stayed at chance for all 8 epochs tried; with 3
# epochs of one fixed subnet first, that subnet leaves chance (BENCHMARKS.md).
DEFAULT_WARMUP_EPOCHS = 3
# Demo space on CPU: all-off needs 0.18 GiB, everything fused 0.39. It was 0.30 until the top
# slot began computing only the [CLS] rows, which cut every fused design's peak by 12-17 MiB:
# 0.285 keeps nearly the same designs in and out (BENCHMARKS.md, the demo section).
DEMO_BUDGET_GB = 0.285
# The demo's supernet: sandwich sampling with in-place distillation from the budget's largest,
# no warm-up, from the fixed start at lr 3e-4, the rate and start of the yardstick it was
# measured against. Its search's winner beat the PMF reference in 3 of 3 search seeds, each
# winner at least as good as the yardstick's third design (BENCHMARKS.md, "The search with
# in-place distillation"). The winner retrains at the same rate and start (--lr and
# --prompt-init are both the supernet's and the retrain's). `--epochs 0 --no-distill
# --lr 3e-3 --prompt-init paper --retrain-epochs 5` is the demo before 2026-12-06.
DEMO_SETTINGS = {"epochs": 6, "lr": 3e-4, "prompt_init": "fixed", "distill": True,
                 "warmup_epochs": 0}
MAX_BUDGET_GB = 1e6  # a PiB: above any device, and far from overflowing when turned to bytes
MAX_SEED = 2**32 - 1  # numpy's legacy seeding, used by some data splits, takes no more


def _train_config(args, space):
    from autopmf.train import TrainConfig

    return TrainConfig(epochs=args.epochs, lr=args.lr, head_lr_scale=args.head_lr_scale,
                       seed=args.seed, data_seed=getattr(args, "data_seed", None),
                       batch_size=args.batch_size or space.batch_size,
                       precision=args.precision or space.precision,
                       prompt_init=args.prompt_init, head_init=args.head_init,
                       init_draws=getattr(args, "init_draws", 1),  # train and retrain
                       device=args.device,
                       progress=not args.quiet)


def cmd_train(args) -> int:
    from autopmf.train_arch import train_architecture

    from autopmf.space import parse_arch_option

    space, arch = parse_arch_option(args.arch, args.space)
    metrics = train_architecture(space, arch, _data_spec(args, args.data), Path(args.out),
                                 _train_config(args, space), baselines=not args.no_baselines,
                                 force=args.force, resume=args.resume, measure_memory=True,
                                 feature_cache=args.feature_cache)
    _print_train_summary(metrics, Path(args.out), as_json=args.json)
    return 0


def cmd_retrain(args) -> int:
    import yaml

    from autopmf.space import load_arch
    from autopmf.train_arch import train_architecture

    space, arch = load_arch(args.arch)
    doc = yaml.safe_load(Path(args.arch).read_text(encoding="utf-8"))
    data = _data_spec(args, args.data or doc.get("data") or DEMO_DATA)
    init = None
    if args.init == "supernet":
        init = _inherited_weights(Path(args.arch).parent, space, arch, data, args)
    out = Path(args.out) if args.out else Path(args.arch).parent / "retrain"
    metrics = train_architecture(space, arch, data, out, _train_config(args, space),
                                 baselines=not args.no_baselines, force=args.force,
                                 init_weights=init, measure_memory=True, resume=args.resume,
                                 feature_cache=args.feature_cache)
    _print_train_summary(metrics, out, as_json=args.json)
    return 0


def _inherited_weights(run: Path, space, arch, data: str, args):
    """The subnet's weights extracted from the search run's supernet."""
    from autopmf.build import build_backbone
    from autopmf.files import load_tensors
    from autopmf.supernet_train import load_supernet_weights
    from supernet.few_shot import build_supernet

    if not (run / SUPERNET_WEIGHTS).exists():
        raise AutopmfError(f"--init supernet needs {run / SUPERNET_WEIGHTS} (the search run's "
                           "supernet); use --init scratch or point --arch into a search run")
    record = _check_supernet_is_for(run, space, data)
    num_classes = record.get("num_classes")
    if num_classes is None:  # a supernet from before its record held it: count the classes
        from autopmf.data.registry import load_dataset

        num_classes = len(load_dataset(data, seed=args.seed,
                                       image_size=space.image_size).label_names)
    few_shot = record.get("config", {}).get("few_shot", "none")
    supernet = build_supernet(space, build_backbone(space), num_classes, few_shot)
    load_supernet_weights(supernet, load_tensors(run / SUPERNET_WEIGHTS))
    return supernet.extract(arch).trainable_state_dict()


def _check_supernet_is_for(run: Path, space, data: str) -> dict:
    """The supernet's record (SUPERNET_METRICS); refuse to inherit from a supernet
    trained for another space (encoders, image size, text length, choices) or other data:
    weights of the same shapes would load silently."""
    try:
        record = json.loads((run / SUPERNET_METRICS).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        record = None
    if not isinstance(record, dict):
        raise AutopmfError(f"--init supernet: {run / SUPERNET_METRICS} is missing or "
                           "unreadable, so the supernet cannot be checked against this "
                           "architecture; use --init scratch, or point --arch into a finished "
                           "search run")
    trained = record.get("space") if isinstance(record.get("space"), dict) else {}
    differs = sorted(k for k in {*trained, *space.to_dict()}
                     if trained.get(k) != space.to_dict().get(k))
    if differs:
        raise AutopmfError(f"--init supernet: the supernet in {run} was trained for another "
                           f"space ({differs[0]} differs from the architecture file's); use "
                           "the arch file that search wrote, or --init scratch")
    if record.get("data") != data:
        raise AutopmfError(f"--init supernet: the supernet in {run} was trained on "
                           f"{record.get('data')!r}, not {data!r}; retrain with --data "
                           f"{record.get('data')}, or --init scratch")
    return record


def cmd_predict(args) -> int:
    import json

    from autopmf.predict import load_image, predict

    results = predict(Path(args.run), [load_image(p) for p in args.image], args.text)
    for r in results:
        label = r["label"] if isinstance(r["label"], str) else ",".join(r["label"]) or "-"
        print(json.dumps(r) if args.json else f"{label:>10}  {r['text']}")
    return 0


def cmd_supernet(args) -> int:
    from autopmf.space import load_space
    from autopmf.supernet_train import train_supernet

    space = load_space(args.space)
    cfg = _supernet_config(args, space)
    run = train_supernet(space, _data_spec(args, args.data), Path(args.out), cfg,
                         resume=args.resume, force=args.force)
    if run.metrics["history"]:
        last = run.metrics["history"][-1]["val"]
        print("reference subnets, val " + run.metric + ": "
              + "  ".join(f"{k} {v:.4f}" for k, v in last.items()))
    _print_wrote(args.out, SUPERNET_WEIGHTS, SUPERNET_METRICS)
    return 0


def _supernet_config(args, space):
    from autopmf.supernet_train import SupernetConfig

    return SupernetConfig(epochs=args.epochs, lr=args.lr, head_lr_scale=args.head_lr_scale,
                          seed=args.seed, batch_size=args.batch_size or space.batch_size,
                          precision=args.precision or space.precision,
                          prompt_init=args.prompt_init, head_init=args.head_init,
                          device=args.device,
                          progress=not args.quiet, sampling=args.sampling,
                          distill=args.distill, few_shot=args.few_shot,
                          data_seed=getattr(args, "data_seed", None),
                          budget_gb=_supernet_budget(args),
                          warmup_epochs=_warmup_epochs(args), warmup=args.warmup,
                          feature_cache=args.feature_cache,
                          cache_max_bytes=_slot_cache_bytes(args))


def _slot_cache_bytes(args) -> int:
    """--slot-cache-gib in bytes (the demo has no such option: the default)."""
    gib_ = getattr(args, "slot_cache_gib", None)
    if gib_ is None:
        return DEFAULT_SLOT_BYTES
    if not 0 <= gib_ < float("inf"):  # also refuses nan
        raise AutopmfError(f"--slot-cache-gib must be a finite 0 or more, got {gib_}")
    return int(gib_ * GIB)


def _warmup_epochs(args) -> int:
    """--warmup-epochs, by default 3 but at most half the supernet's epochs."""
    if args.warmup_epochs is not None:
        if args.warmup_epochs < 0:
            raise AutopmfError(f"--warmup-epochs must be 0 or more, got {args.warmup_epochs}")
        return args.warmup_epochs
    return min(DEFAULT_WARMUP_EPOCHS, args.epochs // 2)


def _supernet_budget(args) -> float | None:
    """The budget the supernet trains within: the search's unless --supernet-scope full."""
    if getattr(args, "supernet_scope", "budget") == "full":
        return None
    return getattr(args, "budget_gb", None)


def cmd_search(args) -> int:
    from autopmf.search import SearchConfig, run_search
    from autopmf.space import load_space

    space = load_space(args.space)
    cfg = SearchConfig(budget_gb=args.budget_gb, trials=args.trials,
                       population=args.population, strategy=args.strategy, seed=args.seed,
                       inherited_score=args.inherited_score,
                       probe_examples=args.probe_examples,
                       finalists=args.finalists, finalist_epochs=args.finalist_epochs,
                       progress=not args.quiet, supernet_from=args.supernet_from,
                       supernet=_supernet_config(args, space))
    result = run_search(space, _data_spec(args, args.data), Path(args.out), cfg,
                        resume=args.resume, force=args.force)
    if args.json:
        print(json.dumps(dict(result, out=str(args.out))))
        return 0
    best, chosen = result["best"], result.get("finalists")
    print(f"best of {result['trials']} candidates: {result['metric']} {best['score']:.4f} at "
          f"{gib(best['mem_gb'])} GiB (budget {gib(args.budget_gb, exact=True)} GiB), fused slots "
          f"{space.fused_slots(best['arch'])}"
          + (f"; chosen by {chosen['chosen_by']}, val {chosen['finalist_val_score']:.4f}"
             if chosen else ""))
    _print_wrote(args.out, BEST_ARCH, SEARCH_LOG, PARETO, *([FINALISTS] if chosen else []))
    return 0


def cmd_demo(args) -> int:
    """Search the demo space at a budget the largest architecture does not fit, retrain the
    winner, and show the log."""
    from autopmf.progress import say
    from autopmf.report import print_summary, summarize, write_plots
    from autopmf.search import SearchConfig, run_search
    from autopmf.space import load_arch, load_space
    from autopmf.train_arch import train_architecture

    space = load_space(DEMO_SPACE)
    out = Path(args.out)
    say(f"autopmf demo: frozen {space.text_encoder} + {space.image_encoder} on "
        f"'{DEMO_DATA}', training-memory budget {gib(DEMO_BUDGET_GB, exact=True)} GiB at "
        f"batch size {space.batch_size}")
    say(f"task: {DEMO_TASK}; fused slots start from --prompt-init {args.prompt_init}, heads "
        f"from --head-init {args.head_init}")
    args.budget_gb = DEMO_BUDGET_GB
    cfg = SearchConfig(budget_gb=DEMO_BUDGET_GB, trials=args.trials, seed=args.seed,
                       inherited_score=args.inherited_score,
                       probe_examples=args.probe_examples, progress=not args.quiet,
                       finalists=args.finalists, finalist_epochs=args.finalist_epochs,
                       supernet=_supernet_config(args, space))
    run_search(space, DEMO_DATA, out, cfg, resume=not args.force, force=args.force)
    _, arch = load_arch(out / BEST_ARCH)
    say(f"\nretraining the winner standalone ({args.retrain_epochs} epochs)")
    train_cfg = _train_config(args, space)  # the supernet's --lr and --prompt-init
    train_cfg.epochs = args.retrain_epochs
    # Like the search: an interrupted (or finished) retrain continues unless --force.
    metrics = train_architecture(space, arch, DEMO_DATA, out / "retrain", train_cfg,
                                 force=args.force, resume=not args.force, measure_memory=True,
                                 feature_cache=args.feature_cache)
    summary = summarize(out)
    print()
    print_summary(summary, list(space.fusable_slots))
    plots = write_plots(out, summary)
    print(f"\nretrained winner: test {metrics['metric']} {metrics['test_score']:.4f} "
          f"(val {metrics['val_score']:.4f}); peak training memory measured "
          f"{gib(metrics['mem_gb_measured'])} GiB, predicted {gib(metrics['mem_gb_predicted'])} "
          f"GiB, budget {gib(DEMO_BUDGET_GB, exact=True)} GiB")
    for name, scores in metrics.get("baselines", {}).items():
        print(f"{name:>11} baseline: test {scores['test']:.4f}")
    print("plots: " + ", ".join(str(p) for p in plots))
    return 0


def _data_spec(args, spec: str) -> str:
    """The dataset spec with --metric and --strict folded in, so that the run records them."""
    from autopmf.data.registry import with_options

    return with_options(spec, metric=args.metric, strict=1 if args.strict else None)


def _print_wrote(out, *names: str) -> None:
    print("wrote " + ", ".join(f"{out}/{name}" for name in names))


def _print_train_summary(metrics: dict, out: Path, as_json: bool = False) -> None:
    if as_json:
        print(json.dumps(dict(metrics, out=str(out))))
        return
    m = metrics["metric"]
    print(f"\n{m}: val {metrics['val_score']:.4f}  test {metrics['test_score']:.4f}  "
          f"(fused slots {metrics['fused_slots']}, {metrics['trainable_params']:,} trainable of "
          f"{metrics['total_params']:,} params, {metrics['seconds']['total']:.0f} s)")
    for other in metrics.get("scores", {}).get("test", {}):
        if other != m:
            print(f"{other}: val {metrics['scores']['val'][other]:.4f}  test "
                  f"{metrics['scores']['test'][other]:.4f}")
    for name, scores in metrics.get("baselines", {}).items():
        print(f"{name:>11} baseline: val {scores['val']:.4f}  test {scores['test']:.4f}")
    if metrics.get("late_fusion_verdict"):
        print(metrics["late_fusion_verdict"])
    if "mem_gb_measured" in metrics:  # a run resumed from before train measured has none
        print(f"peak training memory: measured {gib(metrics['mem_gb_measured'])} GiB, "
              f"predicted {gib(metrics['mem_gb_predicted'])} GiB ({metrics['memory_device']})")
    _print_wrote(out, *TRAIN_OUTPUTS)


def _add_train_options(p: argparse.ArgumentParser, epochs: int) -> None:
    from autopmf.space import PRECISIONS

    p.add_argument("--epochs", type=int, default=epochs, help="training epochs")
    p.add_argument("--lr", type=float, default=3e-3, help="learning rate of the prompts and mappings")
    p.add_argument("--head-lr-scale", type=float, default=0.01,
                   help="the heads' learning rate is lr times this")
    p.add_argument("--batch-size", type=int, default=None,
                   help="default: the search space's batch size")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="default: the search space's precision")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the data split, the data order and the sampling (and the "
                        "fused slots' start under --prompt-init paper, centred or cls)")
    _add_prompt_init_option(p)
    _add_device_options(p)
    _add_feature_cache_option(p)
    p.add_argument("--force", action="store_true", help="overwrite a finished run in --out")


def _add_feature_cache_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--feature-cache", choices=FEATURE_CACHE_MODES, default="auto",
                   help="the frozen encoders' streams below the first fusable slot: computed "
                   "once and kept on disk (shards in the training precision, read a batch's "
                   "rows at a time, reused by later runs), kept in memory for this run, or "
                   "off (recomputed every batch); auto: disk, except on CUDA for the packaged "
                   "datasets (whose images are in memory), where it is off (default: "
                   "%(default)s)")


def _add_device_options(p: argparse.ArgumentParser) -> None:
    """--device and --threads, alike on every command that runs a model."""
    p.add_argument("--device", default=None,
                   help=f"{' or '.join(DEVICES)} (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: all cores)")


def _add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print the result as one JSON object on stdout (progress goes to "
                   "stderr)")


def add_run_argument(p: argparse.ArgumentParser, help: str) -> None:
    """RUN, the run folder a command reads, given positionally (`--run RUN` is accepted
    too, as older versions spelled it); `resolve_run` checks that one was given."""
    p.add_argument("run", nargs="?", metavar="RUN", help=help)
    p.add_argument("--run", dest="run_option", metavar="RUN", help=argparse.SUPPRESS)


def resolve_run(args) -> None:
    if not hasattr(args, "run_option"):
        return
    given = [v for v in (args.run, args.run_option) if v is not None]
    if not given:
        raise AutopmfError(f"name the run folder: autopmf {args.command} RUN ...")
    if len(set(given)) > 1:
        raise AutopmfError(f"two run folders given ({given[0]} and --run {given[1]}); name one")
    args.run = given[0]


def _add_prompt_init_option(p: argparse.ArgumentParser) -> None:
    """--prompt-init and --head-init: where training starts (`paper` for both is exactly the
    PMF paper's initialisation)."""
    from autopmf.head_init import HEAD_INITS
    from supernet.init import PROMPT_INITS

    p.add_argument("--prompt-init", choices=PROMPT_INITS, default=PROMPT_INITS[0],
                   help="how fused slots start: exactly the PMF paper's, drawn from --seed "
                        "('paper'), or the paper's draw seeded by each weight's position, so "
                        "that --seed changes only the data order ('fixed'), or "
                        "with mappings centred on the training data ('centred'), or with "
                        "query prompts starting at the mean [CLS] state of their slot ('cls'), "
                        "or with prompts and mappings set from the principal axes of the "
                        "frozen features, with no random part ('principal') "
                        "(default: %(default)s)")
    p.add_argument("--head-init", choices=HEAD_INITS, default=HEAD_INITS[0],
                   help="how the heads start: fitted as a linear probe of the untrained "
                        "model's [CLS] features ('probe'), or the paper's random init "
                        "('paper') (default: %(default)s)")


def _add_init_draws_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-draws", type=_positive_int, default=1, metavar="K",
                   help="draw the fused slots' random start K times and keep the one a "
                   "linear probe of the final [CLS] features reads best on held-out training "
                   "examples (needs a random start: not --prompt-init fixed or principal; "
                   "1: the single draw of the paper; ignored when starting from "
                   "the supernet's weights; default: %(default)s)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more; got {text!r}")
    return value


def _add_data_seed_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-seed", type=int, default=None,
                   help="split the data with this seed instead of --seed: retrain with "
                   "several --seed values on one split (e.g. the search's)")


def _add_run_inputs(p: argparse.ArgumentParser, space_required: bool = True) -> None:
    """--space, --data and --out, shared by the commands that train something."""
    p.add_argument("--space", required=space_required, default=None,
                   help="search space YAML or built-in name")
    p.add_argument("--data", default=DEMO_DATA, help="dataset spec, e.g. digits or easyvqa")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory to write")
    _add_data_options(p)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", default=None,
                   help="the score to maximise: accuracy (single-label), f1_macro or f1_micro "
                   "(multi-label); default: the dataset's (f1_macro for multi-label)")
    p.add_argument("--strict", action="store_true",
                   help="fail on an unreadable image or a missing text instead of skipping it")


def _add_inherited_score_option(p) -> None:
    p.add_argument("--inherited-score", choices=INHERITED_SCORINGS,
                   default=INHERITED_SCORINGS[0],
                   help="how a candidate is scored with the supernet's weights: a linear probe "
                   "fitted to its own [CLS] features ('probe'), the supernet's shared "
                   "heads ('heads'), or that probe then one short epoch of training on the "
                   "probe's examples ('finetune': about probe-examples / batch size steps "
                   "per candidate)")
    p.add_argument("--probe-examples", type=int, default=PROBE_EXAMPLES,
                   help=f"training examples each candidate's probe is fitted on (default "
                   f"{PROBE_EXAMPLES}); more bring each probe closer to one fitted on the whole "
                   "training split, at the cost of a longer forward pass per candidate")


def _add_finalists_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--finalists", type=int, default=0, metavar="K",
                   help="train the K best candidates by inherited score standalone for "
                   "--finalist-epochs each, at the supernet's --lr and --prompt-init, and "
                   "pick the winner by their validation scores (RUN/finalists/); 0 (the "
                   "default) picks by inherited score alone")
    p.add_argument("--finalist-epochs", type=int, default=2, metavar="E",
                   help="standalone training epochs of each finalist (default 2: after one "
                   "epoch most finalists were still below their starting score)")


def _add_supernet_options(p: argparse.ArgumentParser) -> None:
    _add_sampling_options(p)
    _add_warmup_option(p)
    _add_resume_option(p)
    _add_train_options(p, epochs=10)
    p.add_argument("--slot-cache-gib", type=float, default=None,
                   help="RAM for the frozen streams kept at higher slots (float32, every "
                   "split together), so that a subnet skips the frozen layers below its "
                   "first fused slot; less RAM only costs time, 0 keeps none "
                   f"(default: {DEFAULT_SLOT_BYTES / GIB:g})")


def _few_shot_split(text: str) -> str:
    """--few-shot's spelling (whether slot J is in the space is checked with the space)."""
    from supernet.few_shot import FEW_SHOT_SPLITS, SLOT_SPLIT

    rest = text[len(SLOT_SPLIT):] if text.startswith(SLOT_SPLIT) else None
    if text in FEW_SHOT_SPLITS or (rest is not None and rest.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from "
                                     f"{', '.join(FEW_SHOT_SPLITS)} or {SLOT_SPLIT}J, J a "
                                     "fusable slot)")


def _add_sampling_options(p: argparse.ArgumentParser) -> None:
    from supernet.few_shot import FEW_SHOT_SPLITS
    from supernet.sampling import SAMPLING_RULES

    p.add_argument("--sampling", choices=SAMPLING_RULES, default="sandwich",
                   help="supernet training: which subnet trains at each step (progressive: "
                   "the largest alone, then its slots at every length, then every subnet, a "
                   "third of the steps each)")
    p.add_argument("--few-shot", default="none", type=_few_shot_split,
                   metavar="{" + ",".join(FEW_SHOT_SPLITS) + ",slot-J}",
                   help="supernet training: one supernet (none, the default), or one per "
                   "highest (top-slot) or lowest (bottom-slot) fused slot, each trained only on "
                   "the subnets whose top or bottom fused slot it is (pair it with the "
                   "--sampling rule of the same name so each gets its share), or two split on "
                   "whether a subnet fuses slot J (slot-J)")
    p.add_argument("--distill", action=argparse.BooleanOptionalAction, default=False,
                   help="supernet training: in-place distillation (BigNAS): every subnet but "
                   "the largest within the budget learns the largest's predictions on the same "
                   "batch instead of the labels (one more forward pass a step)")
    p.add_argument("--supernet-scope", choices=SUPERNET_SCOPES, default="budget",
                   help="supernet training: only subnets that fit --budget-gb (repaired into "
                   "it like the search's candidates), or the whole space")


def _add_warmup_option(p: argparse.ArgumentParser) -> None:
    from supernet.sampling import WARMUP_RULES

    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="supernet training: epochs that train only fixed subnets (within the "
                   f"budget) before sampling starts (default {DEFAULT_WARMUP_EPOCHS}, at most "
                   "half of --epochs)")
    p.add_argument("--warmup", choices=WARMUP_RULES, default="lowest",
                   help="which subnets the warm-up trains: lowest (default: the lowest slots "
                   "that fit, shortest prompts; its demo winner beats the PMF reference in "
                   "BENCHMARKS.md), the largest within the budget, or a cover (subnets at "
                   "the shortest prompts that between them fuse every slot, taken in turn)")


def _add_resume_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run from its newest checkpoint (and, for a "
                   "search, its log); ends as an uninterrupted run would")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="autopmf", description="Neural architecture search for prompt-based multimodal "
        "fusion over frozen pretrained encoders.", formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"autopmf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one fixed architecture standalone")
    _add_run_inputs(p, space_required=False)
    p.add_argument("--arch", required=True,
                   help="architecture YAML, or reference:N:M (top N slots fused, length M)")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the image-only and text-only baselines")
    _add_resume_option(p)
    _add_train_options(p, epochs=8)
    _add_init_draws_option(p)
    _add_data_seed_option(p)
    _add_json_option(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("search", help="find the best architecture within a memory budget")
    _add_run_inputs(p)
    p.add_argument("--budget-gb", type=float, required=True,
                   help="peak training memory allowed (GiB) at the space's batch size")
    p.add_argument("--trials", type=int, default=60, help="candidates to score")
    p.add_argument("--population", type=int, default=16, help="evolution population size")
    p.add_argument("--strategy", choices=STRATEGIES, default="evolution",
                   help="random: the baseline, same budget repair, no mutation")
    p.add_argument("--supernet-from", default=None, metavar="RUN",
                   help="reuse RUN's trained supernet (same space, data and supernet settings)")
    _add_inherited_score_option(p)
    _add_finalists_options(p)
    _add_supernet_options(p)
    _add_data_seed_option(p)
    _add_json_option(p)
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("retrain", help="retrain a searched architecture standalone")
    p.add_argument("--arch", required=True, help="RUN/best_arch.yaml (or any arch file)")
    p.add_argument("--out", default=None, metavar="RUN",
                   help="run directory to write (default: retrain/ beside the arch file)")
    p.add_argument("--data", default=None, help="default: the data the search used")
    _add_data_options(p)
    p.add_argument("--init", choices=RETRAIN_INITS, default="scratch",
                   help="start from fresh weights or from the supernet's")
    p.add_argument("--no-baselines", action="store_true",
                   help="skip the image-only and text-only baselines")
    _add_resume_option(p)
    _add_train_options(p, epochs=8)
    _add_init_draws_option(p)
    _add_data_seed_option(p)
    _add_json_option(p)
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("predict", help="classify image/text pairs with a trained run")
    add_run_argument(p, "an `autopmf train` or `retrain` run directory")
    p.add_argument("--image", action="append", required=True, help="image file (repeat)")
    p.add_argument("--text", action="append", required=True, help="text (one per --image)")
    p.add_argument("--json", action="store_true", help="one JSON object per pair")
    _add_device_options(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("supernet", help="train the weight-sharing supernet of a space")
    _add_run_inputs(p)
    p.add_argument("--budget-gb", type=float, default=None,
                   help="train only subnets that fit this training-memory budget (GiB)")
    _add_supernet_options(p)
    _add_data_seed_option(p)
    p.set_defaults(func=cmd_supernet)

    from autopmf.memory.cli import add_measure_parser
    from autopmf.report_cli import add_log_parser
    from autopmf.validate import add_validate_parser

    add_log_parser(sub)
    add_measure_parser(sub)
    add_validate_parser(sub)

    p = sub.add_parser("demo", help="the embedded default, end to end")
    p.add_argument("--out", default="runs/demo", metavar="RUN", help="run directory to write")
    # 24 candidates, 6 supernet and 8 retrain epochs keep the demo within 12 minutes on 2 CPU
    # cores (BENCHMARKS.md, "`autopmf demo` with in-place distillation").
    p.add_argument("--trials", type=int, default=24, help="candidates to score")
    p.add_argument("--retrain-epochs", type=int, default=8,
                   help="epochs of the winner's standalone retraining")
    _add_inherited_score_option(p)
    _add_finalists_options(p)
    _add_sampling_options(p)
    _add_warmup_option(p)
    _add_train_options(p, epochs=DEMO_SETTINGS["epochs"])  # --epochs: the supernet's
    p.set_defaults(**DEMO_SETTINGS)
    _add_init_draws_option(p)  # for the winner's retraining
    p.set_defaults(func=cmd_demo)
    from autopmf.progress import add_verbosity_options

    for command in sub.choices.values():  # the same pair, meaning the same, on every command
        add_verbosity_options(command)
        command.formatter_class = _HelpFormatter
    return parser


class _UsageError(Exception):
    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog, self.message = prog, message


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors reach `main` (which prints one line and returns 2)
    instead of exiting from inside argparse; its subcommands' parsers are of this class too."""

    def error(self, message: str):
        raise _UsageError(self.prog, message)


class _HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default, unless it has none (None, a flag) or its help already
    says what the default is."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default is None
                or action.default is False or action.default is argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def _setup_runtime(args) -> None:
    if not hasattr(args, "threads"):
        return  # commands that run no model (log) skip importing torch
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(args.device)
    except RuntimeError:
        raise AutopmfError(f"--device {args.device!r} is not a device; use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise AutopmfError(f"--device {args.device}: autopmf runs on cpu or cuda")
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise AutopmfError(f"--device {args.device}: torch sees no such CUDA device here "
                           f"({torch.cuda.device_count()} found); use --device cpu")


def check_settings(args) -> None:
    """Refuse settings that would train nothing or train garbage, before anything runs."""
    import math

    for option in ("out", "run"):
        value = getattr(args, option, None)
        if isinstance(value, str) and not value.strip():
            raise AutopmfError(f"--{option} is empty (an unset shell variable?); name the run "
                               f"folder, e.g. --{option} runs/x")
    # A supernet may train for no epoch: its subnets are then scored as initialised (with
    # --inherited-score probe, a zero-cost proxy; BENCHMARKS.md measures how well it ranks).
    supernet_epochs = getattr(args, "command", None) in ("search", "supernet", "demo")
    ranges = {"epochs": (0 if supernet_epochs else 1, None), "retrain_epochs": (1, None),
              "batch_size": (1, None),
              "trials": (1, None), "population": (1, None), "threads": (1, None),
              "warmup_epochs": (0, None), "seed": (0, MAX_SEED), "data_seed": (0, MAX_SEED)}
    for name, (low, high) in ranges.items():
        value = getattr(args, name, None)
        if value is not None and not (low <= value and (high is None or value <= high)):
            within = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise AutopmfError(f"--{name.replace('_', '-')} must be {within}, got {value}")
    lr = getattr(args, "lr", None)
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise AutopmfError(f"--lr must be a positive finite number, got {lr}")
    scale = getattr(args, "head_lr_scale", None)
    if scale is not None and not (math.isfinite(scale) and scale >= 0):
        raise AutopmfError(f"--head-lr-scale must be a finite number >= 0, got {scale}")
    from supernet.init import SEED_FREE_INITS

    prompt_init = getattr(args, "prompt_init", None)
    if getattr(args, "init_draws", 1) > 1 and prompt_init in SEED_FREE_INITS:
        raise AutopmfError(f"--init-draws needs a random start to draw, and --prompt-init "
                           f"{prompt_init} has none; use --init-draws 1 or another "
                           "--prompt-init")
    budget = getattr(args, "budget_gb", None)
    if budget is not None and not 0 < budget <= MAX_BUDGET_GB:  # NaN fails both
        raise AutopmfError(f"--budget-gb must be a positive number of GiB (at most "
                           f"{MAX_BUDGET_GB:g}), got {budget}")


def _is_out_of_memory(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or (
        isinstance(exc, RuntimeError) and any(
            s in str(exc) for s in ("can't allocate memory", "out of memory")))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as exc:  # one line, no traceback, no usage block
        print(f"autopmf: error: {exc.message} (see {exc.prog} --help)", file=sys.stderr)
        return 2
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0
    from autopmf.progress import send_lines_to_stderr, set_verbosity, verbosity, verbosity_of

    # The command's output settings hold for this call only: a notebook or test calling
    # main() and then the library keeps its own.
    previous = verbosity()
    set_verbosity(verbosity_of(args))
    # Every --json command (search, train, retrain, log, validate, measure, predict): stdout
    # holds the result alone.
    send_lines_to_stderr(bool(getattr(args, "json", False)))
    try:
        resolve_run(args)
        check_settings(args)
        _setup_runtime(args)
        from autopmf.data.registry import one_load_per_command

        with one_load_per_command():
            return args.func(args)
    except AutopmfError as exc:
        print(f"autopmf: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from autopmf.files import is_out_of_room

        if is_out_of_room(exc):
            print(f"autopmf: error: no room to write ({exc}); free disk space (or raise the "
                  "quota or file-size limit), then rerun the same command with --resume",
                  file=sys.stderr)
        elif _is_out_of_memory(exc):
            import re

            tried = re.search(r"[Tt]ried to allocate ([\d.]+ ?\w+)", str(exc))
            need = f" (tried to allocate {tried[1]})" if tried else ""
            print(f"autopmf: error: out of memory{need}; lower the space's prompt_lengths, "
                  "max_text_len, image_size or batch_size (or --batch-size)", file=sys.stderr)
        else:
            raise
        return 2
    except KeyboardInterrupt:
        print("autopmf: interrupted", file=sys.stderr)
        return 130
    finally:
        set_verbosity(previous)
        send_lines_to_stderr(False)


if __name__ == "__main__":
    sys.exit(main())
