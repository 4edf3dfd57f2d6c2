"""``interp examples``: top dataset examples of every unit (one streaming pass for all layers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..settings import EXAMPLES, MIN_SIZE
from ._common import add_precision, data_help, integer, layer_list, load, model_dir


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp examples`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "examples",
        parents=[common],
        help="top dataset examples of every unit (one streaming pass for all layers)",
        description="For every unit of the layers, the top-k images by the unit's maximal "
        "activation (one per photo unless --no-dedup), the position of the maximum and the "
        "receptive-field crop around it. Writes examples.json and, per layer, grid PNGs (one "
        "row per unit). DATA: photos (random crops of the skimage photos), partsworld, "
        "digits, folder:PATH, torchvision:NAME.",
    )
    p.add_argument("model", help="model spec or run folder")
    p.add_argument("--data", default=EXAMPLES.data, help=data_help("images", EXAMPLES.data))
    p.add_argument("--layers", default=None, help="comma-separated layers [every block]")
    p.add_argument("--k", type=integer(1), default=EXAMPLES.k, help="examples per unit [9]")
    p.add_argument(
        "--n",
        "--images",
        type=integer(1),
        default=None,
        help="images [photos 1000, partsworld 2000] (--images under torchrun, whose own "
        "options --n* would otherwise swallow --n)",
    )
    p.add_argument(
        "--size", type=integer(MIN_SIZE), default=None, help="image size [model's for photos]"
    )
    p.add_argument("--bottom", action="store_true", help="also the k most negative images")
    p.add_argument("--no-dedup", action="store_true", help="allow several crops of a photo")
    p.add_argument("--units", default=None, help="units with grid PNGs, e.g. 0:32 [all]")
    p.add_argument(
        "--batch-size",
        type=integer(1),
        default=None,
        help="images per forward [32 on CPU, 128 on CUDA; halved on out-of-memory]",
    )
    add_precision(p, EXAMPLES.precision)
    p.add_argument("--out", type=Path, default=None, help="output folder [out/examples-MODEL]")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..activations import capture, resolve_layers
    from ..distributed import is_main
    from ..inventory import default_layers
    from ..pipeline.atlas import parse_channels
    from ..pipeline.examples import examples_job

    model = load(args)
    out = args.out or model_dir(args, "examples")
    units = None
    if args.units:  # checked against the widest layer before the pass
        layers = layer_list(args)
        names = resolve_layers(model, layers) if layers else default_layers(model)
        with torch.no_grad():
            acts = capture(model, model.example_input(1), names)
        widest = max(a.shape[1] for a in acts.values() if a.dim() == 4)
        units = parse_channels(args.units, widest)
    result = examples_job(
        model,
        out,
        args.data,
        layer_list(args),
        k=args.k,
        bottom=args.bottom,
        dedup=not args.no_dedup,
        n=args.n,
        size=args.size,
        seed=args.seed,
        batch_size=args.batch_size,
        precision=args.precision,
        units=units,
        title=model.name,
        progress=not args.quiet,
    )
    if not is_main():
        return 0
    doc = json.loads((out / "examples.json").read_text())
    for entry in doc["layers"]:
        print(
            f"{entry['layer']:<22} {len(entry['units']):>4} units  RF {entry['rf_size']:>3} px  "
            f"{len(entry['figures'])} grid PNG(s) in {out / entry['layer']}"
        )
    print(f"{len(result.data)} images; wrote {out}/examples.json")
    return 0
