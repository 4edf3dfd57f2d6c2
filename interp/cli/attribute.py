"""``interp attribute``: attribution maps with captum (saliency, ig, gradcam, conductance)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..settings import ATTRIBUTION
from ._common import integer, load


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp attribute`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "attribute",
        parents=[common],
        help="attribution maps with captum (saliency, ig, gradcam, conductance)",
        description="Which input pixels drive a class or a unit: captum's Saliency, "
        "IntegratedGradients, LayerGradCam, LayerConductance/NeuronConductance. Writes "
        "<method>.png (image, map, overlay) and <method>.npy (the map).",
    )
    p.add_argument("model", help="model spec or run folder")
    p.add_argument("image", help="image file")
    p.add_argument(
        "--method", choices=["saliency", "ig", "gradcam", "conductance"], default=ATTRIBUTION.method
    )
    p.add_argument(
        "--target", default=None, help="class index or name, or LAYER:CHANNEL [predicted class]"
    )
    p.add_argument("--layer", default=None, help="gradcam/conductance layer [last block]")
    p.add_argument(
        "--n-steps",
        type=integer(1),
        default=ATTRIBUTION.n_steps,
        help=f"integration steps of ig/conductance [{ATTRIBUTION.n_steps}] (--steps is "
        "optimization steps everywhere else)",
    )
    p.add_argument("--out", type=Path, default=Path("out/attribution"), help="output folder")


def run(args: argparse.Namespace) -> int:
    from ..attribution import attribute
    from ..views.attribution_figures import save_attribution

    model = load(args)
    result = attribute(
        model, args.image, args.method, target=args.target, layer=args.layer, n_steps=args.n_steps
    )
    paths = save_attribution(result, args.out, args.method)
    print(f"{args.method}: {result.target}")
    if "output_difference" in result.info:
        i = result.info
        print(
            f"completeness: attributions sum to {i['sum']:.4f}, output change from the "
            f"baseline {i['output_difference']:.4f}"
        )
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0
