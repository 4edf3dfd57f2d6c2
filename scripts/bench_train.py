"""Benchmark: fresh training to the accuracy targets, timed end to end.

    python scripts/bench_train.py            # partsworld (target >= 95%) and digits (>= 97%)

Runs `interp train --arch simplecnn` with its defaults (4 epochs; PartsWorld 20,000 images
at 64 px) into temporary run folders and prints wall time (data generation included) and
test accuracy. Not a test: these machines are noisy.
"""

from __future__ import annotations

import tempfile
import time

import torch

from interp.train import TrainConfig, train


def main() -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'data':<12} {'epochs':>6} {'seconds':>8} {'test acc':>9} {'target':>7}")
    for data, target in (("partsworld", 0.95), ("digits", 0.97)):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            metrics = train(TrainConfig(data=data), f"{out}/run", progress=False)
            seconds = time.perf_counter() - start
        print(
            f"{data:<12} {len(metrics['epochs']):>6} {seconds:>8.1f} "
            f"{metrics['test_acc']:>9.4f} {target:>7.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
