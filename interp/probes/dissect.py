"""Network Dissection (Bau et al. 2017) on any dataset with concept masks, plus class selectivity.

For every unit (channel) of every requested layer:

1. **threshold** ``T`` = the top ``quantile`` (default 0.5%) of the unit's activations over the
   whole dataset (every spatial position of every image). The quantile is kept exactly by a
   streaming top-k per unit (``k = quantile * images * positions``), so memory is
   ``quantile`` of the activations, not all of them; when ``k`` would pass ``max_topk`` the
   values are a fixed random subsample of positions (an unbiased estimate of the
   quantile);
2. **IoU**: the activation map is upsampled (bilinear, :func:`upsample`) to the mask size and
   thresholded,
   ``A = up > T`` (``up >= T`` when the values tied at ``T`` are few, see
   :meth:`StreamingQuantile.inclusive`: a plateau of equal top values, as a saturated ReLU6
   gives, is the region, but a unit zero almost everywhere is not credited with every zero);
   for every concept ``c`` of category ``k``,
   ``IoU = sum |A ∩ M_c| / sum |A ∪ M_c|`` over the images labelled for category ``k``;
3. the unit's label is its highest-IoU concept; it is a **detector** of that concept when the
   IoU passes ``iou_threshold`` (default 0.04).

The data are streamed twice — thresholds, then IoU — and each pass runs every layer at once
(one truncated forward pass per batch, stopped after the deepest layer asked for). The first
pass also accumulates the per-class mean of every unit's spatially averaged, rectified
activation, from which the **class selectivity index** (Morcos et al. 2018) follows:
``SI = (mu_max - mu_rest) / (mu_max + mu_rest)``, ``mu_rest`` the mean over the other classes.

Memory bound: ``sum over layers of units * k * 4`` bytes for the thresholds (``k`` as above,
at most ``max_topk``), plus ``units * concepts`` counters and at most 2**22 upsampled values
(16 MiB) at a time.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..activations import ActivationCapture, capture, resolve_layers
from ..checks import check_finite, check_fraction, check_int
from ..data.concepts import ConceptData, ConceptDataError, ConceptItem, load_concepts
from ..device import HalveOnOOM, default_batch, keeps_freed_memory, use_bf16
from ..inventory import default_layers
from ..models.base import Model
from ..models.registry import as_model
from ..streaming import Stream, object_state, restore_object
from ..utils import atomic_path, atomic_write_text, prepare_output

__all__ = [
    "Dissection",
    "LayerDissection",
    "StreamingQuantile",
    "IoUAccumulator",
    "dissect",
    "selectivity_index",
    "upsample",
]


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


def selectivity_index(class_means: np.ndarray) -> np.ndarray:
    """Class selectivity index per unit from ``(units, classes)`` non-negative class means.

    ``(mu_max - mu_rest) / (mu_max + mu_rest)``: 0 when every class drives the unit equally,
    1 when only one does. Units silent for every class get 0.
    """
    m = np.clip(np.asarray(class_means, dtype=np.float64), 0, None)
    if m.shape[1] < 2:
        raise ValueError("class selectivity needs at least two classes")
    top = m.max(axis=1)
    rest = (m.sum(axis=1) - top) / (m.shape[1] - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        si = np.where(top + rest > 0, (top - rest) / (top + rest), 0.0)
    return si


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


@dataclass
class LayerDissection:
    """Dissection of one layer: per-unit thresholds, IoU with every concept, selectivity."""

    layer: str
    concepts: list[str]
    categories: list[str]
    concept_category: np.ndarray  # (K,) index into categories
    thresholds: np.ndarray  # (C,)
    iou: np.ndarray  # (C, K)
    iou_threshold: float
    quantile: float
    top_images: np.ndarray  # (C, m) dataset indices, highest maximum activation first
    class_means: np.ndarray | None = None  # (C, classes) of the rectified spatial mean
    inclusive: np.ndarray | None = None  # (C,) whether values equal to the threshold count
    info: dict[str, Any] = field(default_factory=dict)

    def region(self, up: torch.Tensor, unit: int) -> torch.Tensor:
        """The unit's region in an upsampled activation map ``up`` of that unit."""
        t = float(self.thresholds[unit])
        inclusive = self.inclusive is not None and bool(self.inclusive[unit])
        return up >= t if inclusive else up > t

    @property
    def units(self) -> int:
        return len(self.thresholds)

    @property
    def best_concept(self) -> np.ndarray:
        """Index of every unit's highest-IoU concept."""
        return self.iou.argmax(axis=1)

    @property
    def best_iou(self) -> np.ndarray:
        return self.iou.max(axis=1)

    @property
    def is_detector(self) -> np.ndarray:
        """Whether each unit's best IoU passes the detector threshold."""
        return self.best_iou > self.iou_threshold

    @property
    def unit_category(self) -> np.ndarray:
        """Category index of every unit's label, -1 for units that are not detectors."""
        cat = self.concept_category[self.best_concept]
        return np.where(self.is_detector, cat, -1)

    def labels(self) -> list[str | None]:
        """Every unit's concept (``category:name``) or ``None`` when it detects nothing."""
        return [
            self.concepts[c] if d else None
            for c, d in zip(self.best_concept, self.is_detector, strict=True)
        ]

    @property
    def selectivity(self) -> np.ndarray | None:
        """Class selectivity index per unit (``None`` without class labels)."""
        if self.class_means is None or self.class_means.shape[1] < 2:
            return None
        return selectivity_index(self.class_means)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per category: detector units and unique concepts detected."""
        cats = self.unit_category
        best = self.best_concept
        out = {}
        for i, name in enumerate(self.categories):
            sel = cats == i
            out[name] = {"units": int(sel.sum()), "unique": int(len(np.unique(best[sel])))}
        return out

    def summary(self) -> dict[str, Any]:
        """JSON-friendly per-layer summary."""
        counts = self.counts()
        si = self.selectivity
        top = np.argsort(-self.best_iou)[:5]
        return {
            "layer": self.layer,
            "units": self.units,
            "detectors": int(self.is_detector.sum()),
            "by_category": counts,
            "fraction_by_category": {
                k: round(v["units"] / max(1, self.units), 4) for k, v in counts.items()
            },
            "best_iou_quantiles_50_90_max": np.quantile(self.best_iou, [0.5, 0.9, 1.0])
            .round(4)
            .tolist(),
            "top_units": [
                {
                    "unit": int(u),
                    "concept": self.concepts[self.best_concept[u]],
                    "iou": round(float(self.best_iou[u]), 4),
                }
                for u in top
            ],
            "selectivity": None
            if si is None
            else {
                "mean": round(float(si.mean()), 4),
                "quantiles_10_50_90": np.quantile(si, [0.1, 0.5, 0.9]).round(4).tolist(),
                "fraction_above_0.5": round(float((si > 0.5).mean()), 4),
            },
            **self.info,
        }


def _fingerprint(model: Model) -> float:
    """A cheap identity of the weights (sum of every parameter), for checkpoint keys."""
    with torch.no_grad():
        return round(float(sum(p.double().sum() for p in model.module.parameters())), 6)


class Dissection(dict):
    """What :func:`dissect` returns: ``{layer: LayerDissection}`` plus ``skipped`` (layer ->
    why) and the data's name.

    ``to_dict()`` is the JSON of ``dissection.json`` (every layer's summary); ``save(folder)``
    writes it and the arrays themselves (``dissection.npz``: thresholds, IoU, top images,
    class means), which ``Dissection.load(folder)`` reads back. The detectors-by-category
    chart: :mod:`interp.views.dissect_figures`.
    """

    STATE = "dissection.npz"
    DOC = "dissection.json"
    _ARRAYS = ("thresholds", "inclusive", "iou", "top_images", "class_means")

    def __init__(self, *args: Any, skipped: dict[str, str] | None = None, data: str = ""):
        super().__init__(*args)
        self.skipped = dict(skipped or {})
        self.data = data

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "skipped": self.skipped,
            "layers": [d.summary() for d in self.values()],
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """``{"LAYER/KEY": array}`` of every layer's per-unit arrays (for an ``.npz``)."""
        out: dict[str, np.ndarray] = {}
        for name, d in self.items():
            for key in self._ARRAYS:
                value = getattr(d, key)
                if value is not None:
                    out[f"{name}/{key}"] = np.asarray(value)
        return out

    def meta(self) -> dict[str, Any]:
        """What :meth:`arrays` leaves out (the concepts and settings, shared by the layers)."""
        first = next(iter(self.values()))
        return {
            "layers": list(self),
            "concepts": first.concepts,
            "categories": first.categories,
            "concept_category": np.asarray(first.concept_category).tolist(),
            "iou_threshold": first.iou_threshold,
            "quantile": first.quantile,
            "skipped": self.skipped,
            "data": self.data,
            "info": {name: d.info for name, d in self.items()},
        }

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], meta: dict[str, Any], layers: Sequence[str]
    ) -> Dissection:
        """The inverse of :meth:`arrays` and :meth:`meta`, for ``layers``."""
        out = cls(skipped=meta["skipped"], data=meta["data"])
        for name in layers:
            out[name] = LayerDissection(
                layer=name,
                concepts=meta["concepts"],
                categories=meta["categories"],
                concept_category=np.asarray(meta["concept_category"]),
                thresholds=arrays[f"{name}/thresholds"],
                iou=arrays[f"{name}/iou"],
                iou_threshold=meta["iou_threshold"],
                quantile=meta["quantile"],
                top_images=arrays[f"{name}/top_images"],
                class_means=arrays.get(f"{name}/class_means"),
                inclusive=arrays.get(f"{name}/inclusive"),
                info=dict(meta.get("info", {}).get(name, {})),
            )
        return out

    def save(self, folder: str | Path) -> list[Path]:
        """``dissection.npz`` and ``dissection.json`` in ``folder`` (atomic writes); returns
        their paths. The figure: :func:`interp.views.dissect_figures.save_dissection`."""
        folder = prepare_output(folder)
        npz = folder / self.STATE
        with atomic_path(npz, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **self.arrays())
        doc = folder / self.DOC
        atomic_write_text(doc, json.dumps({**self.to_dict(), "meta": self.meta()}, indent=1))
        return [npz, doc]

    @classmethod
    def load(cls, folder: str | Path) -> Dissection:
        """A dissection written by :meth:`save`."""
        folder = Path(folder)
        meta = json.loads((folder / cls.DOC).read_text())["meta"]
        with np.load(folder / cls.STATE) as z:
            arrays = {k: z[k] for k in z.files}
        return cls.from_arrays(arrays, meta, meta["layers"])


class _Items(torch.utils.data.Dataset):
    """This rank's items (all of them in a single process) after the first ``skip``, with
    their dataset indices."""

    def __init__(self, data: ConceptData, masks: bool, indices: list[int]) -> None:
        self.data, self.masks = data, masks
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, ConceptItem]:
        j = self.indices[i]
        return j, self.data.item(j, masks=self.masks)


def _collate(batch: list[tuple[int, ConceptItem]]) -> tuple[list[int], list[ConceptItem]]:
    return [b[0] for b in batch], [b[1] for b in batch]


def stream_activations(
    model: Model,
    layers: Sequence[str],
    data: ConceptData,
    *,
    masks: bool,
    batch_size: int = 32,
    precision: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "",
    indices: Sequence[int] | None = None,
) -> Iterator[tuple[list[int], list[ConceptItem], dict[str, torch.Tensor]]]:
    """Yield ``(indices, items, {layer: activations})`` over ``data``, one truncated pass per
    batch for all ``layers``. Hooks and the model's state are restored when the iterator ends
    or is closed. A batch that runs out of device memory is split in halves (said on stderr)
    and the smaller size kept. ``indices``: the items to pass over (default: all of them)."""
    items = list(range(len(data))) if indices is None else list(indices)
    loader = torch.utils.data.DataLoader(
        _Items(data, masks, items),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    device = model.device
    bf16 = use_bf16(precision, device)
    halver = HalveOnOOM(batch_size, "batch of images")
    with torch.no_grad(), ActivationCapture(model.module, list(layers)) as cap:
        for indices, items in tqdm(loader, desc=desc, disable=not progress, leave=False):
            # NCHW on purpose: channels_last input speeds up the forward (bench_speedups) but
            # slows the upsampling and IoU more (bench_dissect: 15.7-16.0x vs 13.0-14.3x)
            x = model.normalize(torch.stack([it.image for it in items])).to(device)

            def work(a: int, b: int, x: torch.Tensor = x) -> dict[str, torch.Tensor]:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    return cap.run(x[a:b])

            for a, b, acts in halver.chunks(len(items), work):  # halved on out-of-memory
                yield indices[a:b], items[a:b], acts


def _spatial_layers(
    model: Model, layers: Sequence[str], data: ConceptData
) -> tuple[list[str], dict[str, str]]:
    """Split ``layers`` into those with 4-D outputs and the rest (with the reason)."""
    item = data.item(0, masks=False)
    with torch.no_grad():
        acts = capture(model, model.normalize(item.image[None]).to(model.device), list(layers))
    keep, skipped = [], {}
    for name, a in acts.items():
        if isinstance(a, torch.Tensor) and a.dim() == 4:
            keep.append(name)
        else:
            shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            skipped[name] = f"output {shape} is not a 4-D (N, C, H, W) map"
    return keep, skipped


@keeps_freed_memory
def dissect(
    model: Model,
    data: ConceptData | str = "partsworld",
    layers: str | Sequence[str] | None = None,
    *,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    batch_size: int | None = None,
    top_images: int = 8,
    max_topk: int = 100_000,
    precision: str = "auto",
    num_workers: int = 0,
    stream: Stream | None = None,
    progress: bool = True,
) -> Dissection:
    """Network Dissection of ``layers`` over ``data`` (see the module docstring).

    Args:
        model: the model (its preprocessing turns the [0, 1] images into input).
        data: a :class:`~interp.data.concepts.ConceptData` or a spec (``partsworld``,
            ``broden:PATH``).
        layers: layer names (default: the network's blocks, as the atlas uses).
        quantile: the activation quantile a unit's region is cut at (0.005: the top 0.5%).
        iou_threshold: a unit detects its best concept when the IoU exceeds this.
        batch_size: images per forward pass (default 32 on CPU, 128 on CUDA; halved on
            out-of-memory).
        top_images: images kept per unit (highest maximum activation), for figures.
        max_topk: bound on values kept per unit for the quantile (see :class:`StreamingQuantile`).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
        num_workers: DataLoader workers producing images and masks.
        stream: the run this dissection is part of (:class:`~interp.streaming.Stream`):
            which items are this shard's, how the shards' passes are merged (exactly, after
            each pass) and where the running state is kept. The default is one process with
            nothing kept; the pipeline's :class:`~interp.pipeline.sharding.RankStream` shards
            over ``torchrun`` ranks and checkpoints every minute and between the passes, so
            that an interrupted run with the same model, data and settings resumes (a
            finished state, kept for the hierarchy's stages, is reused whole).
        progress: show progress bars.

    Returns:
        ``{layer: LayerDissection}`` (a :class:`Dissection`); layers whose output is not a
        4-D map are skipped and listed, with the reason, in its ``skipped``.
    """
    check_fraction("quantile", quantile)
    check_fraction("iou_threshold", iou_threshold)
    check_int("batch_size", batch_size, optional=True)
    check_int("top_images", top_images)
    check_int("max_topk", max_topk)
    model = as_model(model)
    if isinstance(data, str):
        data = load_concepts(data, size=model.input_size[0])
    if layers is None:
        layers = default_layers(model)
    names = resolve_layers(model, layers)
    names, skipped = _spatial_layers(model, names, data)
    if not names:
        raise ConceptDataError(
            "none of the layers has a 4-D (N, C, H, W) output, which dissection needs: "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    n = len(data)
    n_classes = len(data.class_names)
    batch_size = batch_size or default_batch(model.device, 32, 128)
    kw = {"batch_size": batch_size, "precision": precision, "num_workers": num_workers}

    stream = stream or Stream()
    mine = stream.shard(n)
    state = _PassState(n_classes)
    saved = stream.resume(
        {
            "model": [model.name, _fingerprint(model)],
            "data": [data.name, n, data.image_size, data.mask_size],
            "layers": names,
            "settings": [quantile, iou_threshold, top_images, max_topk, precision],
        }
    )
    start_pass, done = (int(saved["pass"]), int(saved["done"])) if saved else (1, 0)
    for name, st in saved.get("quant", {}).items():
        state.quant[name] = StreamingQuantile(1, 1, quantile, max_topk)
        restore_object(state.quant[name], st)
    if saved:
        state.sums, state.class_count = dict(saved["sums"]), saved["class_count"]
        if progress and start_pass == 3:
            print("dissect: reusing the finished dissection of an interrupted run", file=sys.stderr)
        elif progress:
            print(f"dissect: resuming pass {start_pass} after {done} images", file=sys.stderr)

    passes = {"model": model, "names": names, "data": data, "progress": progress, **kw}
    if start_pass == 1:
        _threshold_pass(state, stream, mine[done:], done, quantile, max_topk, **passes)
        done = 0
        stream.save(lambda: state.snapshot(2, 0), now=True)  # a resumed run starts at pass 2

    for name, q in state.quant.items():  # NaN activations would make every threshold NaN
        check_finite(torch.as_tensor(q.result()), f"{name}'s activation thresholds")
    cat_of = data.category_of()
    accs = {
        name: IoUAccumulator(
            q.result(),
            cat_of,
            len(data.categories),
            data.mask_size,
            top_images,
            inclusive=q.inclusive(),
        )
        for name, q in state.quant.items()
    }
    for name, st in saved.get("accs", {}).items() if start_pass >= 2 else ():
        restore_object(accs[name], st)
    if start_pass <= 2:
        done = _iou_pass(state, stream, accs, mine[done:], done, **passes)
    stream.finish(lambda: state.snapshot(3, done, accs))  # this shard's finished pass 2

    if stream.distributed:
        gathered = stream.gather({n: a for n, a in accs.items()})
        for name, acc in accs.items():
            acc.merge([g[name] for i, g in enumerate(gathered) if i != stream.index])
    return _results(state, accs, names, data, skipped, quantile, iou_threshold)


class _PassState:
    """The running state of the first pass, kept between passes and in checkpoints: the
    quantile streams and the per-class activation sums of every layer."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.quant: dict[str, StreamingQuantile] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.class_count = torch.zeros(max(1, n_classes), dtype=torch.float64)

    def snapshot(
        self, pass_no: int, count: int, accs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "pass": pass_no,
            "done": count,
            "quant": {k: object_state(q) for k, q in self.quant.items()},
            "sums": self.sums,
            "class_count": self.class_count,
            "accs": {k: object_state(a) for k, a in (accs or {}).items()},
        }


def _threshold_pass(
    state: _PassState,
    stream: Stream,
    indices: Sequence[int],
    done: int,
    quantile: float,
    max_topk: int,
    *,
    model: Model,
    names: list[str],
    data: ConceptData,
    progress: bool,
    **kw: Any,
) -> None:
    """Pass 1: each unit's threshold (exact streaming quantile) and its class means (for
    selectivity), over ``indices`` (after ``done`` items of this shard); merged exactly over
    the shards."""
    n, n_classes = len(data), state.n_classes
    for _, items, acts in stream_activations(
        model,
        names,
        data,
        masks=False,
        progress=progress,
        desc="dissect 1/2",
        indices=indices,
        **kw,
    ):
        labels = torch.tensor([it.label for it in items])
        for name, a in acts.items():
            a = a.float()
            if name not in state.quant:
                b, c, h, w = a.shape
                state.quant[name] = StreamingQuantile(c, n * h * w, quantile, max_topk, seed=0)
                state.sums[name] = torch.zeros(c, max(1, n_classes), dtype=torch.float64)
            state.quant[name].update(a)
            if n_classes and (labels >= 0).all():
                means = a.clamp_min(0).mean(dim=(2, 3)).double().cpu()  # (B, C)
                state.sums[name].index_add_(1, labels, means.T)
        if n_classes and (labels >= 0).all():
            state.class_count.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64))
        done += len(items)
        stream.save(lambda done=done: state.snapshot(1, done))

    if stream.distributed:  # exact merge of every shard's first pass
        quant, sums = state.quant, state.sums
        gathered = stream.gather(
            {n: (quant[n], sums[n]) for n in quant} | {"__count": state.class_count}
        )
        others = [g for i, g in enumerate(gathered) if i != stream.index]
        for name in quant:
            quant[name].merge([g[name][0] for g in others])
            sums[name] = torch.stack([g[name][1] for g in gathered]).sum(dim=0)
        state.class_count = torch.stack([g["__count"] for g in gathered]).sum(dim=0)


def _iou_pass(
    state: _PassState,
    stream: Stream,
    accs: dict[str, IoUAccumulator],
    indices: Sequence[int],
    done: int,
    *,
    model: Model,
    names: list[str],
    data: ConceptData,
    progress: bool,
    **kw: Any,
) -> int:
    """Pass 2: every unit's IoU with every concept, over ``indices`` (after ``done`` items of
    this shard); returns the shard's items done."""
    for indices_, items, acts in stream_activations(
        model, names, data, masks=True, progress=progress, desc="dissect 2/2", indices=indices, **kw
    ):
        for name, a in acts.items():
            accs[name].update(a, items, indices_)
        done += len(items)
        stream.save(lambda done=done: state.snapshot(2, done, accs))
    return done


def _results(
    state: _PassState,
    accs: dict[str, IoUAccumulator],
    names: list[str],
    data: ConceptData,
    skipped: dict[str, str],
    quantile: float,
    iou_threshold: float,
) -> Dissection:
    """The :class:`Dissection` of the finished (merged) passes."""
    results = Dissection(skipped=skipped, data=data.name)
    class_count = state.class_count
    have_classes = state.n_classes >= 2 and bool((class_count > 0).all())
    cat_of = data.category_of()
    for name in names:
        acc = accs[name]
        means = (state.sums[name] / class_count.clamp_min(1)).numpy() if have_classes else None
        results[name] = LayerDissection(
            layer=name,
            concepts=data.concept_names(),
            categories=list(data.categories),
            concept_category=cat_of,
            thresholds=acc.t.cpu().numpy(),
            inclusive=acc.inclusive.cpu().numpy(),
            iou=acc.result(),
            iou_threshold=iou_threshold,
            quantile=quantile,
            top_images=acc.top_idx.cpu().numpy(),
            class_means=means,
            info={
                "quantile_sampled": state.quant[name].sampled,
                "values_kept_per_unit": state.quant[name].capacity,
            },
        )
    return results
