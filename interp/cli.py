"""The ``interp`` command line: one subcommand per job.

Examples::

    interp models resnet                      # specs matching "resnet"
    interp layers efficientnet_lite0 --json   # inventory with output shapes and receptive fields
    interp layers torchvision:resnet18 --weights none
    interp classify efficientnet_lite0 cat.png --top 5
    interp classify efficientnet_lite0 --photos --out out/classify   # skimage.data photos

Every subcommand takes --device auto|cpu|cuda, --quiet, --weights, --offline,
--trust-checkpoint and --seed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .errors import InterpError

__all__ = ["main", "build_parser"]


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("common options")
    group.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N [default: auto]",
    )
    group.add_argument("--quiet", "-q", action="store_true", help="no progress bars or notes")
    group.add_argument(
        "--weights",
        default="default",
        help="'default' (pretrained), 'none' (random init: the control), a torchvision "
        "weights name (IMAGENET1K_V2) or a state-dict file [default: default]",
    )
    group.add_argument(
        "--offline",
        action="store_true",
        help="never download; fail at once when weights are not cached (also INTERP_OFFLINE=1)",
    )
    group.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="allow checkpoints that unpickle arbitrary code (full pickled modules); "
        "only for files you trust",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of random init [default: 0]")
    return parent


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="interp",
        description="Measure why units of a CNN specialize: load models, list their layers, "
        "capture activations, classify images.",
        epilog="MODEL is a spec: efficientnet_lite0 (embedded default), torchvision:<name>, "
        "lucent:inceptionv1, or a checkpoint path. `interp models` lists them.",
    )
    parser.add_argument("--version", action="version", version=f"interp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "models",
        parents=[common],
        help="list model specs",
        description="List loadable model specs, optionally filtered by a glob or substring.",
    )
    p.add_argument("pattern", nargs="?", default="*", help="glob or substring (e.g. 'resnet*')")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser(
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

    p = sub.add_parser(
        "classify",
        parents=[common],
        help="top-k classes of images",
        description="Classify images (JPEG/PNG/..., grey or RGBA) and print the top-k classes.",
    )
    p.add_argument("model", help="model spec (see `interp models`)")
    p.add_argument("images", nargs="*", type=Path, help="image files")
    p.add_argument("--photos", action="store_true", help="classify the photos of skimage.data")
    p.add_argument("--top", type=int, default=5, help="classes per image [default: 5]")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", type=Path, default=None, help="write predictions.json and a PNG grid")
    return parser


def _load(args: argparse.Namespace):  # noqa: ANN202
    from .models import load_model

    return load_model(
        args.model,
        device=args.device,
        weights=args.weights,
        offline=True if args.offline else None,
        trust_checkpoint=args.trust_checkpoint,
        quiet=args.quiet,
        seed=args.seed,
    )


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models
    from .models.registry import describe_models

    names = list_models(args.pattern)
    if args.json:
        print(json.dumps(names, indent=1))
        return 0
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    print("\n".join(names))
    if not args.quiet and args.pattern == "*":
        print("\nfamilies:", file=sys.stderr)
        for name, desc in describe_models().items():
            print(f"  {name:<22} {desc}", file=sys.stderr)
    return 0


def _cmd_layers(args: argparse.Namespace) -> int:
    import fnmatch

    from .inventory import layers, layers_json, layers_table

    model = _load(args)
    names = None
    if args.filter:
        from .capture import layer_names

        names = [n for n in layer_names(model.module) if fnmatch.fnmatch(n, args.filter)]
        if not names:
            raise InterpError(f"no layer matches {args.filter!r}; `interp layers MODEL` lists all")
    infos = layers(model, receptive_field=not args.no_rf, names=names, progress=not args.quiet)
    text = layers_json(model, infos)
    print(text if args.json else layers_table(infos))
    if args.out:
        from .report.figures import plot_inventory, save_figure
        from .utils import atomic_write_text

        atomic_write_text(args.out / "layers.json", text)
        atomic_write_text(args.out / "layers.txt", layers_table(infos) + "\n")
        save_figure(
            plot_inventory(infos, f"{model.name}: receptive field and width by layer"),
            args.out / "layers.png",
        )
        if not args.quiet:
            print(f"wrote {args.out}/layers.json, layers.txt, layers.png", file=sys.stderr)
    return 0


def _cmd_classify(args: argparse.Namespace) -> int:
    from .classify import classify

    images: list = list(args.images)
    names = [str(p) for p in args.images]
    if args.photos:
        from .data.natural import PHOTO_NAMES, load_photo

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
        from .report.figures import plot_classification, save_figure
        from .utils import atomic_write_text

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


_COMMANDS = {"models": _cmd_models, "layers": _cmd_layers, "classify": _cmd_classify}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "offline", False):
        os.environ["INTERP_OFFLINE"] = "1"
    try:
        return _COMMANDS[args.command](args)
    except InterpError as exc:
        print(f"interp {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
