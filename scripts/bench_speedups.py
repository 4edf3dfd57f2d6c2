"""Benchmark: which GPU-minded options pay on this device, side by side in one process.

For efficientnet_lite0 it times (1) rendering: ``--channels`` channels of ``--layer`` optimized
together for ``--steps`` Adam steps at ``--size`` px, and (2) the examples/dissection forward:
a truncated forward to ``--layer`` over ``--n`` images in batches of 64; each in fp32 NCHW,
channels_last input, bf16 autocast and bf16 + channels_last. Then ``torch.compile`` of a
rendering step (forward + backward to ``--layer``) on a hand-written truncated forward: the
one-off compile time, the per-step times and the steps it takes to pay back. Values: the mean
final objective of the rendered images (evaluated in fp32), and the largest difference of the
units' maximal activations from fp32's, relative to the largest, for the forward.

    python scripts/bench_speedups.py [--device cuda] [--size 128] [--steps 64] [--channels 16]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from interp import load_model
from interp.activations import ActivationCapture
from interp.device import synchronize
from interp.featvis.objectives import channel
from interp.featvis.render import render


def render_variants(model, layer, chans, size, steps, device):
    rows = []
    for name, amp, cl in [
        ("fp32", False, False),
        ("channels_last", False, True),
        ("bf16", True, False),
        ("bf16+channels_last", True, True),
    ]:
        obj = channel(layer, chans)
        obj.batch = len(chans)
        precision = "bf16" if amp else "fp32"
        kw = dict(steps=steps, size=size, precision=precision, channels_last=cl, progress=False)
        render(model, obj, **{**kw, "steps": 2})  # warm-up
        synchronize(device)
        t = time.perf_counter()
        out = render(model, obj, **kw)
        synchronize(device)
        rows.append((name, time.perf_counter() - t, float(out.values.mean())))
    return rows


class _Truncated(nn.Module):
    """efficientnet_lite0 written out up to block ``k``: a forward with no early-stop
    exception, which torch.compile can capture whole (interp's hook-and-stop truncation
    graph-breaks: dynamo does not trace the raised stop)."""

    def __init__(self, net: nn.Module, k: int) -> None:
        super().__init__()
        self.net, self.k = net, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net._act_stem(net._bn0(net._conv_stem(x)))
        for block in net._blocks[: self.k + 1]:
            x = block(x)
        return x


def compile_variant(model, layer, n_chans, size, steps, device):
    """Forward + backward steps like rendering's, eager vs torch.compile, on a hand-truncated
    forward: compile seconds, seconds per step each way."""
    k = int(layer.split(".")[1])
    net = _Truncated(model.module, k).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n_chans, 3, size, size, generator=g).to(device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)

    def step(f):
        f(x)[:, :n_chans].mean().backward()

    def timed(f, n):
        synchronize(device)
        t = time.perf_counter()
        for _ in range(n):
            step(f)
        synchronize(device)
        return (time.perf_counter() - t) / n

    step(net)
    eager = timed(net, steps)
    fast = torch.compile(net)
    first = timed(fast, 1)
    compiled = timed(fast, steps)
    return first - compiled, eager, compiled


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
                synchronize(device)
                t = time.perf_counter()
                outs = []
                for i in range(0, n, 64):
                    x = x_all[i : i + 64].to(device)
                    if cl:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                        outs.append(cap.run(x)[layer].float().amax(dim=(2, 3)).cpu())
                synchronize(device)
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
    rows = render_variants(model, args.layer, chans, args.size, args.steps, device)
    base = rows[0][1]
    print(f"\nrendering: {args.channels} channels, {args.size} px, {args.steps} steps")
    print(f"{'variant':<30} {'s':>8} {'steps/s':>8} {'x fp32':>7} {'value':>8}")
    for name, secs, value in rows:
        print(f"{name:<30} {secs:8.2f} {args.steps / secs:8.2f} {base / secs:7.2f} {value:8.3f}")
    if not args.no_compile:
        comp, eager, fast = compile_variant(
            model, args.layer, args.channels, args.size, args.steps, device
        )
        saved = eager - fast
        pay = f"after {comp / saved:.0f} steps" if saved > 0 else "never (no faster per step)"
        print(
            f"torch.compile (fp32 forward+backward to {args.layer}, hand-truncated): compile "
            f"{comp:.1f} s; step {eager * 1e3:.1f} ms eager, {fast * 1e3:.1f} ms compiled "
            f"(x{eager / fast:.2f}); pays back {pay}"
        )
    rows = forward_variants(model, args.layer, args.n, args.size, device)
    base = rows[0][1]
    print(f"\nforward (examples/dissection pass): {args.n} images, {args.size} px, batches of 64")
    print(f"{'variant':<30} {'s':>8} {'img/s':>8} {'x fp32':>7} {'max rel diff':>13}")
    for name, secs, diff in rows:
        print(f"{name:<30} {secs:8.2f} {args.n / secs:8.1f} {base / secs:7.2f} {diff:13.4f}")


if __name__ == "__main__":
    main()
