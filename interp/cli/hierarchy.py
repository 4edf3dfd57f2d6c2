"""``interp hierarchy``: the hierarchy check: edge, colour, part, object units per layer vs
random init."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from ..settings import HIERARCHY, MIN_SIZE
from ._common import (
    add_precision,
    data_help,
    integer,
    layer_list,
    load,
    model_dir,
    number,
    seed_list,
)


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp hierarchy`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "hierarchy",
        parents=[common],
        help="the hierarchy check: edge, colour, part, object units per layer vs random init",
        description="Measure every layer of MODEL with the registered edge instruments "
        "(evoked grating tuning gated by drive, Gabor fits of the effective receptive "
        "field, Network Dissection's edge concepts), Network Dissection and class "
        "selectivity, against the same architecture at random init (BatchNorm statistics "
        "re-estimated on the probe images; further control seeds pooled until every layer "
        "has enough control units), and judge 'early edges, later parts' by the depth "
        "centroids of the excess-over-control profiles. Writes hierarchy.json, profile.png, "
        "osi.png, tuning.png, detectors.png and first_conv.png to OUT; finished networks are "
        "kept in OUT/stages and reused by a rerun.",
    )
    p.add_argument("model", help="model spec or run folder (see `interp models`)")
    p.add_argument(
        "--data",
        default=HIERARCHY.data,
        help=data_help("concepts", HIERARCHY.data),
    )
    p.add_argument("--layers", default=None, help="comma-separated layers [first conv + blocks]")
    p.add_argument(
        "--n", "--images", type=integer(1), default=None, help="probe images [PartsWorld 1000; all]"
    )
    p.add_argument(
        "--size", type=integer(MIN_SIZE), default=None, help="image size [model's, at most 128]"
    )
    p.add_argument(
        "--control-seeds",
        type=seed_list,
        default=list(HIERARCHY.control_seeds),
        help="seeds of the dissected random-init controls [0,1]",
    )
    p.add_argument(
        "--min-control-units",
        type=integer(1),
        default=HIERARCHY.min_control_units,
        help="pool edge-only control seeds until every layer has this many control units [500]",
    )
    p.add_argument(
        "--reference-images",
        type=integer(1),
        default=HIERARCHY.reference_images,
        help="natural photo crops for the edge probe's drive ratio [256]",
    )
    p.add_argument(
        "--control-quantile",
        type=number(0, 1),
        default=HIERARCHY.control_quantile,
        help="quantile of the pooled control units an edge unit must exceed [0.95]",
    )
    p.add_argument(
        "--quantile",
        type=number(0, 1),
        default=HIERARCHY.quantile,
        help="unit threshold quantile [0.005]",
    )
    p.add_argument(
        "--iou",
        type=number(0, 1),
        default=HIERARCHY.iou_threshold,
        help="detector IoU threshold [0.04]",
    )
    p.add_argument(
        "--bootstrap",
        type=integer(1),
        default=HIERARCHY.bootstrap,
        help="resamples for the verdict [1000]",
    )
    p.add_argument(
        "--batch-size",
        type=integer(1),
        default=None,
        help="images per forward [32 on CPU, 128 on CUDA; halved on out-of-memory]",
    )
    add_precision(p, HIERARCHY.precision, "of the dissection")
    p.add_argument("--out", type=Path, default=None, help="output folder [out/hierarchy-MODEL]")
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="neither reuse nor keep the random-init controls in the user-level cache "
        "($INTERP_CACHE, default ~/.cache/interp; INTERP_CACHE=off does the same)",
    )


def run(args: argparse.Namespace) -> int:
    from ..pipeline.hierarchy import hierarchy

    model = load(args)
    out = args.out or model_dir(args, "hierarchy")
    settings = replace(
        HIERARCHY,
        control_seeds=tuple(args.control_seeds),
        quantile=args.quantile,
        iou_threshold=args.iou,
        min_control_units=args.min_control_units,
        control_quantile=args.control_quantile,
        reference_images=args.reference_images,
        bootstrap=args.bootstrap,
        precision=args.precision,
    )
    result = hierarchy(
        model,
        args.data,
        layer_list(args),
        settings=settings,
        n=args.n,
        size=args.size,
        batch_size=args.batch_size,
        out=out,
        progress=not args.quiet,
        user_cache=not args.no_cache,
    )
    from ..distributed import is_main

    if not is_main():
        return 0
    doc = result.to_dict()
    columns = [*result.edge_fractions, *((c, c) for c in result.categories)]
    print(f"{'layer':<22} {'units':>5}  " + " ".join(f"{h[:9]:>9}" for _, h in columns))
    for row in doc["layers"]:
        f, c = row["fractions"], row["control_fractions"]
        cells = [f"{f[k]:.2f}/{c[k]:.2f}" if k in f else "-" for k, _ in columns]
        print(f"{row['layer']:<22} {row['units']:>5}  " + " ".join(f"{x:>9}" for x in cells))
    edges = ", ".join(label for _, label in result.edge_fractions)
    print(
        f"(fractions of units, model/control: edge units by each edge instrument ({edges}), "
        "then Network Dissection's detectors by category)"
    )
    for name, why in doc["skipped_layers"].items():
        print(f"skipped {name}: {why}")
    print(f"verdict: {doc['verdict'].get('text', doc['verdict'].get('verdict'))}")
    for name, v in doc["verdict"].get("instruments", {}).items():
        print(f"  {name}: {v['verdict']} ({v['bootstrap_support']:.0%} of resamples)")
    print(f"wrote {out}/ (hierarchy.json, profile.png, osi.png, tuning.png, detectors.png)")
    return 0
