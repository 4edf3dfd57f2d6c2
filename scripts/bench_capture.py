"""Benchmark: capturing an early layer vs. a full forward pass.

interp.capture() hooks only the requested layers and stops the forward pass right after the
last of them, so capturing an early layer should cost a fraction of a full forward. This
script measures both side by side in one run (interleaved repetitions, median times) for the
embedded efficientnet_lite0 and torchvision's resnet18 (random init: speed does not depend on
the weights), and prints the ratio.

    python scripts/bench_capture.py [--device auto|cpu|cuda] [--batch 16] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from interp import capture, layers, load_model
from interp.activations import preserved_state
from interp.device import synchronize

CASES = [
    ("efficientnet_lite0", "default", "_blocks.1"),
    ("efficientnet_lite0", "default", "_blocks.5"),
    ("torchvision:resnet18", "none", "layer1.0.conv1"),
    ("torchvision:resnet18", "none", "layer2"),
]


def _flops(fn, *args) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}")
    header = (
        f"{'model':<22} {'layer':<16} {'depth':>7} {'capture ms':>11} {'full ms':>9} "
        f"{'time ratio':>10} {'FLOP ratio':>10}"
    )
    print(header)
    print("-" * len(header))
    for spec, weights, layer in CASES:
        model = load_model(spec, device=args.device, weights=weights, quiet=True)
        device = model.device
        x = model.example_input(args.batch)
        infos = layers(model, receptive_field=False)
        ran = [i for i in infos if i.order is not None]
        depth = next(k for k, i in enumerate(ran) if i.name == layer) + 1
        t_cap, t_full = [], []
        with torch.no_grad(), preserved_state(model.module):
            for _ in range(2):  # warm-up
                capture(model, x, [layer])
                model.module(x)
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                synchronize(device)
                start = time.perf_counter()
                capture(model, x, [layer])
                synchronize(device)
                t_cap.append(time.perf_counter() - start)
                start = time.perf_counter()
                model.module(x)
                synchronize(device)
                t_full.append(time.perf_counter() - start)
            flops_cap = _flops(capture, model, x, [layer])
            flops_full = _flops(model.module, x)
        cap, full = statistics.median(t_cap) * 1e3, statistics.median(t_full) * 1e3
        print(
            f"{spec:<22} {layer:<16} {depth:>3}/{len(ran):<3} {cap:>11.1f} {full:>9.1f} "
            f"{cap / full:>10.2f} {flops_cap / flops_full:>10.2f}"
        )
    print(
        "time ratio = capture / full forward (median of interleaved repeats); FLOP ratio = the\n"
        "same for counted FLOPs. Early layers run at high resolution and are memory-bound, so\n"
        "their time share exceeds their FLOP share."
    )


if __name__ == "__main__":
    main()
