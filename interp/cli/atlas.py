"""``interp atlas``: feature visualizations of every layer (resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import RENDER
from ._common import count_or_all, load, render_kwargs, render_options


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp atlas`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "atlas",
        parents=[common, render_options()],
        help="feature visualizations of every layer (resumable)",
        description="Render a sample of units of every block (or the chosen layers): a "
        "folder per layer with unit PNGs, grid.png and units.json, plus index.json and "
        "overview.png. Rerunning after an interruption finishes only the missing units.",
    )
    p.add_argument("model", help="model spec (see `interp models`)")
    p.add_argument(
        "--layers", default="all", help="'all' (the network's blocks) or L1,L2 (globs ok)"
    )
    p.add_argument(
        "--per-layer",
        default=str(RENDER.per_layer),
        type=count_or_all,
        help="units per layer, or 'all' [8]",
    )
    p.add_argument("--out", type=Path, default=Path("out/atlas"), help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..pipeline.atlas import atlas

    model = load(args)
    result = atlas(
        model, args.out, layers=args.layers, per_layer=args.per_layer, **render_kwargs(args)
    )
    from ..distributed import is_main

    if not is_main():
        return 0
    for entry in result.layers:
        extra = (
            f", {entry['exceeds_natural']}/{entry['units_total']} beat natural crops"
            if "exceeds_natural" in entry
            else ""
        )
        if entry.get("dead_units"):
            extra += f", {len(entry['dead_units'])} dead"
        print(f"{entry['layer']:<24} {len(entry['units'])} units{extra}  {entry['grid']}")
    run = result.this_run
    print(
        f"rendered {run.get('rendered', 0)} units, reused {run.get('reused', 0)} finished ones; "
        f"wrote {args.out}/ (index.json, overview.png, a folder per layer)"
    )
    return 0
