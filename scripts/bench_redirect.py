"""Early-layer image quality on EfficientNet-Lite0: parametrization and redirected gradients.

For 8 sampled units of each of ``_act_stem``, ``_blocks.0``, ``_blocks.1`` and ``_blocks.2``
(32 units), render with each parametrization (``--params``: ``fft``, ``pixel``, ``auto``)
and each redirection variant (``--variants``: ``off``, ``unit:0.25``, ``image:0.5``...), at
the atlas's settings (256 steps, 128 px, the default transforms; ``--transforms lucent``:
lucent's zoomed-out geometry; ``--align on,off``: each image at its best one-pixel
translation, the default, and as optimized; ``--starts N``: N starts per unit), and measure
per case and
layer: the objective reached (mean over units, float32, the true forward), how many images
beat the best of 256 natural crops (Olah's check; units that no crop, no flat colour and no
image ever activates are *dead* and counted apart, since nothing can beat 0 there), the best
of the 8 saturated flat colours (the known optimum of a unit that is linear in a flat
input up to its clamp), and the fraction of *clipped* pixels (any channel within half a grey
level of 0 or 1). Writes a grid (rows: layer x case) to ``--png``.

    python scripts/bench_redirect.py [--steps 256] [--params fft,auto] [--variants off]
        [--align on] [--starts 1] [--png docs/images/redirect_lite0.png]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from interp import load_model  # noqa: E402
from interp import objectives as obj  # noqa: E402
from interp.activations import capture  # noqa: E402
from interp.featvis.reference import reference_images  # noqa: E402
from interp.featvis.render import evaluate, render, unit_seed  # noqa: E402
from interp.featvis.transforms import LUCENT, STANDARD  # noqa: E402

LAYERS = ("_act_stem", "_blocks.0", "_blocks.1", "_blocks.2")


def clipped_fraction(images: torch.Tensor) -> float:
    """Pixels with any channel within half a grey level of 0 or 1."""
    eps = 0.5 / 255
    hit = ((images <= eps) | (images >= 1 - eps)).any(dim=1)
    return float(hit.float().mean())


def parse_variant(text: str) -> tuple[str, float, str]:
    """``off``, ``image:0.5``, ``unit:1`` -> (label, fraction, mode)."""
    if text == "off":
        return text, 0.0, "image"
    mode, frac = text.split(":")
    return text, float(frac), mode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=256)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--per-layer", type=int, default=8)
    ap.add_argument("--variants", default="off")
    ap.add_argument("--params", default="fft,auto")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--layers", default=",".join(LAYERS), help="EfficientNet-Lite0 layers (the early four)"
    )
    ap.add_argument(
        "--transforms",
        default="standard",
        choices=("standard", "lucent"),
        help="the renderer's default (centred on the canvas) or lucent's zoomed-out geometry",
    )
    ap.add_argument(
        "--align",
        default="on",
        help="on: each image at its best one-pixel translation (the default); off: as "
        "optimized; on,off: both",
    )
    ap.add_argument(
        "--starts", type=int, default=1, help="starts per unit (Olah's check counts each)"
    )
    args = ap.parse_args()
    aligns = [a.strip() == "on" for a in args.align.split(",")]
    model = load_model("efficientnet_lite0", device=args.device, quiet=True)
    refs = reference_images(args.size, "photos", n=256)
    variants = [
        (
            (f"{p}" if label == "off" else f"{p} {label}") + ("" if al else " unaligned"),
            frac,
            mode,
            p,
            al,
        )
        for p in args.params.split(",")
        for label, frac, mode in map(parse_variant, args.variants.split(","))
        for al in aligns
    ]
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    flats = corners[:, :, None, None].expand(8, 3, args.size, args.size).contiguous()
    print(
        f"efficientnet_lite0, {args.per_layer} units per layer, {args.steps} steps, "
        f"{args.size} px, {args.starts} start(s) per unit, best of 256 natural crops"
    )
    header = (
        f"{'layer':<11} {'case':<26} {'value':>8} {'crops':>7} {'flat':>7} {'beats crops':>11} "
        f"{'dead':>4} {'clipped':>8} {'s':>6}"
    )
    print(header)
    print("-" * len(header))
    grid: list[tuple[str, str, torch.Tensor]] = []
    totals = {label: [0, 0, 0, []] for label, *_ in variants}
    for layer in args.layers.split(","):
        with torch.no_grad():
            width = capture(model, model.example_input(1), [layer])[layer].shape[1]
        rng = np.random.default_rng(unit_seed(0, layer, "sample") % (2**32))
        chans = sorted(rng.choice(width, args.per_layer, replace=False).tolist())
        objective = obj.channel(layer, chans)
        natural = evaluate(model, objective, refs).max(dim=0).values
        flat = evaluate(model, objective, flats).max(dim=0).values
        for label, frac, mode, param, al in variants:
            start = time.perf_counter()
            results = [
                render(
                    model,
                    objective,
                    steps=args.steps,
                    size=args.size,
                    redirect=frac,
                    redirect_mode=mode,
                    param=param,
                    align=al,
                    seeds=[unit_seed(s, layer, c) for c in chans],
                    transforms=LUCENT if args.transforms == "lucent" else STANDARD,
                    progress=False,
                )
                for s in range(args.starts)
            ]
            secs = time.perf_counter() - start
            values = torch.stack([r.values for r in results])  # (starts, units)
            images = torch.cat([r.images for r in results])
            dead = ((natural <= 0) & (flat <= 0) & (values <= 0).all(dim=0)).expand_as(values)
            beats = int(((values > natural) & ~dead).sum())
            live = int((~dead).sum())
            clip = clipped_fraction(images)
            totals[label][0] += beats
            totals[label][1] += live
            totals[label][2] += values.numel() - live
            totals[label][3].append(clip)
            grid.append((layer, label, results[0].images))
            print(
                f"{layer:<11} {label:<26} {float(values.mean()):>8.3f} "
                f"{float(natural.mean()):>7.3f} {float(flat.mean()):>7.3f} "
                f"{beats:>5}/{live:<5} {values.numel() - live:>4} {clip:>8.3f} {secs:>6.1f}",
                flush=True,
            )
    print("all layers:")
    for label, (beats, live, dead, clips) in totals.items():
        print(
            f"  {label:<26} beats crops {beats}/{live} live renders ({dead} dead), "
            f"clipped {np.mean(clips):.3f}"
        )
    if args.png:
        cols = args.per_layer
        fig, axes = plt.subplots(
            len(grid), cols, figsize=(cols * 1.0 + 1.4, len(grid) * 1.0), squeeze=False
        )
        for r, (layer, label, images) in enumerate(grid):
            for c in range(cols):
                ax = axes[r, c]
                ax.imshow(images[c].permute(1, 2, 0).numpy())
                ax.set_xticks([])
                ax.set_yticks([])
            axes[r, 0].set_ylabel(f"{layer}\n{label}", fontsize=6, rotation=0, ha="right")
        fig.subplots_adjust(left=0.14, right=0.99, top=0.99, bottom=0.01, wspace=0.04, hspace=0.04)
        args.png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.png, dpi=110)
        print(f"grid: {args.png}")


if __name__ == "__main__":
    main()
