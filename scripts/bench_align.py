"""Pixel-grid alignment: how much an image's value depends on its one-pixel translation, what
``render(align=True)`` (the default) gains, and what it costs.

Every case renders the same units from the same starts (``--starts`` per unit) as optimized
(``align=False``) and aligned, and evaluates each image as optimized at its four one-pixel
translations (none, right, down, both; circular). Prints, per case: the mean value as
optimized and aligned; the largest *spread* of one image's value over its translations
(max - min over the largest magnitude of the four); how many images moved; Olah's check (images that
beat the unit's best of 256 natural crops) before and after; and the time of an aligned
render over an unaligned one at the bench's step count and at ``--short`` steps, the two
renders of each pair run back to back (``--repeats`` pairs, the median ratio).

    python scripts/bench_align.py                    # Lite0 and resnet18 (~9 min)
    python scripts/bench_align.py --cases torchvision:resnet18/layer4.1 --units 16
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _bench import load_or_random

from interp import objectives as obj
from interp.activations import capture
from interp.featvis.reference import reference_images
from interp.featvis.render import ALIGN_SHIFTS, evaluate, render, unit_seed

CASES = (
    "efficientnet_lite0/_act_stem",
    "efficientnet_lite0/_blocks.0",
    "efficientnet_lite0/_blocks.1",
    "efficientnet_lite0/_blocks.3",
    "efficientnet_lite0/_blocks.8",
    "efficientnet_lite0/_blocks.15",
    "torchvision:resnet18/layer1.0",
    "torchvision:resnet18/layer4.1",
)


def timed_render(model, objective, **kwargs):  # noqa: ANN001, ANN003, ANN201
    """``render(...)`` and its wall time in seconds."""
    start = time.perf_counter()
    out = render(model, objective, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--short", type=int, default=32, help="steps of the second cost row")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--units", type=int, default=8, help="sampled units per layer")
    parser.add_argument("--starts", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed pairs at --short steps")
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    refs = reference_images(args.size, "photos", n=256)
    print(
        f"{args.units} units x {args.starts} starts, {args.size} px, {args.steps} steps; "
        f"time aligned / unaligned at {args.steps} and {args.short} steps"
    )
    head = (
        f"{'case':<34} {'unaligned':>9} {'aligned':>8} {'spread':>7} {'moved':>7} "
        f"{'Olah before':>11} {'after':>7} {f'x{args.steps}':>6} {f'x{args.short}':>6}"
    )
    print(head)
    print("-" * len(head))
    for case in args.cases.split(","):
        spec, layer = case.rsplit("/", 1)
        model, random = load_or_random(spec)
        note = "*" if random else ""
        with torch.no_grad():
            width = capture(model, model.example_input(1), [layer])[layer].shape[1]
        rng = np.random.default_rng(unit_seed(0, layer, "sample") % (2**32))
        chans = sorted(rng.choice(width, min(args.units, width), replace=False).tolist())
        objective = obj.channel(layer, chans)
        natural = evaluate(model, objective, refs).max(dim=0).values
        before, after, spreads, moved, ratios = [], [], [], 0, []
        for s in range(args.starts):
            kwargs = dict(
                steps=args.steps,
                size=args.size,
                seeds=[unit_seed(s, layer, c) for c in chans],
                progress=False,
            )
            plain, t_plain = timed_render(model, objective, align=False, **kwargs)
            aligned, t_aligned = timed_render(model, objective, **kwargs)
            ratios.append(t_aligned / t_plain)
            rolls = torch.stack(
                [plain.values]
                + [
                    evaluate(model, objective, torch.roll(plain.images, sh, (2, 3))).diagonal()
                    for sh in ALIGN_SHIFTS
                ]
            )
            span = rolls.max(dim=0).values - rolls.min(dim=0).values
            top = rolls.abs().max(dim=0).values.clamp(min=1e-6)
            spreads.append(float((span / top).max()))
            moved += sum(sh != (0, 0) for sh in aligned.info["shifts"])
            before.append(plain.values)
            after.append(aligned.values)
        short = []
        for _ in range(args.repeats):
            kwargs = dict(steps=args.short, size=args.size, progress=False)
            _, t_plain = timed_render(model, objective, align=False, **kwargs)
            _, t_aligned = timed_render(model, objective, **kwargs)
            short.append(t_aligned / t_plain)
        b, a = torch.stack(before), torch.stack(after)
        live = (natural > 0) | (a > 0).any(dim=0)
        n = int(live.sum()) * args.starts
        print(
            f"{spec.split(':')[-1] + note + ' ' + layer:<34} {float(b.mean()):>9.3f} "
            f"{float(a.mean()):>8.3f} {max(spreads):>7.2f} {moved:>3}/{b.numel():<3} "
            f"{int(((b > natural) & live).sum()):>5}/{n:<5} {int(((a > natural) & live).sum()):>3}/"
            f"{n:<3} {statistics.median(ratios):>6.3f} {statistics.median(short):>6.3f}",
            flush=True,
        )
    print(
        "spread: the largest (max - min) / max|value| of one image over its 4 translations; Olah: "
        "renders beating the best of 256 natural crops, over live units x starts"
        + ("; *: random init" if any("torchvision" in c for c in args.cases.split(",")) else "")
    )


if __name__ == "__main__":
    main()
