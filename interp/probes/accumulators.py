"""The dissection's streaming accumulators: the exact top-quantile of each unit over a stream of
activation maps (:class:`StreamingQuantile`, pass 1) and the intersection and union of each
unit's thresholded, upsampled maps with every concept's masks (:class:`IoUAccumulator`, pass
2), with the bilinear :func:`upsample` they share (:mod:`interp.probes.dissect` runs them).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch

from ..data.concepts import ConceptItem

__all__ = ["IoUAccumulator", "StreamingQuantile", "upsample"]


@functools.lru_cache(maxsize=64)
def _interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``(n_out, n_in)`` weights of 1-D linear interpolation with ``align_corners=False``."""
    dst = torch.arange(n_out, dtype=torch.float64)
    src = ((dst + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    i1 = (i0 + 1).clamp(max=n_in - 1)
    lam = src - i0
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    m[rows, i0] += 1 - lam
    m[rows, i1] += lam
    return m.float()


def upsample(act: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``(B, C, h, w)`` maps to ``size`` x ``size`` (``align_corners=False``,
    as ``F.interpolate``; the same values within 1e-6) as two small matrix products, several
    times faster than ``F.interpolate`` on CPU for the small maps of deep layers."""
    h, w = act.shape[-2:]
    if (h, w) == (size, size):
        return act
    rh = _interp_matrix(h, size).to(act.device)
    rw = _interp_matrix(w, size).to(act.device)
    return rh @ (act @ rw.T)


class StreamingQuantile:
    """The exact top-``quantile`` value of each unit over a stream of ``(B, C, H, W)`` maps.

    Keeps the ``k`` largest values per unit seen so far (``k = ceil(quantile * total)``,
    ``total`` the number of values the stream will hold). With ``k > max_topk`` each position
    is kept with probability ``max_topk / k`` (same positions for every unit, fixed seed) and the
    quantile is taken over the kept values.
    """

    def __init__(
        self,
        units: int,
        total: int,
        quantile: float,
        max_topk: int = 100_000,
        seed: int = 0,
        max_plateau: float = 10.0,
    ):
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        self.quantile = quantile
        self.max_plateau = max_plateau
        self.k_full = max(1, math.ceil(quantile * total))
        self.rate = min(1.0, max_topk / self.k_full)
        # twice k: enough to tell how far a plateau of values tied at the threshold reaches
        self.capacity = 2 * (self.k_full if self.rate == 1.0 else int(max_topk * 1.2) + 16)
        self.kept = 0
        self.buffer = torch.empty(units, 0)
        # running maximum per unit and how many values equal it (a saturated plateau's size)
        self.top = torch.full((units,), -math.inf)
        self.at_top = torch.zeros(units, dtype=torch.long)
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, act: torch.Tensor) -> None:
        c = act.shape[1]
        vals = act.detach().float().transpose(0, 1).reshape(c, -1)
        if self.rate < 1.0:
            keep = torch.rand(vals.shape[1], generator=self.generator) < self.rate
            vals = vals[:, keep.to(vals.device)]
        self.kept += vals.shape[1]
        if self.buffer.device != vals.device:
            self.buffer = self.buffer.to(vals.device)
            self.top, self.at_top = self.top.to(vals.device), self.at_top.to(vals.device)
        if vals.shape[1]:
            peak = vals.amax(dim=1)
            count = (vals == peak[:, None]).sum(dim=1)
            self.at_top = torch.where(
                peak > self.top, count, self.at_top + torch.where(peak == self.top, count, 0)
            )
            self.top = torch.maximum(self.top, peak)
        merged = torch.cat([self.buffer, vals], dim=1)
        if merged.shape[1] > self.capacity:
            merged = merged.topk(self.capacity, dim=1, sorted=False).values
        self.buffer = merged

    def merge(self, others: list[StreamingQuantile]) -> None:
        """Fold other ranks' streams into this one: the union's top values, its maximum and
        how often it occurs, the number of values kept (exact for the unsampled quantile)."""
        dev = self.buffer.device
        merged = torch.cat([self.buffer, *[o.buffer.to(dev) for o in others]], dim=1)
        if merged.shape[1] > self.capacity:
            merged = merged.topk(self.capacity, dim=1, sorted=False).values
        self.buffer = merged
        tops = torch.stack([self.top, *[o.top.to(dev) for o in others]])
        counts = torch.stack([self.at_top, *[o.at_top.to(dev) for o in others]])
        self.top = tops.max(dim=0).values
        self.at_top = torch.where(tops == self.top[None], counts, 0).sum(dim=0)
        self.kept += sum(o.kept for o in others)

    @property
    def sampled(self) -> bool:
        return self.rate < 1.0

    def _k(self) -> int:
        k = self.k_full if not self.sampled else max(1, math.ceil(self.quantile * self.kept))
        return min(k, self.buffer.shape[1])

    def result(self) -> torch.Tensor:
        """Per-unit threshold ``T``: the k-th largest value (the read of every streaming
        accumulator is ``result()``)."""
        if self.kept == 0:
            raise RuntimeError("no values were streamed")
        return self.buffer.topk(self._k(), dim=1).values[:, -1]

    def inclusive(self) -> torch.Tensor:
        """Per unit: whether values equal to ``T`` belong to its region.

        They do when the values ``>= T`` number at most ``2k``, and when ``T`` is the unit's
        maximum (a saturated plateau, as ReLU6 gives) held by at most ``max_plateau * k``
        values; otherwise only values ``> T`` do: a unit that is zero almost everywhere is not
        credited with every zero, and one saturated over more than ``max_plateau`` times the
        quantile (5% of positions by default) fires too broadly to localize anything.
        """
        t = self.result()
        k = self._k()
        at_least = (self.buffer >= t[:, None]).sum(dim=1)
        full = self.buffer.shape[1] >= self.capacity
        few = ~((at_least >= self.buffer.shape[1]) & full) & (at_least <= 2 * k)
        saturated = (t == self.top) & (self.at_top <= self.max_plateau * k)
        return few | saturated


class IoUAccumulator:
    """Sums of ``|A ∩ M|``, ``|A|`` per labelled category and ``|M|`` over a stream.

    Args:
        thresholds: ``(C,)`` per-unit thresholds.
        concept_category: ``(K,)`` category index of every concept.
        n_categories: number of categories.
        mask_size: size the activation maps are upsampled to.
        top_images: how many top images (by the unit's maximum activation) to remember.
    """

    def __init__(
        self,
        thresholds: torch.Tensor,
        concept_category: np.ndarray,
        n_categories: int,
        mask_size: int,
        top_images: int = 8,
        inclusive: torch.Tensor | None = None,
    ) -> None:
        self.t = thresholds.float()
        self.inclusive = (
            torch.zeros(len(self.t), dtype=torch.bool) if inclusive is None else inclusive.bool()
        ).to(self.t.device)
        # ">= T" is "> the float just below T": one comparison serves both kinds of unit
        below = torch.nextafter(self.t, torch.tensor(-math.inf, device=self.t.device))
        self._cut = torch.where(self.inclusive, below, self.t)[None, :, None, None]
        dev = self.t.device
        units = len(self.t)
        k = len(concept_category)
        self.mask_size = mask_size
        self.category = torch.as_tensor(concept_category, dtype=torch.long, device=dev)
        self.inter = torch.zeros(units, k, dtype=torch.float64, device=dev)
        self.act_area = torch.zeros(units, n_categories, dtype=torch.float64, device=dev)
        self.mask_area = torch.zeros(k, dtype=torch.float64, device=dev)
        self.m = top_images
        self.top_val = torch.full((units, 0), -math.inf, device=dev)
        self.top_idx = torch.zeros((units, 0), dtype=torch.long, device=dev)

    def update(
        self, act: torch.Tensor, items: Sequence[ConceptItem], indices: Sequence[int]
    ) -> None:
        """Add a batch: ``act`` ``(B, C, h, w)``, its items (masks) and dataset indices."""
        dev = self.t.device
        act = act.float().to(dev)
        s = self.mask_size
        labelled = torch.stack([it.labelled for it in items]).to(dev, torch.float64)
        # a chunk of images at a time keeps the upsampled maps within ~2**22 values (16 MiB)
        step = max(1, (1 << 22) // (act.shape[1] * s * s))
        for start in range(0, len(items), step):
            chunk = slice(start, start + step)
            up = upsample(act[chunk], s)
            above = (up > self._cut).flatten(2).float()  # (b, C, S*S)
            del up
            self.act_area += above.sum(dim=2).double().T @ labelled[chunk]
            for b, it in enumerate(items[chunk]):
                if len(it.concepts) == 0:
                    continue
                masks = it.masks.to(dev).flatten(1).float()  # (P, S*S)
                idx = it.concepts.to(dev)
                self.inter.index_add_(1, idx, (above[b] @ masks.T).double())
                self.mask_area.index_add_(0, idx, masks.sum(dim=1).double())
        peak = act.flatten(2).amax(dim=2).T  # (C, B)
        ids = torch.as_tensor(list(indices), device=dev).expand_as(peak)
        vals = torch.cat([self.top_val, peak], dim=1)
        idxs = torch.cat([self.top_idx, ids], dim=1)
        keep = vals.topk(min(self.m, vals.shape[1]), dim=1)
        self.top_val, self.top_idx = keep.values, idxs.gather(1, keep.indices)

    def merge(self, others: list[IoUAccumulator]) -> None:
        """Add other ranks' counts; keep the overall top images (ties by dataset index)."""
        dev = self.t.device
        for o in others:
            self.inter += o.inter.to(dev)
            self.act_area += o.act_area.to(dev)
            self.mask_area += o.mask_area.to(dev)
        vals = torch.cat([self.top_val, *[o.top_val.to(dev) for o in others]], dim=1)
        idxs = torch.cat([self.top_idx, *[o.top_idx.to(dev) for o in others]], dim=1)
        by_idx = torch.argsort(idxs, dim=1, stable=True)
        vals, idxs = vals.gather(1, by_idx), idxs.gather(1, by_idx)
        order = torch.argsort(vals, dim=1, descending=True, stable=True)[:, : self.m]
        self.top_val, self.top_idx = vals.gather(1, order), idxs.gather(1, order)

    def result(self) -> np.ndarray:
        """``(C, K)`` IoU of every unit with every concept (0 where the union is empty)."""
        union = self.act_area[:, self.category] + self.mask_area[None, :] - self.inter
        iou = torch.where(union > 0, self.inter / union.clamp_min(1e-12), torch.zeros_like(union))
        return iou.cpu().numpy()
