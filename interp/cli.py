"""The ``interp`` command line: one subcommand per job.

Examples::

    interp models resnet                      # specs matching "resnet"
    interp layers efficientnet_lite0 --json   # inventory with output shapes and receptive fields
    interp layers torchvision:resnet18 --weights none
    interp classify efficientnet_lite0 cat.png --top 5
    interp classify efficientnet_lite0 --photos --out out/classify   # skimage.data photos
    interp visualize efficientnet_lite0 --layer _blocks.5 --channels 0:16 --out out/vis
    interp atlas efficientnet_lite0 --per-layer 8 --steps 128 --size 96 --out out/atlas
    torchrun --standalone --nproc_per_node=8 -m interp atlas efficientnet_lite0 --per-layer all
                                              # atlas, examples, hierarchy: one GPU per rank

Every subcommand takes --device auto|cpu|cuda, --quiet, --weights, --offline,
--trust-checkpoint and --seed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .errors import InterpError
from .settings import ATTRIBUTION, EXAMPLES, HIERARCHY, RENDER

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _int(low: int | None = 1, high: int | None = None):  # noqa: ANN202
    """An argparse type: an integer in ``[low, high]`` (the range check of the API)."""
    from .checks import check_int
    from .errors import RangeError

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        try:
            return check_int("value", value, low=low, high=high)  # type: ignore[return-value]
        except RangeError as exc:
            raise argparse.ArgumentTypeError(
                str(exc).replace("value must be", "expected")
            ) from None

    parse.__name__ = "integer"
    return parse


def _float(
    low: float | None = None,
    high: float | None = None,
    *,
    open_low: bool = True,
    open_high: bool = True,
):  # noqa: ANN202
    """An argparse type: a finite number in the range (open ends by default)."""
    from .checks import check_float
    from .errors import RangeError

    def parse(text: str) -> float:
        try:
            return check_float(  # type: ignore[return-value]
                "value", text, low=low, high=high, open_low=open_low, open_high=open_high
            )
        except RangeError as exc:
            raise argparse.ArgumentTypeError(
                str(exc).replace("value must be", "expected")
            ) from None

    parse.__name__ = "number"
    return parse


def _seed_list(text: str) -> list[int]:
    """``0,1,2`` as a list of seeds (each >= 0)."""
    parse = _int(0, _SEED_MAX)
    seeds = [parse(part.strip()) for part in text.split(",") if part.strip()]
    if not seeds:
        raise argparse.ArgumentTypeError(f"expected comma-separated seeds, got {text!r}")
    return seeds


def _step_list(text: str) -> list[int]:
    """``0,100,1000`` as a list of training steps (each >= 0); empty is none."""
    parse = _int(0)
    return [parse(part.strip()) for part in text.split(",") if part.strip()]


_SEED_MAX = 2**32 - 1
_MIN_SIZE = 8  # the smallest image side any job accepts


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
    group.add_argument(
        "--seed", type=_int(0, _SEED_MAX), default=0, help="seed of random init [default: 0]"
    )
    group.add_argument(
        "--verbose",
        action="store_true",
        help="on an error, also print the underlying library's message and the traceback",
    )
    return parent


def _count_or_all(text: str) -> str:
    if text.strip().lower() == "all" or (text.isdigit() and int(text) > 0):
        return text.strip().lower()
    raise argparse.ArgumentTypeError(f"expected a positive number or 'all', got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    common = _common()
    parser = _Parser(
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
    p.add_argument("images", nargs="*", type=Path, help="image files or folders of images")
    p.add_argument("--photos", action="store_true", help="classify the photos of skimage.data")
    p.add_argument("--top", type=_int(1), default=5, help="classes per image [default: 5]")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", type=Path, default=None, help="write predictions.json and a PNG grid")

    render_opts = argparse.ArgumentParser(add_help=False)
    group = render_opts.add_argument_group("rendering")
    group.add_argument(
        "--steps", type=_int(1), default=RENDER.steps, help="optimization steps [256]"
    )
    group.add_argument(
        "--size", type=_int(_MIN_SIZE), default=RENDER.size, help="canvas size in pixels [128]"
    )
    group.add_argument(
        "--objective",
        choices=["channel", "neuron"],
        default=RENDER.objective,
        help="channel: mean over positions; neuron: the centre position [channel]",
    )
    group.add_argument(
        "--param",
        choices=["fft", "pixel", "maco"],
        default=RENDER.param,
        help="fft: lucid's decorrelated Fourier image; pixel; maco: phase-only Fourier with "
        "a natural magnitude spectrum [fft]",
    )
    group.add_argument(
        "--batch",
        type=_int(1),
        default=None,
        help="units optimized together [16 on CPU, 64 on CUDA; halved on out-of-memory]",
    )
    group.add_argument("--lr", type=_float(0), default=RENDER.lr, help="Adam learning rate [0.05]")
    group.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast for the steps; auto: where bf16 is native (CUDA, AVX512-BF16 "
        "CPUs) [auto]",
    )
    group.add_argument("--no-transforms", action="store_true", help="no jitter/scale/rotate")
    group.add_argument(
        "--upsample",
        type=_int(_MIN_SIZE),
        default=None,
        help="resize the canvas to N px before the model",
    )
    group.add_argument(
        "--reference",
        default=RENDER.reference,
        help="natural reference set: 'photos' (random crops of skimage.data photos), a "
        "folder of images, or 'none' [photos]",
    )
    group.add_argument(
        "--n-reference", type=_int(1), default=RENDER.n_reference, help="reference crops [256]"
    )

    p = sub.add_parser(
        "visualize",
        parents=[common, render_opts],
        help="feature visualizations of chosen units of one layer",
        description="Optimize one image per unit of LAYER to maximize it. Writes one PNG per "
        "unit, a labelled grid.png and results.json (per unit: the objective value reached "
        "and the unit's best value over natural reference crops of the same size).",
    )
    p.add_argument("model", help="model spec (see `interp models`)")
    p.add_argument("--layer", required=True, help="layer name (see `interp layers MODEL`)")
    p.add_argument("--channels", default="0:16", help="'0:16', '0:64:4', '3,5,9' or 'all' [0:16]")
    p.add_argument("--out", type=Path, default=Path("out/visualize"), help="output folder")

    p = sub.add_parser(
        "atlas",
        parents=[common, render_opts],
        help="feature visualizations of every layer (resumable)",
        description="Render a sample of units of every block (or the chosen layers): a "
        "folder per layer with unit PNGs, grid.png and units.json, plus index.json and "
        "overview.png. Rerunning after an interruption finishes only the missing units.",
    )
    p.add_argument("model", help="model spec (see `interp models`)")
    p.add_argument(
        "--layers", default="all", help="'all' (the network's blocks) or L1,L2 (globs ok)"
    )
    p.add_argument(
        "--per-layer",
        default=str(RENDER.per_layer),
        type=_count_or_all,
        help="units per layer, or 'all' [8]",
    )
    p.add_argument("--out", type=Path, default=Path("out/atlas"), help="output folder")

    p = sub.add_parser(
        "train",
        parents=[common],
        help="train a fresh CNN (resumable run folder)",
        description="Train ARCH on DATA into the run folder OUT (config.json, checkpoint.pt "
        "after every epoch, metrics.json). `interp layers OUT`, `interp classify OUT IMAGE` "
        "and every other command take the run folder as MODEL.",
    )
    p.add_argument("--arch", default="simplecnn", help="simplecnn or torchvision:<name>")
    p.add_argument(
        "--data",
        default="partsworld",
        help="partsworld, digits, folder:PATH, torchvision:MNIST|FashionMNIST|"
        "CIFAR10[:ROOT] [partsworld]",
    )
    p.add_argument("--epochs", type=_int(1), default=4, help="[4]")
    p.add_argument("--batch-size", type=_int(1), default=128, help="[128]")
    p.add_argument("--lr", type=_float(0), default=3e-3, help="peak learning rate [3e-3]")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--schedule", choices=["cosine", "step", "none"], default="cosine")
    p.add_argument(
        "--size", type=_int(_MIN_SIZE), default=None, help="image size (dataset default)"
    )
    p.add_argument("--n", type=_int(1), default=None, help="PartsWorld training images [20000]")
    p.add_argument("--width", type=_float(0), default=1.0, help="simplecnn width multiplier")
    p.add_argument("--no-batchnorm", action="store_true", help="simplecnn without BatchNorm")
    p.add_argument("--no-augment", action="store_true", help="no random shifts/flips")
    p.add_argument(
        "--init",
        default="default",
        help="default, constant (every unit of a layer identical) or "
        "from:RUN:N[:frozen] (first N convs from another run)",
    )
    p.add_argument(
        "--snapshots", type=_step_list, default=[], help="steps to snapshot, e.g. 0,100,1000"
    )
    p.add_argument("--download", action="store_true", help="allow dataset downloads")
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default="auto",
        help="bf16 autocast; auto: where bf16 is native [auto]",
    )
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--out", type=Path, required=True, help="run folder")

    p = sub.add_parser(
        "hierarchy",
        parents=[common],
        help="the hierarchy check: edge, colour, part, object units per layer vs random init",
        description="Measure every layer of MODEL with three edge instruments (evoked grating "
        "tuning gated by drive, Gabor fits of the effective receptive field, Network "
        "Dissection's edge concepts), Network Dissection and class selectivity, against the "
        "same architecture at random init (BatchNorm statistics re-estimated on the probe "
        "images; further control seeds pooled until every layer has enough control units), "
        "and judge 'early edges, later parts' by the depth centroids of the excess-over-"
        "control profiles. Writes hierarchy.json, profile.png, osi.png, tuning.png, "
        "detectors.png and first_conv.png to OUT; finished networks are kept in OUT/stages "
        "and reused by a rerun.",
    )
    p.add_argument("model", help="model spec or run folder (see `interp models`)")
    p.add_argument(
        "--data",
        default=HIERARCHY.data,
        help="partsworld, or broden:PATH (a folder in the Broden layout: index.csv, "
        "label.csv, images/) [partsworld]",
    )
    p.add_argument("--layers", default=None, help="comma-separated layers [first conv + blocks]")
    p.add_argument(
        "--n", "--images", type=_int(1), default=None, help="probe images [PartsWorld 1000; all]"
    )
    p.add_argument(
        "--size", type=_int(_MIN_SIZE), default=None, help="image size [model's, at most 128]"
    )
    p.add_argument(
        "--control-seeds",
        type=_seed_list,
        default=list(HIERARCHY.control_seeds),
        help="seeds of the dissected random-init controls [0,1]",
    )
    p.add_argument(
        "--min-control-units",
        type=_int(1),
        default=HIERARCHY.min_control_units,
        help="pool edge-only control seeds until every layer has this many control units [500]",
    )
    p.add_argument(
        "--reference-images",
        type=_int(1),
        default=HIERARCHY.reference_images,
        help="natural photo crops for the edge probe's drive ratio [256]",
    )
    p.add_argument(
        "--control-quantile",
        type=_float(0, 1),
        default=HIERARCHY.control_quantile,
        help="quantile of the pooled control units an edge unit must exceed [0.95]",
    )
    p.add_argument(
        "--quantile",
        type=_float(0, 1),
        default=HIERARCHY.quantile,
        help="unit threshold quantile [0.005]",
    )
    p.add_argument(
        "--iou",
        type=_float(0, 1),
        default=HIERARCHY.iou_threshold,
        help="detector IoU threshold [0.04]",
    )
    p.add_argument(
        "--bootstrap",
        type=_int(1),
        default=HIERARCHY.bootstrap,
        help="resamples for the verdict [1000]",
    )
    p.add_argument(
        "--batch-size",
        type=_int(1),
        default=None,
        help="images per forward [32 on CPU, 128 on CUDA; halved on out-of-memory]",
    )
    p.add_argument(
        "--precision",
        choices=["auto", "bf16", "fp32"],
        default=HIERARCHY.precision,
        help="[auto: bf16 on CUDA]",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder [out/hierarchy-MODEL]")

    p = sub.add_parser(
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
    p.add_argument("--data", default=EXAMPLES.data, help="[photos]")
    p.add_argument("--layers", default=None, help="comma-separated layers [every block]")
    p.add_argument("--k", type=_int(1), default=EXAMPLES.k, help="examples per unit [9]")
    p.add_argument(
        "--n",
        "--images",
        type=_int(1),
        default=None,
        help="images [photos 1000, partsworld 2000] (--images under torchrun, whose own "
        "options --n* would otherwise swallow --n)",
    )
    p.add_argument(
        "--size", type=_int(_MIN_SIZE), default=None, help="image size [model's for photos]"
    )
    p.add_argument("--bottom", action="store_true", help="also the k most negative images")
    p.add_argument("--no-dedup", action="store_true", help="allow several crops of a photo")
    p.add_argument("--units", default=None, help="units with grid PNGs, e.g. 0:32 [all]")
    p.add_argument(
        "--batch-size",
        type=_int(1),
        default=None,
        help="images per forward [32 on CPU, 128 on CUDA; halved on out-of-memory]",
    )
    p.add_argument("--out", type=Path, default=None, help="output folder [out/examples-MODEL]")

    p = sub.add_parser(
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
        type=_int(1),
        default=ATTRIBUTION.n_steps,
        help=f"integration steps of ig/conductance [{ATTRIBUTION.n_steps}] (--steps is "
        "optimization steps everywhere else)",
    )
    p.add_argument("--out", type=Path, default=Path("out/attribution"), help="output folder")

    p = sub.add_parser(
        "unit",
        parents=[common],
        help="a unit card: feature visualization, dataset examples, attributions, scores",
        description="One PNG card for LAYER:CHANNEL: its feature visualization, its top "
        "dataset examples with where it fires and which pixels drive it (captum), its edge "
        "probe scores and, with --hierarchy, its dissection label and selectivity.",
    )
    p.add_argument("model", help="model spec or run folder")
    p.add_argument("unit", help="LAYER:CHANNEL, e.g. _blocks.5:12")
    p.add_argument("--data", default="photos", help="[photos]")
    p.add_argument("--n", type=_int(1), default=300, help="images searched for examples [300]")
    p.add_argument("--k", type=_int(1), default=6, help="examples on the card [6]")
    p.add_argument(
        "--method", choices=["saliency", "ig", "gradcam", "conductance"], default=ATTRIBUTION.method
    )
    p.add_argument("--hierarchy", type=Path, default=None, help="an `interp hierarchy` --out")
    p.add_argument(
        "--steps", type=_int(1), default=RENDER.steps, help="feature visualization steps [256]"
    )
    p.add_argument("--out", type=Path, default=Path("out/units"), help="output folder")

    from .experiments.suite import EXPERIMENTS  # the registry: names and what --seeds means

    names = [*EXPERIMENTS, "all"]
    p = sub.add_parser(
        "experiment",
        parents=[common],
        help="why units specialize: " + ", ".join(names),
        description="Run one experiment (JSON + PNGs in OUT) or all of them (OUT/<name>/, "
        "networks shared in OUT/runs, finished experiments reused; OUT/summary.md answers "
        "the question in sentences with their numbers and figures).",
    )
    p.add_argument("name", choices=names)
    p.add_argument(
        "--seeds",
        type=_int(1),
        default=None,
        help="; ".join(f"{k}: {v[2]}" for k, v in EXPERIMENTS.items() if v[2] != "(unused)"),
    )
    p.add_argument("--runs", type=Path, default=None, help="trained networks [OUT/runs]")
    p.add_argument("--force", action="store_true", help="all: rerun finished experiments")
    p.add_argument("--out", type=Path, default=None, help="output folder [out/experiments]")

    p = sub.add_parser(
        "report",
        parents=[common],
        help="the whole job on one static page: inventory, atlas, examples, hierarchy",
        description="Build OUT/index.html (static, works from file://) and report.json: the "
        "hierarchy verdict and profile, one section per layer with unit cards (feature "
        "visualization, dataset examples, scores), the experiments' answers when given. Every "
        "stage is cached: a rerun reuses finished stages (--force redoes them).",
    )
    p.add_argument("model", help="model spec or run folder")
    p.add_argument("--data", default=HIERARCHY.data, help="hierarchy data [partsworld]")
    p.add_argument("--examples-data", default=None, help="[photos for ImageNet-sized models]")
    p.add_argument("--layers", default=None, help="comma-separated layers [first conv + blocks]")
    p.add_argument("--experiments", type=Path, default=None, help="an `experiment all` --out")
    p.add_argument("--quick", action="store_true", help="tiny settings (a few minutes)")
    p.add_argument("--force", action="store_true", help="redo every stage")
    p.add_argument("--out", type=Path, default=None, help="output folder [out/report-MODEL]")

    p = sub.add_parser(
        "data",
        help="datasets: preview PartsWorld with its masks",
        description="Look at a dataset. `interp data preview partsworld --out DIR` writes a "
        "PNG of scenes with their part, object and edge masks overlaid.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    q = data_sub.add_parser("preview", parents=[common], help="a preview grid PNG")
    q.add_argument("spec", choices=["partsworld"], help="dataset")
    q.add_argument("--n", type=_int(1), default=6, help="scenes to show [6]")
    q.add_argument("--size", type=_int(_MIN_SIZE), default=64, help="image size [64]")
    q.add_argument("--out", type=Path, default=Path("out/data"), help="output folder")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    config = TrainConfig(
        arch=args.arch,
        data=args.data,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        schedule=args.schedule,
        seed=args.seed,
        size=args.size,
        n=args.n,
        width=args.width,
        batchnorm=not args.no_batchnorm,
        augment=not args.no_augment,
        init=args.init,
        snapshots=args.snapshots,
        download=args.download,
        precision=args.precision,
    )
    try:
        metrics = train(
            config, args.out, resume=args.resume, device=args.device, progress=not args.quiet
        )
    except FileExistsError as exc:
        raise InterpError(str(exc)) from exc
    print(f"test accuracy {metrics['test_acc']:.4f}; run in {args.out}")
    return 0


def _cmd_hierarchy(args: argparse.Namespace) -> int:
    from .probes.hierarchy import hierarchy

    model = _load(args)
    out = args.out or _model_dir(args, "hierarchy")
    seeds = args.control_seeds
    layers = _layer_list(args)
    result = hierarchy(
        model,
        args.data,
        layers,
        control_seeds=seeds,
        n=args.n,
        size=args.size,
        quantile=args.quantile,
        iou_threshold=args.iou,
        min_control_units=args.min_control_units,
        control_quantile=args.control_quantile,
        reference_images=args.reference_images,
        bootstrap=args.bootstrap,
        batch_size=args.batch_size,
        precision=args.precision,
        out=out,
        progress=not args.quiet,
    )
    from .distributed import is_main

    if not is_main():
        return 0
    doc = result.to_json()
    keys = ("edge_gratings", "edge_erf", "colour", "edge", "part", "object")
    heads = ("gratings", "ERF fit", "colour", "edge", "part", "object")
    print(f"{'layer':<22} {'units':>5}  " + " ".join(f"{h:>9}" for h in heads))
    for row in doc["layers"]:
        f, c = row["fractions"], row["control_fractions"]
        cells = [f"{f[k]:.2f}/{c[k]:.2f}" if k in f else "-" for k in keys]
        print(f"{row['layer']:<22} {row['units']:>5}  " + " ".join(f"{x:>9}" for x in cells))
    print(
        "(fractions of units, model/control: edge units by gratings and by the ERF's Gabor "
        "fit, then Network Dissection's detectors by category)"
    )
    for name, why in doc["skipped_layers"].items():
        print(f"skipped {name}: {why}")
    print(f"verdict: {doc['verdict'].get('text', doc['verdict'].get('verdict'))}")
    for name, v in doc["verdict"].get("instruments", {}).items():
        print(f"  {name}: {v['verdict']} ({v['bootstrap_support']:.0%} of resamples)")
    print(f"wrote {out}/ (hierarchy.json, profile.png, osi.png, tuning.png, detectors.png)")
    return 0


def _layer_list(args: argparse.Namespace) -> list[str] | None:
    """``--layers A,B`` as a list (``None`` when not given: the command's default layers)."""
    return [x.strip() for x in args.layers.split(",")] if args.layers else None


def _model_dir(args: argparse.Namespace, what: str) -> Path:
    return Path("out") / f"{what}-{Path(str(args.model)).name.replace(':', '_')}"


def _cmd_examples(args: argparse.Namespace) -> int:
    from .examples import examples, examples_data, save_examples
    from .featvis.jobs import parse_channels

    model = _load(args)
    out = args.out or _model_dir(args, "examples")
    size = args.size or (model.input_size[0] if args.data == "photos" else None)
    dataset = examples_data(args.data, size=size, n=args.n, seed=args.seed)
    layers = _layer_list(args)
    results = examples(
        model,
        dataset,
        layers,
        k=args.k,
        bottom=args.bottom,
        dedup=not args.no_dedup,
        batch_size=args.batch_size,
        checkpoint=out,  # an interrupted pass resumes from here (removed when complete)
        progress=not args.quiet,
    )
    units = None
    if args.units:
        units = parse_channels(args.units, max(r.units for r in results.values()))
    from .distributed import is_main

    if not is_main():
        return 0
    doc = save_examples(results, dataset, out, units=units, title=model.name)
    for entry in doc["layers"]:
        print(
            f"{entry['layer']:<22} {len(entry['units']):>4} units  RF {entry['rf_size']:>3} px  "
            f"{len(entry['figures'])} grid PNG(s) in {out / entry['layer']}"
        )
    print(f"{len(dataset)} images; wrote {out}/examples.json")
    return 0


def _cmd_attribute(args: argparse.Namespace) -> int:
    from .attribution import attribute, save_attribution

    model = _load(args)
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


def _cmd_unit(args: argparse.Namespace) -> int:
    from .card import unit_card

    model = _load(args)
    doc = unit_card(
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
    s = doc["scores"]
    print(f"{doc['layer']}:{doc['channel']}  OSI {s['osi']:.2f}", end="")
    h = s.get("hierarchy") or {}
    if "label" in h:
        print(f"  label {h['label'] or 'none'} (IoU {h['iou']:.3f})", end="")
    print(f"\nwrote {Path(args.out) / doc['png']}")
    return 0


def _cmd_experiment(args: argparse.Namespace) -> int:
    from .experiments.suite import experiment_all, run_experiment

    progress = not args.quiet
    if args.name == "all":
        out = args.out or Path("out/experiments")
        summary = experiment_all(out, force=args.force, progress=progress)
        for block in summary["questions"]:
            print(f"\n{block['question']}")
            for a in block["answers"]:
                print(f"  - [{a['experiment']}] {a['finding']}")
        print(f"\nwrote {out}/summary.md, summary.json and a folder per experiment")
        return 0
    out = args.out or Path("out/experiments") / args.name
    summary = run_experiment(args.name, out, seeds=args.seeds, runs=args.runs, progress=progress)
    for finding in summary.get("findings", []):
        print(f"- {finding}")
    print(f"wrote {out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report.page import report

    model = _load(args)
    out = args.out or _model_dir(args, "report")
    layers = _layer_list(args)
    page = report(
        model,
        out,
        data=args.data,
        examples_data=args.examples_data,
        layers=layers,
        quick=args.quick,
        force=args.force,
        experiments=args.experiments,
        progress=not args.quiet,
    )
    from .distributed import is_main

    if is_main():
        print(f"report: {page.resolve()}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data.partsworld import PartsWorld
    from .report.figures import plot_partsworld_preview, save_figure

    world = PartsWorld(max(args.n, 1), args.size, seed=args.seed)
    samples = [world.sample(i) for i in range(args.n)]
    path = save_figure(
        plot_partsworld_preview(samples, f"PartsWorld (seed {args.seed}): scenes and masks"),
        args.out / "partsworld_preview.png",
    )
    print(f"wrote {path}")
    return 0


def _render_kwargs(args: argparse.Namespace) -> dict:
    return {
        "steps": args.steps,
        "size": args.size,
        "objective": args.objective,
        "param": args.param,
        "batch": args.batch,
        "lr": args.lr,
        "amp": {"auto": None, "bf16": True, "fp32": False}[args.precision],
        "seed": args.seed,
        "transforms": not args.no_transforms,
        "upsample": args.upsample,
        "reference": None if args.reference == "none" else args.reference,
        "n_reference": args.n_reference,
        "progress": not args.quiet,
    }


def _cmd_visualize(args: argparse.Namespace) -> int:
    from .featvis.jobs import visualize

    model = _load(args)
    doc = visualize(model, args.layer, args.channels, args.out, **_render_kwargs(args))
    from .distributed import is_main

    if not is_main():
        return 0
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


def _cmd_atlas(args: argparse.Namespace) -> int:
    from .featvis.jobs import atlas

    model = _load(args)
    doc = atlas(
        model, args.out, layers=args.layers, per_layer=args.per_layer, **_render_kwargs(args)
    )
    from .distributed import is_main

    if not is_main():
        return 0
    for entry in doc["layers"]:
        extra = (
            f", {entry['exceeds_natural']}/{entry['units_total']} beat natural crops"
            if "exceeds_natural" in entry
            else ""
        )
        if entry.get("dead_units"):
            extra += f", {len(entry['dead_units'])} dead"
        print(f"{entry['layer']:<24} {len(entry['units'])} units{extra}  {entry['grid']}")
    run = doc["this_run"]
    print(
        f"rendered {run.get('rendered', 0)} units, reused {run.get('reused', 0)} finished ones; "
        f"wrote {args.out}/ (index.json, overview.png, a folder per layer)"
    )
    return 0


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
    from .data.images import image_files

    images: list = []
    for path in args.images:  # a folder stands for the images in it
        images += image_files(path) if path.is_dir() else [path]
    names = [str(p) for p in images]
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


_COMMANDS = {
    "models": _cmd_models,
    "layers": _cmd_layers,
    "classify": _cmd_classify,
    "visualize": _cmd_visualize,
    "atlas": _cmd_atlas,
    "data": _cmd_data,
    "train": _cmd_train,
    "hierarchy": _cmd_hierarchy,
    "examples": _cmd_examples,
    "attribute": _cmd_attribute,
    "unit": _cmd_unit,
    "experiment": _cmd_experiment,
    "report": _cmd_report,
}


#: commands sharded over torchrun ranks (units for atlas/visualize, the data for examples and
#: hierarchy; rank 0 writes and prints)
_SHARDED = ("atlas", "visualize", "examples", "hierarchy", "report")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``interp`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "offline", False):
        os.environ["INTERP_OFFLINE"] = "1"
    if args.command in _SHARDED and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from .distributed import setup, teardown

        setup(getattr(args, "device", "auto"))  # under torchrun: shard the data by rank
        status = None
        try:
            status = _run(args)
        finally:
            teardown(ok=status == 0)
        return status
    return _run(args)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def _one_line(text: str) -> str:
    """``text`` as one line without terminal escape codes."""
    return " ".join(part.strip() for part in _ANSI.sub("", text).splitlines() if part.strip())


def _os_error(exc: OSError) -> str:
    """A one-line message for a file-system error that reached the top: a write refused
    (disk full, read-only, no permission) in the words of :func:`~interp.utils.output_error`,
    any other error with what to check."""
    import errno

    from .utils import output_error, write_refused

    if write_refused(exc) is not None:
        return str(output_error(exc.filename or "the output", exc))
    where = f" {exc.filename}" if exc.filename else ""
    what = exc.strerror or type(exc).__name__
    advice = {
        errno.ENOENT: "check the path",
        errno.EISDIR: "give a file, not a folder",
        errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
    }.get(exc.errno or -1, "check the path and the disk")
    return f"{what}:{where}; {advice}"


def _run(args: argparse.Namespace) -> int:
    verbose = getattr(args, "verbose", False)
    try:
        return _COMMANDS[args.command](args)
    except (InterpError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):  # piped into `head` and closed: not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        message = str(exc) if isinstance(exc, InterpError) else _os_error(exc)
        print(f"interp {args.command}: error: {_one_line(message)}", file=sys.stderr)
        if verbose:
            import traceback

            detail = getattr(exc, "detail", None)
            if detail:
                print(_ANSI.sub("", detail), file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
