"""Benchmark: which GPU-minded options pay on this device, side by side in one process.

For efficientnet_lite0 it times (1) rendering: ``--channels`` channels of ``--layer`` optimized
together for ``--steps`` Adam steps at ``--size`` px, and (2) the examples/dissection forward:
a truncated forward to ``--layer`` over ``--n`` images in batches of 64; each in fp32 NCHW,
channels_last input, bf16 autocast, bf16 + channels_last, and ``torch.compile`` (rendering: the
one-off compile time is shown apart from the steady per-step time, and the steps it takes to
pay back). Values: the mean final objective of the rendered images (evaluated in fp32), and
the largest activation difference from fp32 for the forward.

    python scripts/bench_speedups.py [--device cuda] [--size 128] [--steps 64] [--channels 16]
"""

from __future__ import annotations

import argparse
import importlib
import time

import torch

from interp import load_model
from interp.capture import ActivationCapture
from interp.featvis.objectives import channel
from interp.featvis.render import render


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def render_variants(model, layer, chans, size, steps, device, compile_too):
    rows = []
    variants = [
        ("fp32", False, False, False),
        ("channels_last", False, True, False),
        ("bf16", True, False, False),
        ("bf16+channels_last", True, True, False),
    ]
    if compile_too:
        variants.append(("compile (fp32, channels_last)", False, True, True))
    for name, amp, cl, comp in variants:
        obj = channel(layer, chans)
        obj.batch = len(chans)
        kw = dict(steps=steps, size=size, amp=amp, channels_last=cl, compile=comp, progress=False)
        compile_s = 0.0
        if comp:  # the first call compiles: time it on its own
            _sync(device)
            t = time.perf_counter()
            render(model, obj, **{**kw, "steps": 2})
            _sync(device)
            compile_s = time.perf_counter() - t
        else:
            render(model, obj, **{**kw, "steps": 2})  # warm-up
        _sync(device)
        t = time.perf_counter()
        out = render(model, obj, **kw)
        _sync(device)
        secs = time.perf_counter() - t
        rows.append((name, secs, compile_s, float(out.values.mean())))
    importlib.import_module("interp.featvis.render")._COMPILED.clear()
    return rows


def forward_variants(model, layer, n, size, device):
    g = torch.Generator().manual_seed(0)
    x_all = model.normalize(torch.rand(n, 3, size, size, generator=g))
    rows, ref = [], None
    for name, amp, cl in [
        ("fp32", False, False),
        ("channels_last", False, True),
        ("bf16", True, False),
        ("bf16+channels_last", True, True),
    ]:
        outs = []
        with torch.no_grad(), ActivationCapture(model.module, [layer]) as cap:
            for _rep in range(2):  # the first is a warm-up
                _sync(device)
                t = time.perf_counter()
                outs = []
                for i in range(0, n, 64):
                    x = x_all[i : i + 64].to(device)
                    if cl:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        outs.append(cap.run(x)[layer].float().amax(dim=(2, 3)).cpu())
                _sync(device)
                secs = time.perf_counter() - t
        got = torch.cat(outs)
        ref = got if ref is None else ref
        rows.append((name, secs, float((got - ref).abs().max() / ref.abs().max())))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--layer", default="_blocks.8")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--n", type=int, default=512, help="images for the forward benchmark")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = ap.parse_args()
    model = load_model("efficientnet_lite0", device=args.device, quiet=True)
    device = model.device
    print(f"efficientnet_lite0 {args.layer} on {device} (torch {torch.__version__})")
    chans = list(range(args.channels))
    rows = render_variants(
        model, args.layer, chans, args.size, args.steps, device, not args.no_compile
    )
    base = rows[0][1]
    print(f"\nrendering: {args.channels} channels, {args.size} px, {args.steps} steps")
    print(f"{'variant':<30} {'s':>8} {'steps/s':>8} {'x fp32':>7} {'compile s':>10} {'value':>8}")
    for name, secs, comp, value in rows:
        extra = f"{comp:10.1f}" if comp else f"{'':>10}"
        speed = f"{secs:8.2f} {args.steps / secs:8.2f} {base / secs:7.2f}"
        print(f"{name:<30} {speed} {extra} {value:8.3f}")
        if comp:
            saved = (base - secs) / args.steps  # seconds saved per step vs fp32 NCHW
            pay = f"{comp / saved:.0f} steps" if saved > 0 else "never (no faster per step)"
            print(f"{'':<30} compile pays back after {pay}")
    rows = forward_variants(model, args.layer, args.n, args.size, device)
    base = rows[0][1]
    print(f"\nforward (examples/dissection pass): {args.n} images, {args.size} px, batches of 64")
    print(f"{'variant':<30} {'s':>8} {'img/s':>8} {'x fp32':>7} {'max rel diff':>13}")
    for name, secs, diff in rows:
        print(f"{name:<30} {secs:8.2f} {args.n / secs:8.1f} {base / secs:7.2f} {diff:13.4f}")


if __name__ == "__main__":
    main()
