"""Edge probe: orientation tuning of units measured with sinusoidal gratings.

For every unit (a channel at the centre of a layer's output map), full-field luminance
gratings over ``n_orientations`` orientations (>= 12), several spatial frequencies scaled to
the layer's receptive field and ``n_phases`` phases (>= 4), centred on the unit's receptive
field, are shown; responses are rectified and maximized over phase. Per unit:

* preferred orientation and frequency (the argmax);
* orientation selectivity index at the preferred frequency,
  ``OSI = |sum_k r_k exp(2 i theta_k)| / sum_k r_k`` (1 - circular variance): 1 for a unit
  that answers one orientation only, 0 for an isotropic one.

Orientations are those of the stripes (the edges), in degrees counter-clockwise from
horizontal, with the image's y axis pointing up — the convention of PartsWorld's edge bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..capture import ActivationCapture, preserved_state, resolve_layers
from ..models.base import Model
from ..models.registry import as_model

__all__ = ["EdgeResult", "edge_probe", "gratings", "orientation_selectivity"]


def gratings(
    size: int,
    orientations: Sequence[float],
    frequencies: Sequence[float],
    phases: Sequence[float],
    channels: int = 3,
) -> torch.Tensor:
    """Sinusoidal gratings ``(O * F * P, C, size, size)`` in ``[0, 1]``, orientation-major.

    ``orientations`` are stripe orientations (degrees), ``frequencies`` in cycles per pixel,
    ``phases`` in radians relative to the image centre.
    """
    c = (size - 1) / 2.0
    ys, xs = torch.meshgrid(torch.arange(size) - c, torch.arange(size) - c, indexing="ij")
    xs, ys = xs.float(), -ys.float()  # y up
    out = []
    for theta in orientations:
        wave = math.radians(theta + 90.0)  # the wave vector is perpendicular to the stripes
        proj = xs * math.cos(wave) + ys * math.sin(wave)
        for f in frequencies:
            for phi in phases:
                out.append(0.5 + 0.5 * torch.sin(2 * math.pi * f * proj + phi))
    stack = torch.stack(out)[:, None]
    return stack.expand(-1, channels, -1, -1).contiguous()


def orientation_selectivity(responses: np.ndarray, orientations: Sequence[float]) -> np.ndarray:
    """OSI of rectified responses ``(..., n_orientations)``: ``|sum r e^{2i theta}| / sum r``."""
    r = np.clip(responses, 0, None)
    angles = np.radians(np.asarray(orientations, dtype=np.float64))
    vec = (r * np.exp(2j * angles)).sum(axis=-1)
    total = r.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        osi = np.where(total > 0, np.abs(vec) / total, 0.0)
    return osi


@dataclass
class EdgeResult:
    """Orientation tuning of every unit of one layer (arrays indexed by channel)."""

    layer: str
    orientations: list[float]
    frequencies: list[float]
    preferred_orientation: np.ndarray
    preferred_frequency: np.ndarray
    osi: np.ndarray
    peak: np.ndarray
    tuning: np.ndarray  # (units, orientations, frequencies), rectified, max over phase
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly summary (OSI quantiles, preferred orientations)."""
        q = np.quantile(self.osi, [0.1, 0.25, 0.5, 0.75, 0.9]).round(4).tolist()
        return {
            "layer": self.layer,
            "units": int(len(self.osi)),
            "osi_quantiles_10_25_50_75_90": q,
            "osi_mean": round(float(self.osi.mean()), 4),
            "frequencies": [round(f, 4) for f in self.frequencies],
            **self.info,
        }


def _frequencies(rf: int, cycles: Sequence[float]) -> list[float]:
    """Spatial frequencies of ``cycles`` per receptive field, within (0, 0.45] cycles/px."""
    out = sorted({round(min(0.45, max(c / max(rf, 2), 1.0 / 64)), 4) for c in cycles})
    return out


def edge_probe(
    model: Model,
    layers: str | Sequence[str],
    *,
    n_orientations: int = 12,
    n_phases: int = 4,
    cycles_per_rf: Sequence[float] = (0.75, 1.0, 1.5, 2.0, 3.0),
    size: int | None = None,
    batch_size: int = 64,
) -> dict[str, EdgeResult]:
    """Orientation tuning of every unit of ``layers`` (one streaming pass per layer set).

    Args:
        model: the model (its preprocessing turns the [0, 1] gratings into input).
        layers: layer names with 4-D outputs.
        n_orientations: >= 12 stripe orientations over 180 degrees.
        n_phases: >= 4 phases.
        cycles_per_rf: frequencies, in cycles per receptive field of each layer.
        size: canvas size (default: the model's input size).
        batch_size: gratings per forward pass.
    """
    if n_orientations < 12 or n_phases < 4:
        raise ValueError("use at least 12 orientations and 4 phases")
    from ..inventory import layers as inventory

    model = as_model(model)
    names = resolve_layers(model, layers)
    size = size or model.input_size[0]
    infos = {i.name: i for i in inventory(model, names=names, input_size=(size, size))}
    orientations = [180.0 * k / n_orientations for k in range(n_orientations)]
    phases = [2 * math.pi * k / n_phases for k in range(n_phases)]
    results: dict[str, EdgeResult] = {}
    with preserved_state(model.module, eval_mode=True):
        for name in names:
            info = infos[name]
            if info.output_shape is None or len(info.output_shape) != 3:
                continue  # not a spatial map
            rf = info.rf_size[0] if info.rf_size else size
            freqs = _frequencies(rf, cycles_per_rf)
            stim = gratings(size, orientations, freqs, phases, model.preprocessing.channels)
            chunks = []
            with torch.no_grad(), ActivationCapture(model.module, [name]) as cap:
                for start in range(0, len(stim), batch_size):
                    x = model.normalize(stim[start : start + batch_size]).to(model.device)
                    act = cap.run(x)[name].float()
                    h, w = act.shape[-2:]
                    chunks.append(act[:, :, h // 2, w // 2].cpu())
            resp = torch.cat(chunks).numpy()  # (O*F*P, units)
            units = resp.shape[1]
            tuning = resp.T.reshape(units, n_orientations, len(freqs), n_phases)
            tuning = np.clip(tuning, 0, None).max(axis=-1)  # rectified, best phase
            flat = tuning.reshape(units, -1).argmax(axis=1)
            o_idx, f_idx = np.unravel_index(flat, (n_orientations, len(freqs)))
            at_pref = tuning[np.arange(units), :, f_idx]  # (units, orientations)
            results[name] = EdgeResult(
                layer=name,
                orientations=orientations,
                frequencies=freqs,
                preferred_orientation=np.asarray(orientations)[o_idx],
                preferred_frequency=np.asarray(freqs)[f_idx],
                osi=orientation_selectivity(at_pref, orientations),
                peak=tuning.reshape(units, -1).max(axis=1),
                tuning=tuning,
                info={"rf_size": rf, "canvas": size, "phases": n_phases},
            )
    return results
