"""``interp data``: look at a dataset (a PartsWorld preview with its masks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.specs import DATASETS
from ..settings import MIN_SIZE
from ._common import integer


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp data`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "data",
        help="datasets: list every data spec; preview PartsWorld with its masks",
        description="`interp data list` lists every data spec (the data registry) and which "
        "jobs take it. `interp data preview partsworld --out DIR` writes a PNG of scenes with "
        "their part, object and edge masks overlaid.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    data_sub.add_parser("list", parents=[common], help="every data spec and its uses")
    q = data_sub.add_parser("preview", parents=[common], help="a preview grid PNG")
    q.add_argument("spec", choices=["partsworld"], help="dataset")
    q.add_argument("--n", type=integer(1), default=6, help="scenes to show [6]")
    q.add_argument("--size", type=integer(MIN_SIZE), default=64, help="image size [64]")
    q.add_argument("--out", type=Path, default=Path("out/data"), help="output folder")


def run(args: argparse.Namespace) -> int:
    if args.data_command == "list":
        uses = {"splits": "train", "images": "examples", "concepts": "dissection/hierarchy"}
        for entry in DATASETS.values():
            serves = ", ".join(v for k, v in uses.items() if getattr(entry, k))
            print(f"{entry.usage:<58} {serves}")
            print(f"    {entry.description}")
        return 0
    from ..data.partsworld import PartsWorld
    from ..views.figures import plot_partsworld_preview, save_figure

    world = PartsWorld(max(args.n, 1), args.size, seed=args.seed)
    samples = [world.sample(i) for i in range(args.n)]
    path = save_figure(
        plot_partsworld_preview(samples, f"PartsWorld (seed {args.seed}): scenes and masks"),
        args.out / "partsworld_preview.png",
    )
    print(f"wrote {path}")
    return 0
