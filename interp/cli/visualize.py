"""``interp visualize``: feature visualizations of chosen units of one layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import load, render_kwargs, render_options


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp visualize`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "visualize",
        parents=[common, render_options()],
        help="feature visualizations of chosen units of one layer",
        description="Optimize one image per unit of LAYER to maximize it. Writes one PNG per "
        "unit, a labelled grid.png and results.json (per unit: the objective value reached "
        "and the unit's best value over natural reference crops of the same size).",
    )
    p.add_argument("model", help="model spec (see `interp models`)")
    p.add_argument("--layer", required=True, help="layer name (see `interp layers MODEL`)")
    p.add_argument("--channels", default="0:16", help="'0:16', '0:64:4', '3,5,9' or 'all' [0:16]")
    p.add_argument("--out", type=Path, default=Path("out/visualize"), help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..pipeline.atlas import visualize

    model = load(args)
    result = visualize(model, args.layer, args.channels, args.out, **render_kwargs(args))
    from ..distributed import is_main

    if not is_main():
        return 0
    doc = result.layers[0]  # the layer, its units and their summary
    for unit in doc["units"]:
        nat = f"  natural max {unit['natural_max']:.3f}" if "natural_max" in unit else ""
        value = f"value {unit['value']:.3f}"
        if unit.get("dead"):
            value = f"DEAD (zero gradient from {unit['restarts'] + 1} starts; the image is blank)"
        print(f"{doc['layer']}:{unit['channel']}  {value}{nat}  {unit['png']}")
    if doc.get("dead_units"):
        print(
            f"{len(doc['dead_units'])} dead unit(s): {doc['dead_units'][:16]} never respond to "
            "any start tried (results.json marks them 'dead')"
        )
    if "exceeds_natural" in doc:
        print(
            f"{doc['exceeds_natural']}/{doc['units_total']} images excite their unit more than "
            "the best natural crop"
        )
    print(f"wrote {args.out}/ (grid.png, results.json, one PNG per unit)")
    return 0
