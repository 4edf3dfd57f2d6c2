"""``interp unit``: a unit card: feature visualization, dataset examples, attributions, scores."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import ATTRIBUTION, RENDER
from ._common import data_help, integer, load


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp unit`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "unit",
        parents=[common],
        help="a unit card: feature visualization, dataset examples, attributions, scores",
        description="One PNG card for LAYER:CHANNEL: its feature visualization, its top "
        "dataset examples with where it fires and which pixels drive it (captum), its edge "
        "probe scores and, with --hierarchy, its dissection label and selectivity.",
    )
    p.add_argument("model", help="model spec or run folder")
    p.add_argument("unit", help="LAYER:CHANNEL, e.g. _blocks.5:12")
    p.add_argument("--data", default="photos", help=data_help("images", "photos"))
    p.add_argument("--n", type=integer(1), default=300, help="images searched for examples [300]")
    p.add_argument("--k", type=integer(1), default=6, help="examples on the card [6]")
    p.add_argument(
        "--method", choices=["saliency", "ig", "gradcam", "conductance"], default=ATTRIBUTION.method
    )
    p.add_argument("--hierarchy", type=Path, default=None, help="an `interp hierarchy` --out")
    p.add_argument(
        "--steps", type=integer(1), default=RENDER.steps, help="feature visualization steps [256]"
    )
    p.add_argument("--out", type=Path, default=Path("out/units"), help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..pipeline.card import unit_card

    model = load(args)
    card = unit_card(
        model,
        args.unit,
        args.out,
        data=args.data,
        n=args.n,
        k=args.k,
        method=args.method,
        hierarchy=args.hierarchy,
        steps=args.steps,
        seed=args.seed,
        progress=not args.quiet,
    )
    s = card.scores
    print(f"{card.layer}:{card.channel}  OSI {s['osi']:.2f}", end="")
    h = s.get("hierarchy") or {}
    if "label" in h:
        print(f"  label {h['label'] or 'none'} (IoU {h['iou']:.3f})", end="")
    if "edge_unit" in h:  # Hierarchy.unit_scores: the explorer's and the index's reading
        yes = {None: "not measured", True: "yes", False: "no"}[h["edge_unit"]]
        print(f"  edge unit {yes}", end="")
    print(f"\nwrote {Path(args.out) / card.files['png']}")
    return 0
