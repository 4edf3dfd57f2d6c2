"""Redirected ReLU/ReLU6 gradients, before and after, on EfficientNet-Lite0's early layers.

For 8 sampled units of each of ``_act_stem``, ``_blocks.0``, ``_blocks.1`` and ``_blocks.2``
(32 units), render with the redirection off and with each variant (``--variants``), at the
atlas's settings (256 steps, 128 px, fft, standard transforms), and measure per variant and
layer: the objective reached (mean over units, float32, the true forward), how many images
beat the best of 256 natural crops (Olah's check), and the fraction of *clipped* pixels (any
channel within half a grey level of 0 or 1: the black/cyan speckle of saturated ReLU6 units).
Writes a grid (rows: layer x variant) to ``--png``.

    python scripts/bench_redirect.py [--steps 256] [--png docs/images/redirect_lite0.png]
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--variants", default="off,image:0.5,unit:0.25,unit:0.5,unit:1")
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    model = load_model("efficientnet_lite0", device=args.device, quiet=True)
    refs = reference_images(args.size, "photos", n=256)
    variants = [parse_variant(v) for v in args.variants.split(",")]
    print(
        f"efficientnet_lite0, {args.per_layer} units per layer, {args.steps} steps, "
        f"{args.size} px, best of 256 natural crops"
    )
    header = (
        f"{'layer':<11} {'variant':<10} {'value':>8} {'beats crops':>11} {'clipped':>8} {'s':>6}"
    )
    print(header)
    print("-" * len(header))
    grid: list[tuple[str, str, torch.Tensor]] = []
    totals = {label: [0, 0, []] for label, _, _ in variants}
    for layer in LAYERS:
        with torch.no_grad():
            width = capture(model, model.example_input(1), [layer])[layer].shape[1]
        rng = np.random.default_rng(unit_seed(0, layer, "sample") % (2**32))
        chans = sorted(rng.choice(width, args.per_layer, replace=False).tolist())
        objective = obj.channel(layer, chans)
        natural = evaluate(model, objective, refs).max(dim=0).values
        for label, frac, mode in variants:
            start = time.perf_counter()
            result = render(
                model,
                objective,
                steps=args.steps,
                size=args.size,
                redirect=frac,
                redirect_mode=mode,
                seeds=[unit_seed(0, layer, c) for c in chans],
                progress=False,
            )
            secs = time.perf_counter() - start
            beats = int((result.values > natural).sum())
            clip = clipped_fraction(result.images)
            totals[label][0] += beats
            totals[label][1] += len(chans)
            totals[label][2].append(clip)
            grid.append((layer, label, result.images))
            print(
                f"{layer:<11} {label:<10} {float(result.values.mean()):>8.3f} "
                f"{beats:>5}/{len(chans):<5} {clip:>8.3f} {secs:>6.1f}",
                flush=True,
            )
    print("all layers:")
    for label, (beats, total, clips) in totals.items():
        print(f"  {label:<10} beats crops {beats}/{total}, clipped {np.mean(clips):.3f}")
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
