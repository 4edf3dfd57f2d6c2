"""Benchmark: one edge_probe + erf_probe pair with and without a shared LayerGeometry.

Without one, each probe traces the layers' inventory (receptive fields by gradients) and
searches each layer's smallest canvas itself; with one (what the hierarchy check passes to
its instruments), the second probe reads the first's trace. This script runs both side by
side in one process (interleaved repetitions), counts the traces and canvas searches, times
them and the whole pair, and checks that both give the same numbers.

    python scripts/bench_geometry.py [--repeats 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter

import numpy as np
import torch

import interp.layer_geometry as geometry_module
from interp import load_model
from interp.layer_geometry import LayerGeometry
from interp.probes.edges import edge_probe
from interp.probes.erf import erf_probe
from interp.probes.hierarchy import reference_crops

CASES = [
    (
        "simplecnn",
        {"weights": "none", "seed": 0, "input_size": 64},
        ["features.relu1", "features.relu3", "features.relu5"],
    ),
    ("efficientnet_lite0", {}, ["_blocks.1", "_blocks.3", "_blocks.5"]),
]

SPENT: Counter = Counter()  # seconds and calls of the geometry work


def _timed(name: str, fn):  # noqa: ANN001, ANN202
    def run(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        started = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name + " s"] += time.perf_counter() - started[0]
            SPENT[name + " cpu"] += time.process_time() - started[1]
            SPENT[name + " calls"] += 1

    return run


def _pair(model, layers, size, ref, shared: bool):  # noqa: ANN001, ANN202
    SPENT.clear()
    geometry = LayerGeometry(model) if shared else None
    started = time.perf_counter(), time.process_time()
    edges = edge_probe(
        model, layers, reference=ref, reference_images=len(ref), size=size, geometry=geometry
    )
    erf = erf_probe(model, layers, size=size, geometry=geometry)
    total = time.perf_counter() - started[0], time.process_time() - started[1]
    return total, dict(SPENT), edges, erf


def _same(a, b) -> bool:  # noqa: ANN001
    (ea, ra), (eb, rb) = a, b
    ok = all(np.array_equal(ea[n].osi, eb[n].osi, equal_nan=True) for n in ea) and list(ea) == list(
        eb
    )
    return ok and all(np.array_equal(ra[n].r2, rb[n].r2, equal_nan=True) for n in ra)


def _work(runs: list, unit: str) -> float:
    """Median over the runs of the geometry work (traces, canvas searches, digests)."""
    parts = ("inventory", "canvas", "digest")
    return statistics.median(sum(r[1].get(f"{p} {unit}", 0) for p in parts) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    geometry_module.layers = _timed("inventory", geometry_module.layers)
    geometry_module.smallest_canvas = _timed("canvas", geometry_module.smallest_canvas)
    geometry_module.weights_digest = _timed("digest", geometry_module.weights_digest)
    for spec, kwargs, layers in CASES:
        model = load_model(spec, device="cpu", quiet=True, **kwargs)
        size = int(model.input_size[0])
        ref = reference_crops(32, size)
        runs: dict[bool, list] = {False: [], True: []}
        for _ in range(args.repeats):
            for shared in (False, True):
                runs[shared].append(_pair(model, layers, size, ref, shared))
        same = _same(runs[False][0][2:], runs[True][0][2:])
        print(
            f"\n{spec} at {size} px, layers {layers}"
            f" ({args.threads} threads, {args.repeats} repeats)"
        )
        for shared in (False, True):
            spent = runs[shared][-1][1]

            wall = statistics.median(r[0][0] for r in runs[shared])
            cpu = statistics.median(r[0][1] for r in runs[shared])
            print(
                f"  {'shared geometry' if shared else 'each probe its own':<20}"
                f" pair {wall:6.2f} s wall {cpu:6.2f} s CPU |"
                f" traces {spent.get('inventory calls', 0)},"
                f" canvas searches {spent.get('canvas calls', 0)},"
                f" digests {spent.get('digest calls', 0)}:"
                f" {_work(runs[shared], 's'):5.2f} s wall {_work(runs[shared], 'cpu'):5.2f} s CPU"
            )
        print(f"  same numbers: {same}")


if __name__ == "__main__":
    main()
