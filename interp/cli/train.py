"""``interp train``: train a fresh CNN (resumable run folder)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InterpError
from ..settings import MIN_SIZE
from ..train import TrainConfig
from ._common import add_precision, data_help, integer, number, step_list


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp train`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
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
        help=data_help("splits", "partsworld"),
    )
    p.add_argument("--epochs", type=integer(1), default=4, help="[4]")
    p.add_argument("--batch-size", type=integer(1), default=128, help="[128]")
    p.add_argument("--lr", type=number(0), default=3e-3, help="peak learning rate [3e-3]")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw")
    p.add_argument("--schedule", choices=["cosine", "step", "none"], default="cosine")
    p.add_argument(
        "--size", type=integer(MIN_SIZE), default=None, help="image size (dataset default)"
    )
    p.add_argument("--n", type=integer(1), default=None, help="PartsWorld training images [20000]")
    p.add_argument("--width", type=number(0), default=1.0, help="simplecnn width multiplier")
    p.add_argument("--no-batchnorm", action="store_true", help="simplecnn without BatchNorm")
    p.add_argument(
        "--stem-stride",
        type=integer(1),
        default=None,
        help="the first convolution's stride (1: an ImageNet CNN adapted to small images) "
        "[the architecture's]",
    )
    p.add_argument(
        "--bn-momentum",
        type=number(0),
        default=None,
        help="BatchNorm running-average momentum while training [the architecture's]",
    )
    p.add_argument("--no-augment", action="store_true", help="no random shifts/flips")
    p.add_argument(
        "--init",
        default="default",
        help="default, constant (every unit of a layer identical) or "
        "from:RUN:N[:frozen] (first N convs from another run)",
    )
    p.add_argument(
        "--snapshots", type=step_list, default=[], help="steps to snapshot, e.g. 0,100,1000"
    )
    p.add_argument("--download", action="store_true", help="allow dataset downloads")
    add_precision(p, TrainConfig.precision, "of training")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--out", type=Path, required=True, help="run folder")


def run(args: argparse.Namespace) -> int:
    from ..train import TrainConfig, train

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
        stem_stride=args.stem_stride,
        bn_momentum=args.bn_momentum,
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
