"""``interp experiment``: why units specialize: run one experiment or all of them."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments.registry import EXPERIMENTS  # names and what --seeds means
from ._common import integer


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp experiment`` and its flags to ``subparsers``."""
    names = [*EXPERIMENTS, "all"]
    p = subparsers.add_parser(
        "experiment",
        parents=[common],
        help="why units specialize: " + ", ".join(names),
        description="Run one experiment (JSON + PNGs in OUT) or all of them (OUT/<name>/, "
        "networks shared in OUT/runs, finished experiments reused; OUT/summary.md answers "
        "the question in sentences with their numbers and figures).",
    )
    p.add_argument("name", choices=names)
    p.add_argument(
        "--seeds",
        type=integer(1),
        default=None,
        help="; ".join(f"{k}: {e.seeds[1]}" for k, e in EXPERIMENTS.items() if e.seeds),
    )
    p.add_argument("--runs", type=Path, default=None, help="trained networks [OUT/runs]")
    p.add_argument("--force", action="store_true", help="all: rerun finished experiments")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_const",
        const="quick",
        dest="preset",
        help="tiny settings, a smoke test of the whole run (seconds to a minute; OUT defaults "
        "to out/experiments-quick)",
    )
    size.add_argument(
        "--light",
        action="store_const",
        const="light",
        dest="preset",
        help="what a demo can afford: fewer seeds and cells where an experiment has a light "
        "preset (transfer), the defaults elsewhere",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder [out/experiments]")


def run(args: argparse.Namespace) -> int:
    from ..pipeline.suite import experiment_all, run_experiment

    progress = not args.quiet
    if args.name == "all":
        out = args.out or _default_out(args.preset)
        summary = experiment_all(out, force=args.force, progress=progress, preset=args.preset)
        for block in summary.questions:
            print(f"\n{block['question']}")
            for a in block["answers"]:
                print(f"  - [{a['experiment']}] {a['finding']}")
        print(f"\nwrote {out}/summary.md, summary.json and a folder per experiment")
        return 0
    out = args.out or _default_out(args.preset) / args.name
    result = run_experiment(
        args.name, out, seeds=args.seeds, runs=args.runs, progress=progress, preset=args.preset
    )
    for finding in result.findings:
        print(f"- {finding}")
    print(f"wrote {out}")
    return 0


def _default_out(preset: str | None) -> Path:
    return Path("out/experiments" + (f"-{preset}" if preset else ""))
