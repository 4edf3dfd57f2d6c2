"""What the edge probe returns (:class:`EdgeResult`) and the edge-unit rule read from it
(:func:`driven`, :func:`edge_mask`, :func:`edge_units`; the cut-offs are calibrated in
:mod:`interp.probes.edges`' docstring).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import load_arrays, only_stem, result_stem, save_arrays
from .rules import warn_absolute

__all__ = [
    "DRIVE_MIN",
    "OSI_MIN",
    "EdgeResult",
    "driven",
    "edge_mask",
    "edge_units",
]

#: absolute cut-offs, calibrated on planted units (:mod:`interp.probes.edges`)
OSI_MIN = 0.2
DRIVE_MIN = 0.3


@dataclass
class EdgeResult:
    """Evoked orientation tuning of every unit of one layer (arrays indexed by channel).

    ``to_dict()`` is its JSON (the grids, clipping, ``info`` and :meth:`summary`);
    ``save(folder)`` writes it and the arrays (``edges-LAYER.json``, ``edges-LAYER.npz``),
    which ``EdgeResult.load(folder)`` reads back.
    """

    ARRAYS = (
        "contrast",
        "baseline",
        "tuning",
        "modulation",
        "simple",
        "preferred_orientation",
        "preferred_frequency",
        "osi",
        "drive",
        "drive_ratio",
        "unit_clipped",
    )

    layer: str
    orientations: list[float]
    frequencies: list[float]
    contrasts: list[float]
    contrast: np.ndarray  # per unit: the contrast its tuning is read at
    baseline: np.ndarray  # response to the grey field
    tuning: np.ndarray  # (units, orientations, frequencies): F1 or evoked F0 at ``contrast``
    modulation: np.ndarray  # F1 / |F0| at the preferred condition
    simple: np.ndarray  # bool: simple-like (F1 measure) or complex-like (F0)
    preferred_orientation: np.ndarray
    preferred_frequency: np.ndarray
    osi: np.ndarray
    drive: np.ndarray  # largest evoked response to any grating (any contrast)
    drive_ratio: np.ndarray  # drive / (natural high percentile - baseline); nan: no reference
    clipped: list[float]  # per contrast: fraction of upstream bounded elements clipped
    unit_clipped: np.ndarray  # per unit: clipped fraction at the contrast read
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> int:
        return len(self.osi)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: the stimulus grids, the clipped fraction per contrast,
        ``info`` and the summary."""
        return {
            "layer": self.layer,
            "orientations": list(self.orientations),
            "frequencies": list(self.frequencies),
            "contrasts": list(self.contrasts),
            "clipped": list(self.clipped),
            "info": self.info,
            "summary": self.summary(),
        }

    def save(self, folder: str | Path, stem: str | None = None) -> list[Path]:
        """``STEM.npz`` (the arrays) and ``STEM.json`` (:meth:`to_dict`) in ``folder``,
        atomically (``stem`` defaults to ``edges-LAYER``); returns their paths."""
        arrays = {k: getattr(self, k) for k in self.ARRAYS}
        return save_arrays(folder, stem or result_stem("edges", self.layer), arrays, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path, stem: str | None = None) -> EdgeResult:
        """A result written by :meth:`save` (``stem``: needed when ``folder`` holds several)."""
        stem = stem or only_stem(folder, "edges-*.npz", "grating results")
        arrays, doc = load_arrays(folder, stem)
        fields = ("layer", "orientations", "frequencies", "contrasts", "clipped", "info")
        return cls(**{k: doc[k] for k in fields}, **arrays)

    def edge_units(
        self, osi_threshold: float | None = None, *, absolute: bool = False
    ) -> np.ndarray:
        """Bool per unit: driven and oriented (:func:`edge_units`: pass the random-init
        control's ``osi_threshold``, or ``absolute=True`` for the absolute rule alone)."""
        if osi_threshold is None and not absolute:
            warn_absolute(
                "EdgeResult.edge_units()",
                f"OSI >= {OSI_MIN}, drive ratio >= {DRIVE_MIN}",
            )
        return edge_units(self, osi_threshold=osi_threshold, absolute=True)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (OSI and drive quantiles, clipping, the contrast used)."""
        q = [0.1, 0.25, 0.5, 0.75, 0.9]
        ratio = self.drive_ratio[np.isfinite(self.drive_ratio)]
        return {
            "layer": self.layer,
            "units": self.units,
            "osi_quantiles_10_25_50_75_90": np.quantile(self.osi, q).round(4).tolist(),
            "osi_mean": round(float(self.osi.mean()), 4),
            "drive_ratio_median": round(float(np.median(ratio)), 4) if len(ratio) else None,
            "driven_fraction": round(float(driven(self.drive_ratio).mean()), 4),
            "simple_fraction": round(float(self.simple.mean()), 4),
            "contrast_median": float(np.median(self.contrast)),
            "clipped_at_contrast_read_median": round(float(np.median(self.unit_clipped)), 4),
            "clipped_by_contrast": dict(
                zip(
                    [str(c) for c in self.contrasts],
                    [round(v, 4) for v in self.clipped],
                    strict=True,
                )
            ),
            "frequencies": [round(f, 4) for f in self.frequencies],
            **self.info,
        }


def driven(drive_ratio: np.ndarray, drive_min: float = DRIVE_MIN) -> np.ndarray:
    """Bool per unit: drive ratio >= ``drive_min`` (``nan``, no reference: not driven)."""
    return np.nan_to_num(np.asarray(drive_ratio, dtype=np.float64), nan=-1.0) >= drive_min


def edge_mask(
    osi: np.ndarray,
    drive_ratio: np.ndarray,
    *,
    osi_threshold: float | None = None,
    osi_min: float = OSI_MIN,
    drive_min: float = DRIVE_MIN,
    absolute: bool = False,
) -> np.ndarray:
    """The edge-unit rule on per-unit arrays: driven, OSI >= ``osi_min`` and OSI >
    ``osi_threshold`` (the random-init control's, e.g. from
    :func:`~interp.probes.hierarchy.edge_control_thresholds`). Without a threshold (``None``)
    the absolute rule alone is applied, with an :class:`AbsoluteRuleWarning` unless
    ``absolute=True``; a ``nan`` threshold (a control that measured nothing) adds no cut."""
    if osi_threshold is None and not absolute:
        warn_absolute(
            "the grating edge-unit rule",
            f"OSI >= {osi_min}, drive ratio >= {drive_min}",
        )
    oriented = osi >= osi_min
    if osi_threshold is not None and np.isfinite(osi_threshold):
        oriented &= osi > osi_threshold
    return driven(drive_ratio, drive_min) & oriented


def edge_units(
    result: EdgeResult,
    *,
    osi_threshold: float | None = None,
    osi_min: float = OSI_MIN,
    drive_min: float = DRIVE_MIN,
    absolute: bool = False,
) -> np.ndarray:
    """Edge units of ``result`` (:func:`edge_mask`: pass the control's ``osi_threshold``,
    or ``absolute=True``). Without a natural-image reference (drive ratio ``nan``) no unit
    passes the drive gate."""
    if osi_threshold is None and not absolute:
        warn_absolute(
            "edge_units()",
            f"OSI >= {osi_min}, drive ratio >= {drive_min}",
        )
    return edge_mask(
        result.osi,
        result.drive_ratio,
        osi_threshold=osi_threshold,
        osi_min=osi_min,
        drive_min=drive_min,
        absolute=True,
    )
