"""Benchmark: dataset examples over every block of efficientnet_lite0 against plain inference.

``interp.examples`` captures all 16 blocks in one truncated forward per batch (it stops after
the last block, so the head is skipped) and keeps each unit's top-9 images. This measures, in
one run and interleaved (median of the repeats), on the same images held in memory:

* plain inference (the whole network, logits);
* the examples pass (all 16 blocks, 1,808 units, k = 9, deduplicated by photo);
* the one-time receptive-field measurement examples needs for its crop boxes (independent of
  the number of images; pass ``receptive_fields=`` to reuse it).

    python scripts/bench_examples.py [--device auto|cpu|cuda] [--n 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from interp import load_model
from interp.activations import preserved_state
from interp.data.photos import PhotoCrops
from interp.dataset_examples import examples
from interp.device import cpu_allocator, synchronize
from interp.inventory import default_layers
from interp.inventory import layers as inventory


class _InMemory(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, sources: list[int]) -> None:
        self.images, self.sources = images, sources

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], -1

    def source(self, i: int) -> int:
        return self.sources[i]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = load_model("efficientnet_lite0", device=args.device)
    device = model.device
    crops = PhotoCrops(args.n, model.input_size[0])
    data = _InMemory(
        torch.stack([crops[i][0] for i in range(args.n)]), [crops.source(i) for i in range(args.n)]
    )
    layers = default_layers(model)

    def rf() -> tuple[float, dict[str, int]]:
        start = time.perf_counter()
        found = inventory(model, names=layers, input_size=model.input_size)
        return time.perf_counter() - start, {i.name: i.rf_size[0] for i in found if i.rf_size}

    def inference() -> float:
        start = time.perf_counter()
        with torch.no_grad(), preserved_state(model.module):
            for s in range(0, args.n, args.batch):
                model(model.normalize(data.images[s : s + args.batch]).to(device))
        synchronize(device)
        return time.perf_counter() - start

    rf_time, rfs = rf()
    units = 0

    def pass_() -> float:
        nonlocal units
        start = time.perf_counter()
        res = examples(
            model, data, layers, k=9, batch_size=args.batch, receptive_fields=rfs, progress=False
        )
        synchronize(device)
        units = sum(r.units for r in res.values())
        return time.perf_counter() - start

    inference()  # warm-up
    times: dict[str, list[float]] = {"inference": [], "examples": [], "rf": [rf_time]}
    # plain inference runs with the CPU allocator setting the instrument enters itself
    # (freed memory kept: interp.device.cpu_allocator), so the ratio compares the work
    with cpu_allocator(device):
        for _ in range(args.repeats):
            times["inference"].append(inference())
            times["examples"].append(pass_())
            times["rf"].append(rf()[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"efficientnet_lite0, {len(layers)} blocks ({units} units), {args.n} photo crops at "
        f"{model.input_size[0]} px in memory, batch {args.batch}, {device}, torch threads "
        f"{torch.get_num_threads()}, median of {args.repeats}"
    )
    print(f"{'job':<40} {'seconds':>8} {'images/s':>9} {'x inference':>12}")
    rows = (
        ("plain inference (whole network)", med["inference"]),
        ("examples pass (16 blocks, top-9)", med["examples"]),
        ("receptive fields (once per model)", med["rf"]),
        ("examples incl. receptive fields", med["examples"] + med["rf"]),
    )
    for label, t in rows:
        print(f"{label:<40} {t:>8.2f} {args.n / t:>9.1f} {t / med['inference']:>12.2f}")


if __name__ == "__main__":
    main()
