"""Benchmark matrix: interp's renderer against lucent and torch-dreams, side by side in one
process, on an early, a middle and a late layer of five architectures.

Every case renders 16 channels (one image each, batched), a 128 px canvas, 64 steps, from
random init where ImageNet weights are not offline (torchvision's are not shipped; the
embedded EfficientNet-Lite0's are). Rows, all in one process and in turn per case:

* ``lucent``: ``render_vis`` with its defaults (every canvas upsampled to 224 px);
* ``lucent-fixed``: ``fixed_image_size=128``;
* ``dreams``: torch-dreams 4, batched (``BatchedAutoImageParam`` + ``BatchedObjective``,
  its default AdamW lr 9e-3, gradient-norm clip 1, random affine + resize 0.5..1.2);
* ``interp``: interp's defaults on this device (what ``render`` chooses);
* ``interp-fp32``, ``interp-nchw``, ``interp-bf16``: interp forced to fp32, to
  channels_first input, to bf16 autocast (where one of them *is* the default it is a second
  run of the default: the spread between them is the noise);
* ``floor``: no renderer, the truncated network alone as interp's default runs it (its
  precision and memory format), forward and backward to a fixed batch, the same number of
  steps: what the network itself costs, so a renderer's time over it is its own overhead;
* every method runs once for one untimed step before its timed run (oneDNN builds its
  kernels for the case's shapes on a first call; the floor's loop has the same untimed step),
  so no row pays a one-time cost another does not (``--no-warmup`` times first runs);
* all of these at lucent's parametrization (fft); ``interp-auto``: interp's default
  parametrization too (``param="auto"``: pixel for receptive fields up to a quarter of the
  canvas), not in the default ``--methods``.

``value``: mean over the 16 units of each final image's objective (channel mean), measured by
one evaluator (``interp.featvis.render.evaluate``, float32) at the scale each method optimized
at (224 px for lucent's defaults, the canvas otherwise). ``rate``: forward+backward FLOPs of
the truncated network (``torch.utils.flop_counter``) x steps / time, next to the rate this
machine reaches on a plain large matmul and conv in the same run (``peak``), fp32 and bf16.

    python scripts/bench_featvis.py                       # the matrix on this CPU
    python scripts/bench_featvis.py --size 224 --steps 512 --device cuda   (device_check.sh)
    python scripts/bench_featvis.py --models efficientnet_lite0 --methods interp,lucent-fixed

torch-dreams is optional (``pip install --no-deps torch-dreams opencv-python-headless``: its
own requirements name the GUI OpenCV and mkl, which it does not need here); without it the
``dreams`` rows say so.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from _bench import load_or_random
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from interp import objectives as obj
from interp.activations import ActivationCapture, preserved_state, resolve_layer
from interp.device import cpu_allocator, synchronize
from interp.featvis.render import evaluate, render, render_defaults

CASES = {
    "torchvision:resnet18": ("layer1.0", "layer3.0", "layer4.1"),
    "torchvision:mobilenet_v2": ("features.4", "features.10", "features.17"),
    "torchvision:vgg11": ("features.6", "features.13", "features.18"),
    "torchvision:densenet121": (
        "features.denseblock1",
        "features.denseblock2",
        "features.denseblock4",
    ),
    "efficientnet_lite0": ("_blocks.1", "_blocks.8", "_blocks.15"),
}
METHODS = (
    "lucent",
    "lucent-fixed",
    "dreams",
    "interp",
    "interp-fp32",
    "interp-nchw",
    "interp-bf16",
    "floor",
)
#: every interp row renders lucent's parametrization (fft), so the matrix compares the same
#: optimization; ``interp-auto`` adds interp's own default parametrization (pixel where the
#: layer's receptive field is at most a quarter of the canvas, render_defaults)
INTERP_OPTIONS: dict[str, dict[str, Any]] = {
    "interp": {"param": "fft"},
    "interp-fp32": {"param": "fft", "precision": "fp32"},
    "interp-nchw": {"param": "fft", "channels_last": False},
    "interp-bf16": {"param": "fft", "precision": "bf16"},
    "interp-auto": {},
}


def peak_rates(device: torch.device, seconds: float = 2.0) -> dict[str, float]:
    """FLOP/s of a large matmul and a large 3x3 conv, fp32 and bf16 (the best of each)."""
    rates: dict[str, float] = {}
    for dtype, name in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        a = torch.randn(2048, 2048, device=device, dtype=dtype)
        x = torch.randn(16, 128, 56, 56, device=device).to(memory_format=torch.channels_last)
        w = torch.randn(128, 128, 3, 3, device=device).to(memory_format=torch.channels_last)
        x, w = x.to(dtype), w.to(dtype)
        jobs: dict[str, tuple[Callable[[], Any], float]] = {
            "matmul": (lambda a=a: a @ a, 2 * 2048**3),
            "conv": (lambda x=x, w=w: F.conv2d(x, w, padding=1), 2 * 16 * 128 * 128 * 9 * 56 * 56),
        }
        best = 0.0
        for fn, flops in jobs.values():
            fn()
            synchronize(device)
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 2:
                fn()
                n += 1
            synchronize(device)
            best = max(best, flops * n / (time.perf_counter() - start))
        rates[name] = best
    return rates


def step_flops(model, layer: str, channels: list[int], size: int) -> float:
    """Forward + backward (to the image) FLOPs of one step of interp's truncated network."""
    dotted = resolve_layer(model, layer)
    x = torch.rand(len(channels), model.preprocessing.channels, size, size, device=model.device)
    x.requires_grad_(True)
    with preserved_state(model.module, eval_mode=True, freeze=True):
        with ActivationCapture(model.module, [dotted], stop=True) as cap:
            counter = FlopCounterMode(display=False)
            with counter:
                acts = cap.run(model.normalize(x))[dotted]
                acts[:, channels].mean(dim=(2, 3)).sum().backward()
    return float(counter.get_total_flops())


def floor_time(model, layer: str, channels: list[int], size: int, steps: int, chosen) -> float:
    """Seconds of ``steps`` bare steps of the truncated network as interp's default runs it
    (its precision and memory format): forward to ``layer`` and backward to a fixed input
    batch, nothing else (no parametrization, transforms, optimizer or BatchNorm folding).
    No renderer that runs this network in this precision does a step for less: a renderer's
    time over this floor is what it adds to the network."""
    device = model.device
    dotted = resolve_layer(model, layer)
    x = torch.rand(len(channels), model.preprocessing.channels, size, size, device=device)
    rows = torch.arange(len(channels), device=device)
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if chosen["precision"] == "bf16"
        else contextlib.nullcontext()
    )
    with preserved_state(model.module, eval_mode=True, freeze=True):
        with ActivationCapture(model.module, [dotted], stop=True) as cap:

            def step() -> None:
                leaf = x.clone().requires_grad_(True)
                inp = model.normalize(leaf)
                if chosen["channels_last"]:
                    inp = inp.contiguous(memory_format=torch.channels_last)
                with autocast:
                    acts = cap.run(inp)[dotted]
                acts[rows, channels].float().mean(dim=(1, 2)).sum().neg().backward()

            step()  # warm-up: oneDNN builds its kernels
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize(device)
    return time.perf_counter() - start


def lucent_render(model, layer, channels, size, steps, fixed, device):
    from lucent.optvis import objectives as lobj
    from lucent.optvis import param as lparam
    from lucent.optvis import render as lrender
    from lucent.optvis import transform as ltrans

    name = layer.replace(".", "_")
    objective = lobj.Objective.sum([lobj.channel(name, c, batch=i) for i, c in enumerate(channels)])
    module = copy.deepcopy(model.module).to(device).eval()  # lucent leaves its hooks behind
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


class _FromImagenet(nn.Module):
    """torch-dreams always applies ImageNet mean/std: undo it and apply the model's own."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.mean = torch.tensor((0.485, 0.456, 0.406), device=model.device)[None, :, None, None]
        self.std = torch.tensor((0.229, 0.224, 0.225), device=model.device)[None, :, None, None]

    def forward(self, x):
        return self.model.module(self.model.normalize(x * self.std + self.mean))


def dreams_render(model, layer, channels, size, steps, device):
    from torch_dreams import Dreamer
    from torch_dreams.batched_image_param import BatchedAutoImageParam
    from torch_dreams.batched_objective import BatchedObjective

    wrapped = copy.deepcopy(model)
    net = _FromImagenet(wrapped).eval()
    target = wrapped.module.get_submodule(resolve_layer(model, layer))

    def unit(c):
        return lambda outputs: -outputs[0][:, c].mean()

    dreamer = Dreamer(net, quiet=True, device=str(device))
    param = BatchedAutoImageParam(
        batch_size=len(channels), height=size, width=size, device=str(device)
    )
    start = time.perf_counter()
    result = dreamer.render(
        layers=[target],
        image_parameter=param,
        iters=steps,
        custom_func=BatchedObjective([unit(c) for c in channels]),
    )
    synchronize(device)
    elapsed = time.perf_counter() - start
    images = torch.stack([p.to_chw_tensor(device=str(device)).float().cpu() for p in result])
    return images, elapsed


def value(model, objective, images, at):
    """Mean over units of each image's own unit, with images resized to ``at`` px."""
    if images.shape[-1] != at:
        images = F.interpolate(images, size=(at, at), mode="bilinear", align_corners=True)
    return float(evaluate(model, objective, images).diagonal().mean())


def _have_dreams() -> bool:
    try:
        import torch_dreams  # noqa: F401
    except ImportError:
        return False
    return True


def run_method(method, model, objective, layer, channels, args) -> tuple[float, float]:
    """``(seconds, value)`` of one method on one case."""
    device = model.device
    if method in ("lucent", "lucent-fixed"):
        fixed = args.size if method == "lucent-fixed" else None
        images, secs = lucent_render(model, layer, channels, args.size, args.steps, fixed, device)
        return secs, value(model, objective, images, args.size if fixed else max(224, args.size))
    if method == "dreams":
        images, secs = dreams_render(model, layer, channels, args.size, args.steps, device)
        return secs, value(model, objective, images, args.size)
    if method == "floor":
        chosen = render_defaults(model, layer, canvas=args.size)
        return floor_time(model, layer, channels, args.size, args.steps, chosen), float("nan")
    start = time.perf_counter()
    result = render(
        model,
        objective,
        steps=args.steps,
        size=args.size,
        progress=False,
        **INTERP_OPTIONS[method],
    )
    synchronize(device)
    return time.perf_counter() - start, float(result.values.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--layers", default="0,1,2", help="which of each model's three layers")
    parser.add_argument(
        "--markdown", action="store_true", help="also print the table in Markdown at the end"
    )
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="time each method's first run of a case (default: one untimed 1-step run first, "
        "as the floor's untimed step, so no row pays the kernel builds another does not)",
    )
    args = parser.parse_args()
    channels = list(range(args.channels))
    methods = [m.strip() for m in args.methods.split(",")]
    picks = [int(i) for i in args.layers.split(",")]
    dreams = _have_dreams()
    markdown: list[tuple[str, tuple[float, str] | None]] = []
    device = torch.device("cuda" if args.device == "cuda" else args.device)
    peaks = peak_rates(device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, "
        f"{args.channels} channels, {args.size} px, {args.steps} steps; peak "
        f"{peaks['fp32'] / 1e9:.0f} GFLOP/s fp32, {peaks['bf16'] / 1e9:.0f} GFLOP/s bf16 "
        "(best of a 2048^2 matmul and a 128-channel 3x3 conv)",
        flush=True,
    )
    if "dreams" in methods and not dreams:
        print("torch-dreams is not installed: its rows are skipped (see the docstring)")
    header = (
        f"{'model':<26} {'layer':<22} {'method':<13} {'s':>7} {'x lucent':>8} {'x fixed':>7} "
        f"{'value':>8} {'GFLOP/s':>8} {'% peak':>6}  default"
    )
    print(header)
    print("-" * len(header))
    for spec in args.models.split(","):
        model, random = load_or_random(spec, str(device))
        note = " (random)" if random else ""
        for layer in [CASES[spec][i] for i in picks]:
            objective = obj.channel(layer, channels)
            flops = step_flops(model, layer, channels, args.size)
            chosen = render_defaults(model, layer, canvas=args.size)
            rows: dict[str, tuple[float, float]] = {}
            for method in methods:
                if method == "dreams" and not dreams:
                    continue
                torch.manual_seed(0)
                # every method runs with the CPU allocator setting that interp's render
                # enters (freed memory kept: interp.device.cpu_allocator), so the ratios
                # compare the renderers, not the allocators
                with cpu_allocator(device):
                    if args.warmup:  # untimed: oneDNN builds its kernels for these shapes
                        warm = argparse.Namespace(**{**vars(args), "steps": 1})
                        run_method(method, model, objective, layer, channels, warm)
                        torch.manual_seed(0)
                    rows[method] = run_method(method, model, objective, layer, channels, args)
            for method, (secs, val) in rows.items():
                ratio = f"{rows['lucent'][0] / secs:>8.1f}" if "lucent" in rows else f"{'':>8}"
                fixed_ratio = (
                    f"{rows['lucent-fixed'][0] / secs:>7.1f}"
                    if "lucent-fixed" in rows
                    else f"{'':>7}"
                )
                rate = achieved = ""
                if method.startswith("interp") or method == "floor":
                    opts = {**chosen, **INTERP_OPTIONS.get(method, {})}
                    bf16 = opts["precision"] == "bf16"
                    r = flops * args.steps / secs
                    rate = f"{r / 1e9:8.1f}"
                    achieved = f"{100 * r / peaks['bf16' if bf16 else 'fp32']:6.1f}"
                flag = "*" if method in ("interp", "interp-auto") else ""
                shown = "" if val != val else f"{val:.3f}"  # the floor reaches no value
                over = f"{secs / rows['floor'][0]:.2f}" if "floor" in rows else ""
                name = (
                    f"**{method}**{_describe(chosen, method == 'interp-auto')}" if flag else method
                )
                markdown.append(
                    (
                        f"| {spec.split(':')[-1]}{'*' if note else ''} | `{layer}` | {name} | "
                        f"{secs:.1f} | {ratio.strip()} | {fixed_ratio.strip()} | {over} | "
                        f"{shown} | {rate.strip()} |",
                        (r, "bf16" if bf16 else "fp32") if rate else None,
                    )
                )
                print(
                    f"{spec.split(':')[-1] + note:<26} {layer:<22} {method:<13} {secs:>7.1f} "
                    f"{ratio} {fixed_ratio} {shown:>8} {rate:>8} {achieved:>6}  {flag}"
                    + (f"{_describe(chosen, method == 'interp-auto')}" if flag else ""),
                    flush=True,
                )
    # a peak measured once can catch the machine busy: measured again at the end, the higher
    # of the two is the peak of the Markdown table
    end = peak_rates(device)
    print(
        f"peak at the end: {end['fp32'] / 1e9:.0f} GFLOP/s fp32, {end['bf16'] / 1e9:.0f} GFLOP/s "
        "bf16 (the Markdown's % peak: the higher of start and end)"
    )
    peaks = {k: max(peaks[k], end[k]) for k in peaks}
    if args.markdown:
        print(
            "\n| model | layer | method | s | × lucent | × fixed | × floor | value | GFLOP/s "
            "| % peak |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
        )
        for text, rate in markdown:
            print(f"{text} {f'{100 * rate[0] / peaks[rate[1]]:.1f}' if rate else ''} |")
    print(
        "x lucent / x fixed: lucent's time (defaults / fixed_image_size) over the row's; x floor "
        "(Markdown): the row's time over the floor's (the truncated network alone); value: "
        "mean objective reached (float32, one evaluator); GFLOP/s: forward+backward FLOPs of "
        "the truncated network x steps / time; % peak: of this run's fp32 (bf16 rows: bf16) "
        "peak; *: interp's default precision and memory format (interp-auto: and parametrization), "
        "with what it chose."
    )


def _describe(chosen: dict[str, Any], param: bool = False) -> str:
    fmt = "channels_last" if chosen["channels_last"] else "nchw"
    return f" ({chosen['precision']}, {fmt}{', ' + chosen['param'] if param else ''})"


if __name__ == "__main__":
    main()
