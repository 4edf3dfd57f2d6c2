"""``interp study``: the hierarchy check across a panel of CNNs, and as it emerges during
training."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import integer


def add_parser(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add ``interp study`` and its flags to ``subparsers``."""
    p = subparsers.add_parser(
        "study",
        parents=[common],
        help="does 'early edges, later parts' hold across a panel of CNNs, and when does it "
        "emerge during training?",
        description="The hierarchy check over a panel: the embedded EfficientNet-Lite0, 1 and "
        "2 (ImageNet) and PartsWorld-trained SimpleCNN, ResNet-18, MobileNetV3-small and "
        "RegNetX-200MF, three seeds each (trained when missing); for the trained ones, "
        "checkpoints at log-spaced steps measured against the same controls, with each "
        "layer's CKA to its final state. Every network is cached: a rerun (or a run killed "
        "half-way) reuses the finished ones. Writes OUT/index.html, study.json, study.md "
        "and figures; under torchrun the networks are dealt to the ranks.",
    )
    p.add_argument("--quick", action="store_true", help="a tiny panel (seconds to a minute)")
    p.add_argument(
        "--no-emergence", action="store_true", help="the panel only, no training checkpoints"
    )
    p.add_argument(
        "--no-cache",
        action="store_true",
        help="neither reuse nor keep the random-init controls in the user-level cache "
        "($INTERP_CACHE, default ~/.cache/interp; INTERP_CACHE=off does the same)",
    )
    p.add_argument(
        "--pretrained",
        default=None,
        help="comma-separated embedded or pretrained specs of the panel "
        "[efficientnet_lite0,efficientnet_lite1,efficientnet_lite2]; 'none' for none",
    )
    p.add_argument(
        "--families",
        default=None,
        help="comma-separated PartsWorld-trained families [SimpleCNN,ResNet,MobileNet,RegNet]; "
        "'none' for none",
    )
    p.add_argument("--seeds", type=integer(1), default=None, help="seeds per family [3]")
    p.add_argument("--out", type=Path, default=None, help="output folder [out/study]")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from ..pipeline.study import QUICK, STUDY, study

    settings = QUICK if args.quick else STUDY
    if args.no_emergence:
        settings = replace(settings, emergence=False)
    for flag in ("pretrained", "families"):
        value = getattr(args, flag)
        if value is not None:
            names = () if value == "none" else tuple(v for v in value.split(",") if v)
            settings = replace(settings, **{flag: names})
    if args.seeds is not None:
        settings = replace(settings, seeds=args.seeds)
    out = args.out or Path("out/study-quick" if args.quick else "out/study")
    result = study(
        out,
        settings=settings,
        device=args.device,
        progress=not args.quiet,
        user_cache=not args.no_cache,
    )
    for finding in result.findings:
        print(f"- {finding}")
    print(f"wrote {out}/index.html, study.json, study.md and figures")
    return 0
