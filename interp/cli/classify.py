"""``interp classify``: top-k classes of images."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..errors import InterpError
from ._common import _int, _load


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp classify`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "classify",
        parents=[common],
        help="top-k classes of images",
        description="Classify images (JPEG/PNG/..., grey or RGBA) and print the top-k classes.",
    )
    p.add_argument("model", help="model spec (see `interp models`)")
    p.add_argument("images", nargs="*", type=Path, help="image files or folders of images")
    p.add_argument("--photos", action="store_true", help="classify the photos of skimage.data")
    p.add_argument("--top", type=_int(1), default=5, help="classes per image [default: 5]")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", type=Path, default=None, help="write predictions.json and a PNG grid")


def run(args: argparse.Namespace) -> int:
    from ..data.images import image_files
    from ..predictions import classify

    images: list = []
    for path in args.images:  # a folder stands for the images in it
        images += image_files(path) if path.is_dir() else [path]
    names = [str(p) for p in images]
    if args.photos:
        from ..data.natural import PHOTO_NAMES, load_photo

        images += [load_photo(n) for n in PHOTO_NAMES]
        names += [f"skimage.data.{n}" for n in PHOTO_NAMES]
    if not images:
        raise InterpError("give image files to classify, or --photos for skimage's photos")
    model = _load(args)
    preds = classify(model, images, k=args.top)
    doc = {
        "model": model.name,
        "weights": model.weights_source,
        "predictions": [
            {"image": n, "top": [p.__dict__ for p in ps]}
            for n, ps in zip(names, preds, strict=True)
        ],
    }
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        for name, ps in zip(names, preds, strict=True):
            print(name)
            for rank, p in enumerate(ps, 1):
                print(f"  {rank}. {p.name:<32} {p.probability:7.2%}  (class {p.index})")
    if args.out:
        from ..utils import atomic_write_text
        from ..views.figures import plot_classification, save_figure

        atomic_write_text(args.out / "predictions.json", json.dumps(doc, indent=1))
        fig = plot_classification(
            images,
            preds,
            model.preprocessing,
            f"{model.name}: top-3 classes of the centre crop it sees",
            names=[os.path.basename(n).removeprefix("skimage.data.") for n in names],
        )
        save_figure(fig, args.out / "predictions.png")
        if not args.quiet:
            print(f"wrote {args.out}/predictions.json, predictions.png", file=sys.stderr)
    return 0
