"""``interp report``: the whole job on one static page: inventory, atlas, examples, hierarchy."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import HIERARCHY
from ._common import count_or_all, data_help, layer_list, load, model_dir


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp report`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "report",
        parents=[common],
        help="the whole job on one static page: inventory, atlas, examples, hierarchy",
        description="Build OUT/index.html (static, works from file://) and report.json: the "
        "hierarchy verdict and profile, one section per layer with unit cards (feature "
        "visualization, dataset examples, scores), the experiments' answers when given. Every "
        "stage is cached: a rerun reuses finished stages (--force redoes them).",
    )
    p.add_argument("model", help="model spec or run folder")
    p.add_argument(
        "--data", default=HIERARCHY.data, help="hierarchy: " + data_help("concepts", HIERARCHY.data)
    )
    p.add_argument(
        "--examples-data",
        default=None,
        help="examples: "
        + data_help("images", "photos for ImageNet-sized models, else partsworld"),
    )
    p.add_argument("--layers", default=None, help="comma-separated layers [first conv + blocks]")
    p.add_argument("--experiments", type=Path, default=None, help="an `experiment all` --out")
    p.add_argument(
        "--study", type=Path, default=None, help="an `interp study` --out (the panel section)"
    )
    p.add_argument("--quick", action="store_true", help="tiny settings (a few minutes)")
    p.add_argument(
        "--per-layer",
        default=None,
        type=count_or_all,
        help="units rendered per layer, each with a unit page, or 'all' "
        "[the preset's sample (4; --quick 2) on CPU, all on CUDA]",
    )
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--out", type=Path, default=None, help="output folder [out/report-MODEL]")


def run(args: argparse.Namespace) -> int:
    from ..pipeline.report import report

    model = load(args)
    out = args.out or model_dir(args, "report")
    layers = layer_list(args)
    page = report(
        model,
        out,
        data=args.data,
        examples_data=args.examples_data,
        layers=layers,
        quick=args.quick,
        force=args.force,
        experiments=args.experiments,
        study=args.study,
        per_layer=args.per_layer,
        progress=not args.quiet,
    )
    from ..distributed import is_main

    if is_main():
        print(f"report: {page.resolve()}")
        print(f"explorer: {(page.parent / 'layers').resolve()}/ (a page per layer)")
    return 0
