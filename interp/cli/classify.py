"""``interp classify``: top-k classes of images."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from ..errors import ImageError, InterpError
from ._common import integer, load, print_error


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp classify`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "classify",
        parents=[common],
        help="top-k classes of images",
        description="Classify images (JPEG/PNG/..., grey or RGBA) and print the top-k classes. "
        "A folder stands for the image files in it (other files are skipped and counted); an "
        "unreadable image is named and the others are still classified, with exit status 2 at "
        "the end.",
    )
    p.add_argument("model", help="model spec (see `interp models`)")
    p.add_argument("images", nargs="*", type=Path, help="image files or folders of images")
    p.add_argument("--photos", action="store_true", help="classify the photos of skimage.data")
    p.add_argument("--top", type=integer(1), default=5, help="classes per image [default: 5]")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", type=Path, default=None, help="write predictions.json and a PNG grid")


#: images decoded at a time, so that a large folder is never in memory at once
_CHUNK = 16


def _sources(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """``(name, image)`` for every image to classify: the files given, the image files in each
    folder given (the other files there are skipped and counted in one note) and the photos."""
    from ..data.images import folder_images

    sources: list[tuple[str, Any]] = []
    skipped: list[Path] = []
    for path in args.images:
        if path.is_dir():
            images, others = folder_images(path)
            sources += [(str(p), p) for p in images]
            skipped += others
        else:
            sources.append((str(path), path))
    if skipped and not args.quiet:
        shown = ", ".join(p.name for p in skipped[:5]) + (", ..." if len(skipped) > 5 else "")
        print(
            f"interp classify: skipped {len(skipped)} file(s) that are not images by "
            f"extension: {shown}",
            file=sys.stderr,
        )
    if args.photos:
        from ..data.natural import PHOTO_NAMES, load_photo

        sources += [(f"skimage.data.{n}", load_photo(n)) for n in PHOTO_NAMES]
    if not sources:
        raise InterpError("give image files to classify, or --photos for skimage's photos")
    return sources


def run(args: argparse.Namespace) -> int:
    from ..data.images import load_image
    from ..predictions import classify

    sources = _sources(args)
    model = load(args)
    names: list[str] = []
    images: list[Any] = []
    preds: list = []
    unreadable: list[str] = []
    for start in range(0, len(sources), _CHUNK):
        decoded = []
        for name, source in sources[start : start + _CHUNK]:
            try:  # an unreadable image is named, and the others are still classified
                decoded.append(load_image(source))
            except ImageError as exc:
                print_error("classify", str(exc))
                unreadable.append(name)
                continue
            names.append(name)
            images.append(source)
        if decoded:
            preds += classify(model, decoded, k=args.top)
    doc = {
        "model": model.name,
        "weights": model.weights_source,
        "predictions": [
            {"image": n, "top": [p.__dict__ for p in ps]}
            for n, ps in zip(names, preds, strict=True)
        ],
        **({"unreadable": unreadable} if unreadable else {}),
    }
    if args.json:
        print(json.dumps(doc, indent=1))
    else:
        for name, ps in zip(names, preds, strict=True):
            print(name)
            for rank, p in enumerate(ps, 1):
                print(f"  {rank}. {p.name:<32} {p.probability:7.2%}  (class {p.index})")
    if args.out and preds:
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
    if not unreadable:
        return 0
    if len(sources) > 1:  # one image's own error already says it all
        print_error(
            "classify",
            f"{len(unreadable)} of {len(sources)} images could not be read (named above); "
            + (f"the other {len(preds)} were classified" if preds else "none could be classified"),
        )
    return 2
