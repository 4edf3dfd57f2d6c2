"""What :func:`~interp.probes.dissect.dissect` returns: one :class:`LayerDissection` per layer
(thresholds, IoU with every concept, class selectivity) in a :class:`Dissection`, with their
files (``dissection.json``, ``dissection.npz``), and the class selectivity index.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils import atomic_path, atomic_write_text, prepare_output

__all__ = ["Dissection", "LayerDissection", "selectivity_index"]


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
