"""Toy 2-D data: four Gaussian blobs at the corners of a square (the course lab's data).

Class ``i`` is centred at ``CENTRES[i]``::

    class 1 (-1, +1)    class 3 (+1, +1)
    class 0 (-1, -1)    class 2 (+1, -1)
"""

from __future__ import annotations

import torch

__all__ = ["CENTRES", "corner_blobs"]

#: class ``i`` is centred at ``CENTRES[i]``
CENTRES: tuple[tuple[float, float], ...] = ((-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0))


def corner_blobs(
    n: int, generator: torch.Generator | int, *, spread: float = 0.35, shuffle: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points of the four blobs, balanced classes (class ``i % 4`` for point ``i``):
    ``(x (n, 2) float32, y (n,) int64)``.

    ``spread`` is each blob's standard deviation. The labels are ordered by class, or with
    ``shuffle`` permuted by ``generator``; the noise is drawn from ``generator`` after that
    (a seed stands for ``torch.Generator().manual_seed(seed)``). Two calls on one generator
    give two independent sets (a training set, then a test set).
    """
    gen = (
        generator
        if isinstance(generator, torch.Generator)
        else torch.Generator().manual_seed(int(generator))
    )
    labels = torch.arange(n) % len(CENTRES)
    y = labels[torch.randperm(n, generator=gen)] if shuffle else labels.sort().values
    x = torch.tensor(CENTRES, dtype=torch.float32)[y] + spread * torch.randn(n, 2, generator=gen)
    return x, y
