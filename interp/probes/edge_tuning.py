"""The edge probe's stimuli and its reading of tuning: sinusoidal gratings, the frequency grid a
layer can see, orientation selectivity (OSI), the preferred orientation, and the per-unit
F0/F1 reading of evoked responses at one contrast (:mod:`interp.probes.edges` describes the
measurement).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "CONTRASTS",
    "FREQUENCIES",
    "TuningRead",
    "gratings",
    "layer_frequencies",
    "orientation_selectivity",
    "preferred_orientation",
    "read_tuning",
]

#: contrasts of the series (Michelson contrast of the gratings around grey 0.5)
CONTRASTS = (0.125, 0.35, 1.0)


#: spatial frequencies (cycles per pixel) of the grid: a factor sqrt(2) apart
FREQUENCIES = tuple(round(0.4 / math.sqrt(2) ** k, 4) for k in range(10))


def gratings(
    size: int,
    orientations: Sequence[float],
    frequencies: Sequence[float],
    phases: Sequence[float],
    channels: int = 3,
    *,
    contrast: float = 1.0,
    centre: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Sinusoidal gratings ``(O * F * P, C, size, size)`` in ``[0, 1]``, orientation-major.

    ``orientations`` are stripe orientations (degrees), ``frequencies`` in cycles per pixel,
    ``phases`` in radians relative to ``centre`` (``(y, x)`` in pixels; default the canvas
    centre ``(size - 1) / 2``), ``contrast`` the amplitude around grey 0.5 (1: 0 to 1).
    """
    cy, cx = centre if centre is not None else ((size - 1) / 2.0, (size - 1) / 2.0)
    ys, xs = torch.meshgrid(
        torch.arange(size, dtype=torch.float64) - cy,
        torch.arange(size, dtype=torch.float64) - cx,
        indexing="ij",
    )
    ys = -ys  # y up
    out = []
    for theta in orientations:
        wave = math.radians(theta + 90.0)  # the wave vector is perpendicular to the stripes
        proj = xs * math.cos(wave) + ys * math.sin(wave)
        for f in frequencies:
            for phi in phases:
                out.append(0.5 + 0.5 * contrast * torch.sin(2 * math.pi * f * proj + phi))
    stack = torch.stack(out).float()[:, None]
    return stack.expand(-1, channels, -1, -1).contiguous()


def orientation_selectivity(responses: np.ndarray, orientations: Sequence[float]) -> np.ndarray:
    """OSI of ``(..., n_orientations)`` responses, negative parts set to 0:
    ``|sum r e^{2i theta}| / sum r`` (0 where every response is 0)."""
    r = np.clip(responses, 0, None)
    angles = np.radians(np.asarray(orientations, dtype=np.float64))
    vec = (r * np.exp(2j * angles)).sum(axis=-1)
    total = r.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        osi = np.where(total > 0, np.abs(vec) / total, 0.0)
    return osi


def layer_frequencies(rf: int, size: int, grid: Sequence[float]) -> list[float]:
    """The grid's frequencies a layer can see: from half a cycle to 8 cycles across its RF
    (clipped to the canvas), at most 0.45 cycles/px."""
    extent = max(2, min(rf, size))
    keep = [f for f in grid if f <= 0.45 and 0.5 <= f * extent <= 8]
    return sorted(keep) if keep else [min(grid, key=lambda f: abs(f * extent - 1.0))]


@dataclass
class TuningRead:
    """One contrast's reading of every unit: the tuning measure (F1 for simple-like units,
    rectified evoked F0 for complex-like), the preferred frequency and the curve there."""

    measure: np.ndarray  # (units, O, F)
    modulation: np.ndarray  # F1 / |F0| at the preferred condition
    simple: np.ndarray
    f_idx: np.ndarray  # preferred frequency (index)
    curve: np.ndarray  # (units, O): the measure at the preferred frequency

    @staticmethod
    def pick(reads: Sequence[TuningRead], index: np.ndarray) -> TuningRead:
        """Per unit, the reading of contrast ``index[unit]``."""
        rows = np.arange(len(index))
        return TuningRead(
            *(
                np.stack([getattr(r, k) for r in reads], axis=1)[rows, index]
                for k in ("measure", "modulation", "simple", "f_idx", "curve")
            )
        )


def read_tuning(e: np.ndarray, phases: Sequence[float]) -> TuningRead:
    """Read ``(units, O, F, P)`` evoked responses at one contrast (:mod:`interp.probes.edges`)."""
    units = e.shape[0]
    ph = np.exp(1j * np.asarray(phases))
    f0 = e.mean(axis=-1)
    f1 = 2.0 * np.abs((e * ph).sum(axis=-1)) / len(phases)
    best = np.maximum(f1, f0).reshape(units, -1).argmax(axis=1)
    rows = np.arange(units)
    f0b, f1b = f0.reshape(units, -1)[rows, best], f1.reshape(units, -1)[rows, best]
    with np.errstate(divide="ignore", invalid="ignore"):
        modulation = np.where(np.abs(f0b) > 0, f1b / np.abs(f0b), np.where(f1b > 0, np.inf, 0.0))
    simple = modulation > 1.0
    measure = np.where(simple[:, None, None], f1, np.clip(f0, 0, None))
    # the preferred frequency: where the orientation curve is largest
    f_idx = measure.max(axis=1).argmax(axis=1)
    return TuningRead(measure, modulation, simple, f_idx, measure[rows, :, f_idx])


def preferred_orientation(curve: np.ndarray, orientations: Sequence[float]) -> np.ndarray:
    """Preferred orientation (degrees in ``[0, 180)``) of ``(..., n_orientations)`` tuning
    curves: half the phase of the second circular harmonic, the vector whose length the OSI
    measures. It is read from the whole curve, so a peak between grid orientations, or a
    flat top, is placed where the curve's mass is, not at the first of tied grid points;
    where the curve has no second harmonic (flat, or all zero), the grid's argmax."""
    r = np.clip(np.asarray(curve, dtype=np.float64), 0, None)
    angles = np.radians(np.asarray(orientations, dtype=np.float64))
    vec = (r * np.exp(2j * angles)).sum(axis=-1)
    pref = (np.degrees(np.angle(vec)) / 2.0) % 180.0
    flat = np.abs(vec) <= 1e-9 * np.maximum(r.sum(axis=-1), 1e-300)
    grid = np.asarray(orientations, dtype=np.float64)[r.argmax(axis=-1)]
    return np.where(flat, grid, np.round(pref, 2))
