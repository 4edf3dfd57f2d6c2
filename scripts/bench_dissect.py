"""Benchmark: Network Dissection throughput next to plain inference, measured in one run.

Dissection of every default hierarchy layer of efficientnet_lite0 (the stem's activation and
all 16 blocks, 1,840 units) over PartsWorld at 64 px: two streaming passes (thresholds, then
IoU against 38 concept masks), including drawing the images and masks. Next to it, in the
same process and interleaved (median of the repeats):

* plain inference on the same images already in memory (the model alone);
* plain inference including drawing the images (what any pass over PartsWorld pays).

    python scripts/bench_dissect.py [--device auto|cpu|cuda] [--n 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from interp import load_model
from interp.activations import preserved_state
from interp.data.concepts import PartsWorldConcepts
from interp.device import cpu_allocator, synchronize
from interp.probes.dissect import dissect
from interp.probes.hierarchy import default_hierarchy_layers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=256, help="images [256]")
    parser.add_argument("--size", type=int, default=64, help="image size [64]")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_model("efficientnet_lite0", device=args.device)
    device = model.device
    layers = default_hierarchy_layers(model)
    data = PartsWorldConcepts(n=args.n, size=args.size)
    images = torch.stack([data.item(i, masks=False).image for i in range(len(data))])

    def inference(draw: bool) -> float:
        start = time.perf_counter()
        with torch.no_grad(), preserved_state(model.module):
            for s in range(0, args.n, args.batch):
                if draw:
                    batch = torch.stack(
                        [
                            data.item(i, masks=False).image
                            for i in range(s, min(args.n, s + args.batch))
                        ]
                    )
                else:
                    batch = images[s : s + args.batch]
                model(model.normalize(batch).to(device))
        synchronize(device)
        return time.perf_counter() - start

    def dissection() -> tuple[float, int]:
        start = time.perf_counter()
        res = dissect(model, data, layers, batch_size=args.batch, progress=False)
        synchronize(device)
        return time.perf_counter() - start, sum(d.units for d in res.values())

    inference(False)  # warm-up
    times: dict[str, list[float]] = {"inference": [], "inference+draw": [], "dissect": []}
    units = 0
    # plain inference runs with the CPU allocator setting the instrument enters itself
    # (freed memory kept: interp.device.cpu_allocator), so the ratio compares the work
    with cpu_allocator(device):
        for _ in range(args.repeats):
            times["inference"].append(inference(False))
            times["inference+draw"].append(inference(True))
            t, units = dissection()
            times["dissect"].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"efficientnet_lite0, {len(layers)} layers ({units} units), {args.n} PartsWorld images "
        f"at {args.size} px, batch {args.batch}, {device}, torch threads "
        f"{torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'job':<34} {'seconds':>8} {'images/s':>9} {'x inference':>12}")
    for key, label in (
        ("inference", "plain inference (images in memory)"),
        ("inference+draw", "plain inference + drawing images"),
        ("dissect", "dissection (2 passes, all layers)"),
    ):
        print(
            f"{label:<34} {med[key]:>8.2f} {args.n / med[key]:>9.1f} "
            f"{med[key] / med['inference']:>12.1f}"
        )
    print(
        f"dissection / (2 x (inference + drawing)): "
        f"{med['dissect'] / (2 * med['inference+draw']):.2f} (the cost beyond two plain passes)"
    )


if __name__ == "__main__":
    main()
