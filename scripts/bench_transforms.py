"""Transforms centred on the canvas against lucent's zoomed-out geometry: objective values.

Every case renders the same units from the same starts twice, with ``LUCENT`` (lucent's
standard set, its 12 px pad fitted into the canvas: the optimization sees the image at
128/152 of its displayed scale) and with ``STANDARD`` (the same jitter, scale and rotation
centred on the canvas at its own scale, interp's default), and evaluates both on the
untransformed canvas, as the renderer reports and the user sees them. Prints, per case, the
mean value of each, their ratio, and how many units the centred draws raise; ``--png``
writes the image grids (rows: a case's first 8 units with LUCENT, then with STANDARD).

    python scripts/bench_transforms.py                         # 256 steps, 6 cases (~6 min)
    python scripts/bench_transforms.py --steps 32 --png out.png
"""

from __future__ import annotations

import argparse

import torch
from _bench import load_or_random

from interp import objectives as obj
from interp.featvis.render import render
from interp.featvis.transforms import LUCENT, STANDARD

#: units of each case shown in the PNG (its first ones)
PNG_UNITS = 8

CASES = (
    ("efficientnet_lite0", "_blocks.1"),
    ("efficientnet_lite0", "_blocks.8"),
    ("efficientnet_lite0", "_blocks.15"),
    ("torchvision:resnet18", "layer1.0"),
    ("torchvision:densenet121", "features.denseblock1"),
    ("torchvision:vgg11", "features.13"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--units", type=int, default=16)
    parser.add_argument("--param", default="auto", help="the renderer's parametrization")
    parser.add_argument("--cases", default=",".join(f"{m}/{layer}" for m, layer in CASES))
    parser.add_argument("--png", help="write the image grids here")
    args = parser.parse_args()
    rows = []
    print(f"{args.units} units, {args.size} px, {args.steps} steps, param {args.param}")
    print(f"{'model':<28} {'layer':<22} {'lucent':>8} {'centred':>8} {'ratio':>6} {'raised':>7}")
    for case in args.cases.split(","):
        spec, layer = case.rsplit("/", 1)
        model, random = load_or_random(spec)
        note = "*" if random else ""
        objective = obj.channel(layer, list(range(args.units)))
        values = {}
        for name, transform in (("lucent", LUCENT), ("centred", STANDARD)):
            result = render(
                model,
                objective,
                steps=args.steps,
                size=args.size,
                param=args.param,
                transforms=transform,
                progress=False,
            )
            values[name] = result.values
            rows.append(result.images[:PNG_UNITS])
        a, b = values["lucent"], values["centred"]
        raised = int((b > a).sum())
        print(
            f"{spec.split(':')[-1] + note:<28} {layer:<22} {float(a.mean()):>8.3f} "
            f"{float(b.mean()):>8.3f} {float(b.mean() / a.mean()):>6.2f} "
            f"{raised:>4}/{len(a)}",
            flush=True,
        )
    print("*: random init (torchvision's weights are not offline); values on the canvas, fp32")
    if args.png:
        import torchvision

        columns = min(args.units, PNG_UNITS)
        torchvision.utils.save_image(torch.cat(rows), args.png, nrow=columns, padding=2)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
