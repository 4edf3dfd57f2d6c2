"""``interp layers``: layer inventory: names, types, output shapes, receptive fields."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InterpError
from ._common import load


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp layers`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "layers",
        parents=[common],
        help="layer inventory: names, types, output shapes, receptive fields",
        description="Every module of MODEL with its type, output shape at the model's input "
        "size, channels, and the measured receptive field size and stride of its centre unit "
        "('+' marks a receptive field clipped by the image border).",
    )
    p.add_argument("model", help="model spec (see `interp models`)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--no-rf", action="store_true", help="skip receptive-field measurement")
    p.add_argument("--filter", default=None, help="only layers whose name matches this glob")
    p.add_argument("--out", type=Path, default=None, help="also write layers.json/.txt/.png here")


def run(args: argparse.Namespace) -> int:
    import fnmatch

    from ..inventory import layers, layers_json, layers_table

    model = load(args)
    names = None
    if args.filter:
        from ..activations import layer_names

        names = [n for n in layer_names(model.module) if fnmatch.fnmatch(n, args.filter)]
        if not names:
            raise InterpError(f"no layer matches {args.filter!r}; `interp layers MODEL` lists all")
    infos = layers(model, receptive_field=not args.no_rf, names=names, progress=not args.quiet)
    text = layers_json(model, infos)
    print(text if args.json else layers_table(infos))
    if args.out:
        from ..utils import atomic_write_text
        from ..views.figures import plot_inventory, save_figure

        atomic_write_text(args.out / "layers.json", text)
        atomic_write_text(args.out / "layers.txt", layers_table(infos) + "\n")
        save_figure(
            plot_inventory(infos, f"{model.name}: receptive field and width by layer"),
            args.out / "layers.png",
        )
        if not args.quiet:
            print(f"wrote {args.out}/layers.json, layers.txt, layers.png", file=sys.stderr)
    return 0
