"""Benchmark: interp's renderer against lucent's ``render_vis``, side by side in one process.

Same model, layer, 16 channels (one image each, batched), 128 px canvas, 64 Adam steps,
lucent's standard transforms and decorrelated FFT parametrization, for an early, a middle and
the last block of resnet18 and efficientnet_lite0. lucent runs (1) with its defaults (every
canvas upsampled to 224 px) and (2) with ``fixed_image_size=128``; each lucent run gets a
fresh copy of the model because lucent leaves a hook on every module.

"value" is the mean over the 16 units of each final image's objective (channel mean), measured
by one evaluator at the scale each method optimized at (224 px for lucent's defaults, 128 px
otherwise). resnet18 uses ImageNet weights when they are in torch's cache, else random init.

    python scripts/bench_featvis.py [--steps 64] [--size 128] [--channels 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from interp import WeightsUnavailableError, load_model
from interp import objectives as obj
from interp.device import synchronize
from interp.featvis.render import evaluate, render

CASES = {
    "torchvision:resnet18": ("layer1.0", "layer3.0", "layer4.1"),
    "efficientnet_lite0": ("_blocks.1", "_blocks.8", "_blocks.15"),
}


def lucent_render(model, layer, channels, size, steps, fixed, device):
    from lucent.optvis import objectives as lobj
    from lucent.optvis import param as lparam
    from lucent.optvis import render as lrender
    from lucent.optvis import transform as ltrans

    name = layer.replace(".", "_")
    objective = lobj.Objective.sum([lobj.channel(name, c, batch=i) for i, c in enumerate(channels)])
    module = copy.deepcopy(model.module).to(device).eval()
    imagenet = model.preprocessing.mean == (0.485, 0.456, 0.406)
    transforms = list(ltrans.standard_transforms)
    if not imagenet:  # lucent's preprocess assumes ImageNet mean/std: give it the real one
        transforms.append(model.normalize)
    start = time.perf_counter()
    images = lrender.render_vis(
        module,
        objective,
        lambda: lparam.image(size, batch=len(channels)),
        transforms=transforms,
        preprocess=imagenet,
        thresholds=(steps,),
        show_image=False,
        progress=False,
        fixed_image_size=fixed,
    )
    synchronize(device)
    elapsed = time.perf_counter() - start
    return torch.from_numpy(images[-1]).permute(0, 3, 1, 2).float(), elapsed


def value(model, objective, images, at):
    """Mean over units of each image's own unit, with images resized to ``at`` px."""
    if images.shape[-1] != at:
        images = F.interpolate(images, size=(at, at), mode="bilinear", align_corners=True)
    return float(evaluate(model, objective, images).diagonal().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(CASES))
    args = parser.parse_args()
    channels = list(range(args.channels))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"{args.channels} channels, {args.size} px, {args.steps} steps"
    )
    header = (
        f"{'model':<22} {'layer':<10} {'lucent s':>8} {'fixed s':>8} {'interp s':>8} "
        f"{'fp32 s':>7} {'x lucent':>8} {'x fixed':>7} {'val lucent':>10} {'val fixed':>9} "
        f"{'val interp':>10} {'val fp32':>8}"
    )
    print(header)
    print("-" * len(header))
    for spec in args.models.split(","):
        try:
            model = load_model(spec, device=args.device, quiet=True)
            note = ""
        except WeightsUnavailableError:
            model = load_model(spec, device=args.device, weights="none")
            note = " (random init)"
        device = model.device
        for layer in CASES[spec]:
            objective = obj.channel(layer, channels)
            torch.manual_seed(0)
            lucent_imgs, t_lucent = lucent_render(
                model, layer, channels, args.size, args.steps, None, device
            )
            torch.manual_seed(0)
            fixed_imgs, t_fixed = lucent_render(
                model, layer, channels, args.size, args.steps, args.size, device
            )
            times, results = {}, {}
            for label, precision in (("interp", "auto"), ("fp32", "fp32")):
                start = time.perf_counter()
                results[label] = render(
                    model,
                    objective,
                    steps=args.steps,
                    size=args.size,
                    progress=False,
                    precision=precision,
                )
                synchronize(device)
                times[label] = time.perf_counter() - start
            t_interp = times["interp"]
            v_lucent = value(model, objective, lucent_imgs, max(224, args.size))
            v_fixed = value(model, objective, fixed_imgs, args.size)
            v_interp = float(results["interp"].values.mean())
            v_fp32 = float(results["fp32"].values.mean())
            print(
                f"{spec.split(':')[-1] + note:<22} {layer:<10} {t_lucent:>8.1f} {t_fixed:>8.1f} "
                f"{t_interp:>8.1f} {times['fp32']:>7.1f} {t_lucent / t_interp:>8.1f} "
                f"{t_fixed / t_interp:>7.1f} {v_lucent:>10.2f} {v_fixed:>9.2f} "
                f"{v_interp:>10.2f} {v_fp32:>8.2f}",
                flush=True,
            )
    print(
        "interp: its defaults (bf16 autocast where native, channels_last); fp32: interp with "
        "autocast off.\nx lucent / x fixed: lucent's time (defaults / fixed_image_size) over "
        "interp's; val: mean objective reached (evaluated in float32)."
    )


if __name__ == "__main__":
    main()
