"""The `autopmf log RUN [--top K] [--plot] [--json]` subcommand."""

from __future__ import annotations

import json

from autopmf.errors import AutopmfError


def cmd_log(args) -> int:
    from autopmf.report import print_summary, summarize, write_plots

    if args.top < 1:
        raise AutopmfError(f"--top {args.top}: give a positive number of architectures")
    summary = summarize(args.run, top_k=args.top)
    plots = [str(p) for p in write_plots(args.run, summary)] if args.plot else []
    if args.json:
        # Exactly one JSON object on stdout, so scripts can pipe it straight into a parser.
        print(json.dumps(dict(summary, plots=plots)))
        return 0
    print_summary(summary, summary["fusable_slots"])
    for path in plots:
        print(f"wrote {path}")
    return 0


def add_log_parser(subparsers) -> None:
    p = subparsers.add_parser("log", help="summarize a search run: best, top-K, Pareto front")
    p.add_argument("run", help="search run directory (the --out of `autopmf search`)")
    p.add_argument("--top", type=int, default=5, help="how many of the best to list")
    p.add_argument("--plot", action="store_true", help="write PNG plots into RUN/plots/")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    # cli.main's runtime setup reads these; `log` needs no threads and no GPU.
    p.set_defaults(func=cmd_log, threads=None, device="cpu")
