"""ERF probe: Gabor fits of every unit's effective receptive field (a second edge instrument).

The **effective receptive field** (ERF) of a unit, a channel at the centre position
``(h // 2, w // 2)`` of a layer's output map, is the gradient of its activation with respect
to the input image in the model's ``[0, 1]`` pixel space (through ``model.normalize``),
averaged over ``n_noise`` images of grey 0.5 plus Gaussian noise of std ``noise_std`` (a
fixed-seed ``torch.Generator``): a spike-triggered average, the linear filter the unit
applies around grey. Per layer, the noise images are run forward once and the unit-wise
backward passes are batched (``is_grads_batched``; a replicated batch, one image per unit and
noise image, where a model does not support it), ``batch_size`` images per pass; parameters
are frozen and hooks, train/eval mode and ``requires_grad`` flags are restored afterwards,
also on error.

Per unit, the ERF is cropped to the unit's receptive-field window (a square around the
support of the gradients, i.e. the measured RF, clipped to the canvas), area-downsampled to
``max_fit`` px when larger, reduced to its dominant colour direction (the first singular
vector of the ``(C, h*w)`` matrix, as :mod:`interp.probes.filters` does for first-layer
filters), and fitted with a 2-D Gabor ``A exp(-(x'^2/2sx^2 + y'^2/2sy^2)) cos(2 pi f x' +
phase) + c`` (:func:`fit_gabors`: a batched Levenberg-Marquardt fit with an analytic
Jacobian, all units of a layer at once, from three starts: orientation and frequency from
the spectrum's peak, an untuned blob, a broad envelope). It reaches the ``R^2`` of
:func:`interp.probes.filters.fit_gabor` and is 6x (32 px) to 60x (9 px) faster. Per unit:

* ``r2``: the fit's ``R^2`` on the spatial pattern (``nan`` for a unit with zero gradient);
* ``orientedness``: orientation concentration of the power spectrum ``P`` of the *fitted*
  Gabor (noise-free, its constant left out, zero-padded 4x): ``|sum_k P_k e^{2 i phi_k}| /
  sum_k P_k`` over the frequency bins except DC, ``phi`` the angle of the frequency vector.
  An isotropic pattern (a difference of Gaussians, a round blob) gives ~0, a derivative of
  Gaussian (one edge) ~0.5, a Gabor with several cycles under its envelope close to 1;
* ``orientation``: preferred stripe orientation, ``arg(sum P e^{2 i phi}) / 2 + 90`` degrees,
  counter-clockwise from horizontal with the image's y axis up, in ``[0, 180)`` (the
  convention of :func:`interp.probes.edges.gratings`); meaningless where orientedness ~0;
* ``frequency``: the fit's carrier frequency in cycles per input pixel;
* ``energy``: the L2 norm of the mean gradient.

A unit is an **ERF edge unit** (:func:`erf_edge_units`) when its ERF is Gabor-like
(``r2 >= R2_MIN``) and oriented (``orientedness >= ORIENTED_MIN``). The cut-offs were
calibrated on the planted units of tests/test_erf.py (9x9 filters with unit norm and a
positive bias behind ReLU or ReLU6, 32-40 px canvases, this module's defaults), measured:

* luminance Gabors (stripes at 0/30/45/60/90/120/135/150 degrees, 0.15-0.3 cycles/px,
  odd, even and in-between phases, sigma 2 px): ``r2`` 1.00, ``orientedness`` 0.70 (0.15
  cycles/px: under one cycle per sigma) to 0.93, orientation within 0.1 degree, frequency
  within 0.02; behind a second layer (1x1 or 3x3 copies, the first layer's ReLU gating
  image by image): ``r2`` >= 0.98, ``orientedness`` >= 0.81, orientation within 2 degrees;
* derivatives of Gaussians (a single edge, the broadest oriented filter): ``r2`` 1.00,
  ``orientedness`` 0.50;
* isotropic differences of Gaussians (on- and off-centre): ``r2`` 0.97-1.00 (a Gabor fits
  them well inside a 9x9 window) but ``orientedness`` <= 0.06 (<= 0.12 behind a 3x3
  layer); colour-opponent blobs (+R -G centre, red centre / green surround, blue-yellow):
  ``r2`` >= 0.999, ``orientedness`` 0.00;
* random-init convolutions (torch's default init, 5x5 and 7x7, 96 units): ``r2`` median
  0.33, 90th percentile 0.53, max 0.60; none passes;

so ``ORIENTED_MIN = 0.3`` (between isotropic units' <= 0.12 and one-edge filters' 0.50)
and ``R2_MIN = 0.8`` (between random filters' max 0.60 and the planted Gabors' >= 0.98;
also the Gabor rule of :mod:`interp.probes.filters`). ``r2`` alone does not separate
isotropic units: orientedness does.

**Cost.** Layers whose RF fits inside the canvas are measured on the smallest canvas (a
multiple of the layer's stride) that still holds the whole RF unclipped: the centre unit's
activation is then the same function of the same pixels (no padding enters it), so the ERF
is the same (tested), at a fraction of the cost. Layers with more than ``max_gradients /
n_noise`` units (the wide, deep layers) average fewer noise images, ``max(2, max_gradients
// units)``: their cost is one backward pass per unit and image, and a noisier average only
lowers ``r2`` (a conservative error). The number used is in ``info["noise_images"]``.
On EfficientNet-Lite0 at 128 px, ``_blocks.0/1/3/5/8/15`` take 20-23 s on two CPU cores (one
core: 36 s, against 96 s with all 8 noise images in every layer, with the same edge-unit
fractions); ``_blocks.15`` (320 units, 2 images) is half of it. Layers whose RF is smaller
than ``min_rf`` px, without a spatial ``(N, C, H, W)`` output, or (unless ``clipped=True``)
whose RF reaches past the canvas (the ERF is cut off there; measured anyway on
EfficientNet-Lite0, such layers fit poorly: median ``r2`` 0.24 at ``_blocks.8``, 0.03 at
``_blocks.15``), are skipped: their entry has ``skipped`` set to the reason and empty arrays.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..activations import ActivationCapture, preserved_state, resolve_layers
from ..inventory import support_box
from ..layer_geometry import LayerGeometry
from ..models.base import Model
from ..models.registry import as_model
from ..utils import load_arrays, only_stem, result_stem, save_arrays
from .rules import warn_absolute

__all__ = [
    "ORIENTED_MIN",
    "R2_MIN",
    "ErfResult",
    "erf_edge_units",
    "erf_probe",
    "fit_gabors",
    "spectral_orientation",
]

R2_MIN = 0.8
ORIENTED_MIN = 0.3

_LM_ITERATIONS = 20  # per start; fits converge in ~15 (planted and random patterns)
_PAD = 4  # zero-padding factor of the spectra


# --------------------------------------------------------------------------- the result
@dataclass
class ErfResult:
    """ERF Gabor fits of every unit of one layer (arrays indexed by channel).

    ``erf`` is ``(units, C, h, w)``: the averaged gradients inside the RF window (full
    resolution). ``skipped`` is the reason when the layer was not measured (then every array
    is empty). ``to_dict()`` is its JSON (the metadata, ``info`` and :meth:`summary`);
    ``save(folder)`` writes it and the arrays (``erf-LAYER.json``, ``erf-LAYER.npz``), which
    ``ErfResult.load(folder)`` reads back.
    """

    ARRAYS = ("r2", "orientedness", "orientation", "frequency", "energy", "erf")

    layer: str
    rf_size: int
    canvas: int
    r2: np.ndarray
    orientedness: np.ndarray
    orientation: np.ndarray
    frequency: np.ndarray
    energy: np.ndarray
    erf: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def units(self) -> int:
        """Number of units (0 for a skipped layer)."""
        return int(len(self.r2))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: layer, RF size, canvas, ``skipped``, ``info`` and the summary."""
        return {
            "layer": self.layer,
            "rf_size": self.rf_size,
            "canvas": self.canvas,
            "skipped": self.skipped,
            "info": self.info,
            "summary": self.summary(),
        }

    def save(self, folder: str | Path, stem: str | None = None) -> list[Path]:
        """``STEM.npz`` (the arrays) and ``STEM.json`` (:meth:`to_dict`) in ``folder``,
        atomically (``stem`` defaults to ``erf-LAYER``); returns their paths."""
        arrays = {k: getattr(self, k) for k in self.ARRAYS}
        return save_arrays(folder, stem or result_stem("erf", self.layer), arrays, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path, stem: str | None = None) -> ErfResult:
        """A result written by :meth:`save` (``stem``: needed when ``folder`` holds several)."""
        stem = stem or only_stem(folder, "erf-*.npz", "ERF results")
        arrays, doc = load_arrays(folder, stem)
        return cls(
            layer=doc["layer"],
            rf_size=doc["rf_size"],
            canvas=doc["canvas"],
            info=doc["info"],
            skipped=doc["skipped"],
            **arrays,
        )

    def summary(
        self, *, r2_min: float = R2_MIN, oriented_min: float = ORIENTED_MIN
    ) -> dict[str, Any]:
        """JSON-friendly summary: edge-unit fraction, quantiles, orientation histogram."""
        out: dict[str, Any] = {
            "layer": self.layer,
            "rf_size": self.rf_size,
            "canvas": self.canvas,
            "units": self.units,
        }
        if self.skipped is not None:
            out["skipped"] = self.skipped
            return out
        # a summary of one network has no control: the absolute rule, said in "rule"
        edge = erf_edge_units(self, r2_min=r2_min, oriented_min=oriented_min, absolute=True)
        alive = np.isfinite(self.r2)
        quantiles = [0.1, 0.5, 0.9]

        def q(values: np.ndarray) -> list[float] | None:
            values = values[np.isfinite(values)]
            return np.quantile(values, quantiles).round(4).tolist() if len(values) else None

        # stripe orientations of edge units in four bins centred on 0, 45, 90 and 135 degrees
        bins = ((self.orientation[edge] + 22.5) % 180 // 45).astype(int)
        out.update(
            {
                "rule": f"ERF edge unit when Gabor fit R^2 >= {r2_min} and orientedness >= "
                f"{oriented_min} (absolute, no random-init control)",
                "edge_fraction": round(float(edge.mean()), 4) if self.units else 0.0,
                "edge_units": int(edge.sum()),
                "dead_units": int((~alive).sum()),
                "r2_quantiles_10_50_90": q(self.r2),
                "orientedness_quantiles_10_50_90": q(self.orientedness[alive]),
                "edge_orientation_counts_0_45_90_135": np.bincount(bins, minlength=4).tolist(),
                "edge_frequency_median": round(float(np.median(self.frequency[edge])), 4)
                if edge.any()
                else None,
                **{
                    k: v
                    for k, v in self.info.items()
                    if isinstance(v, str | int | float | bool) and not k.endswith("_seconds")
                },
            }
        )
        return out  # timings stay in ``info``: a summary is the same for the same inputs


def erf_edge_units(
    result: ErfResult,
    *,
    threshold: float | None = None,
    r2_min: float = R2_MIN,
    oriented_min: float = ORIENTED_MIN,
    absolute: bool = False,
) -> np.ndarray:
    """Boolean mask of ERF edge units: Gabor-like (``r2 >= r2_min``) and oriented
    (``orientedness >= oriented_min`` and ``> threshold``, the random-init control's, e.g.
    from :func:`~interp.probes.hierarchy.edge_control_thresholds`). Without a threshold the
    absolute rule alone is applied, with an :class:`~interp.probes.rules.AbsoluteRuleWarning`
    unless ``absolute=True``. Units with a ``nan`` fit (zero gradient) are not edge units."""
    if threshold is None and not absolute:
        warn_absolute(
            "erf_edge_units()",
            f"R^2 >= {r2_min}, orientedness >= {oriented_min}",
        )
    r2 = np.nan_to_num(np.asarray(result.r2, dtype=np.float64), nan=-np.inf)
    oriented = np.nan_to_num(np.asarray(result.orientedness, dtype=np.float64), nan=-np.inf)
    edge = (r2 >= r2_min) & (oriented >= oriented_min)
    if threshold is not None and np.isfinite(threshold):
        edge &= oriented > threshold
    return edge


# ------------------------------------------------------------------------ Gabor fitting
# The fit runs in torch float32 (about 5x faster than numpy float64 on these sizes); R^2 is
# computed in float64 from the final parameters.
_Tensor = torch.Tensor


def _grid(k: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates ``(xs, ys)`` of a ``k`` x ``k`` patch, centred, y pointing down (the
    convention of :func:`interp.probes.filters.gabor`), flattened."""
    r = np.arange(k) - (k - 1) / 2.0
    ys, xs = np.meshgrid(r, r, indexing="ij")
    return xs.ravel(), ys.ravel()


def _model(q: _Tensor, xs: _Tensor, ys: _Tensor, jacobian: bool = False):  # noqa: ANN202
    """Batched Gabor ``(B, N)`` for internal parameters ``q`` ``(B, 9)`` =
    ``(a, b, c, x0, y0, log sx, log sy, theta, f)``, the carrier being
    ``a cos(2 pi f x') + b sin(2 pi f x')`` (linear in ``a, b, c``); with ``jacobian`` also
    ``d model / d q`` ``(B, N, 9)``."""
    a, b, c, x0, y0, lsx, lsy, th, f = (t[:, None] for t in q.unbind(1))
    isx2, isy2 = torch.exp(-2 * lsx), torch.exp(-2 * lsy)
    cos_t, sin_t = torch.cos(th), torch.sin(th)
    dx, dy = xs - x0, ys - y0
    xr = dx * cos_t + dy * sin_t
    yr = dy * cos_t - dx * sin_t
    env = torch.exp(-0.5 * (xr * xr * isx2 + yr * yr * isy2))
    omega = 2 * math.pi * f
    c0, s0 = torch.cos(omega * xr), torch.sin(omega * xr)
    ew = env * (a * c0 + b * s0)
    g = ew + c
    if not jacobian:
        return g, None
    edw = env * (b * c0 - a * s0)  # env * d(carrier) / d(omega x')
    gx = omega * edw - ew * xr * isx2  # d g / d x'
    gy = -ew * yr * isy2  # d g / d y'
    jac = torch.stack(
        [
            env * c0,
            env * s0,
            torch.ones_like(g),
            gy * sin_t - gx * cos_t,
            -gx * sin_t - gy * cos_t,
            ew * xr * xr * isx2,
            ew * yr * yr * isy2,
            gx * yr - gy * xr,
            edw * (2 * math.pi) * xr,
        ],
        dim=-1,
    )
    return g, jac


def _linear_fit(q: _Tensor, p: _Tensor, xs: _Tensor, ys: _Tensor) -> _Tensor:
    """``q`` with ``a, b, c`` set to their least-squares values given the other parameters."""
    unit = q.clone()
    unit[:, :3] = torch.tensor([1.0, 0.0, 0.0])
    cos_part = _model(unit, xs, ys)[0]
    unit[:, :2] = torch.tensor([0.0, 1.0])
    sin_part = _model(unit, xs, ys)[0]
    design = torch.stack([cos_part, sin_part, torch.ones_like(cos_part)], dim=-1).double()
    gram = design.transpose(1, 2) @ design + 1e-9 * torch.eye(3, dtype=torch.float64)
    coef = torch.linalg.solve(gram, design.transpose(1, 2) @ p.double()[..., None])[..., 0]
    out = q.clone()
    out[:, :3] = coef.to(q.dtype)
    return out


def _starts(p: np.ndarray, k: int) -> list[np.ndarray]:
    """Three starting points per pattern ``(B, k*k)``: orientation and frequency from the
    spectrum's peak, envelope from the energy's centroid and spread; the same untuned (a
    blob, ``f = 0``); and the peak's carrier under a broad envelope at the patch centre."""
    n = p.shape[0]
    xs, ys = _grid(k)
    centred = p - p.mean(axis=1, keepdims=True)
    pad = max(32, _PAD * k)
    spec = np.abs(np.fft.fft2(centred.reshape(n, k, k), s=(pad, pad))) ** 2
    spec[:, 0, 0] = 0.0
    iy, ix = np.unravel_index(spec.reshape(n, -1).argmax(axis=1), (pad, pad))
    fy = np.where(iy >= pad // 2, iy - pad, iy) / pad  # rows: y down, as in the model
    fx = np.where(ix >= pad // 2, ix - pad, ix) / pad
    f0 = np.clip(np.hypot(fx, fy), 0.0, 0.49)
    theta0 = np.arctan2(fy, fx)
    energy = centred**2 + 1e-30
    total = energy.sum(axis=1)
    cx = (energy * xs).sum(axis=1) / total
    cy = (energy * ys).sum(axis=1) / total
    var = (energy * ((xs - cx[:, None]) ** 2 + (ys - cy[:, None]) ** 2)).sum(axis=1) / total
    log_s = np.log(np.clip(np.sqrt(var), 0.5, k / 2.0))
    half = (k - 1) / 2.0
    cx, cy = np.clip(cx, -half, half), np.clip(cy, -half, half)
    zeros = np.zeros(n)
    tuned = np.stack([zeros, zeros, zeros, cx, cy, log_s, log_s, theta0, f0], axis=1)
    blob = tuned.copy()
    blob[:, 8] = 0.0
    broad = tuned.copy()
    broad[:, 3:5] = 0.0
    broad[:, 5:7] = math.log(k / 4.0)
    return [tuned, blob, broad]


def _bounds(k: int) -> tuple[_Tensor, _Tensor]:
    half = (k - 1) / 2.0
    inf = math.inf
    lo = [-inf, -inf, -inf, -half, -half, math.log(0.3), math.log(0.3), -inf, 0.0]
    hi = [inf, inf, inf, half, half, math.log(2.0 * k), math.log(2.0 * k), inf, 0.5]
    return torch.tensor(lo), torch.tensor(hi)


def _levenberg_marquardt(
    q: _Tensor, p: _Tensor, xs: _Tensor, ys: _Tensor, k: int, iterations: int
) -> tuple[_Tensor, _Tensor]:
    """Batched Levenberg-Marquardt with box bounds (steps projected); returns ``(q, cost)``."""
    lower, upper = _bounds(k)
    q = torch.maximum(torch.minimum(q, upper), lower)
    g, jac = _model(q, xs, ys, jacobian=True)
    res = g - p
    cost = (res * res).sum(dim=1)
    lam = torch.full((len(q),), 1e-2)
    eye = torch.eye(q.shape[1])
    for _ in range(iterations):
        jt = jac.transpose(1, 2)
        hess = jt @ jac
        grad = (jt @ res[..., None])[..., 0]
        diag = torch.diagonal(hess, dim1=1, dim2=2)
        damped = hess + lam[:, None, None] * (torch.diag_embed(diag) + 1e-6 * eye)
        step, info = torch.linalg.solve_ex(damped.double(), -grad.double()[..., None])
        step = torch.where((info == 0)[:, None], step[..., 0], 0.0).float()
        trial = torch.maximum(torch.minimum(q + step, upper), lower)
        g_t, jac_t = _model(trial, xs, ys, jacobian=True)
        res_t = g_t - p
        cost_t = (res_t * res_t).sum(dim=1)
        better = cost_t < cost
        q = torch.where(better[:, None], trial, q)
        res = torch.where(better[:, None], res_t, res)
        jac = torch.where(better[:, None, None], jac_t, jac)
        cost = torch.where(better, cost_t, cost)
        lam = torch.clamp(torch.where(better, lam / 3.0, lam * 4.0), 1e-7, 1e7)
    return q, cost


def fit_gabors(
    patterns: np.ndarray, *, iterations: int = _LM_ITERATIONS
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares Gabor fits of square 2-D patterns ``(B, k, k)``, all at once.

    Returns ``(params, r2)``: params ``(B, 9)`` in the convention of
    :func:`interp.probes.filters.gabor`, ``(A, x0, y0, sx, sy, theta, f, phase, c)`` (pixel
    coordinates centred on the patch, y pointing down, ``theta`` the direction of the
    carrier's wave vector, ``A >= 0``), and ``R^2`` ``(B,)`` (``nan`` for a constant pattern).
    """
    p = np.asarray(patterns, dtype=np.float64)
    if p.ndim != 3 or p.shape[1] != p.shape[2]:
        raise ValueError(f"patterns must be (B, k, k), got {p.shape}")
    n, k = p.shape[0], p.shape[1]
    if n == 0:
        return np.zeros((0, 9)), np.zeros(0)
    flat = p.reshape(n, -1)
    scale = np.abs(flat - flat.mean(axis=1, keepdims=True)).max(axis=1)
    live = scale > 0
    flat = flat / np.where(live, scale, 1.0)[:, None]
    xs, ys = (torch.tensor(v, dtype=torch.float32) for v in _grid(k))
    target = torch.tensor(flat, dtype=torch.float32)
    best_q, best_cost = None, None
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small element-wise ops: one thread is as fast, and far faster
    try:  # on a busy CPU
        for start in _starts(flat, k):
            q0 = _linear_fit(torch.tensor(start, dtype=torch.float32), target, xs, ys)
            q, cost = _levenberg_marquardt(q0, target, xs, ys, k, iterations)
            if best_q is None or best_cost is None:
                best_q, best_cost = q, cost
            else:
                better = cost < best_cost
                best_q = torch.where(better[:, None], q, best_q)
                best_cost = torch.where(better, cost, best_cost)
        assert best_q is not None
        fitted = _model(best_q.double(), xs.double(), ys.double())[0].numpy()
    finally:
        torch.set_num_threads(threads)
    sse = ((fitted - flat) ** 2).sum(axis=1)
    sst = ((flat - flat.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    r2 = np.where(live, 1.0 - sse / np.where(live, sst, 1.0), np.nan)
    q = best_q.double().numpy()
    s = np.where(live, scale, 1.0)
    params = np.stack(
        [
            np.hypot(q[:, 0], q[:, 1]) * s,
            q[:, 3],
            q[:, 4],
            np.exp(q[:, 5]),
            np.exp(q[:, 6]),
            q[:, 7],
            q[:, 8],
            np.arctan2(-q[:, 1], q[:, 0]),
            q[:, 2] * s,
        ],
        axis=1,
    )
    params[~live] = np.nan
    return params, r2


def _render(params: np.ndarray, k: int) -> np.ndarray:
    """Noise-free Gabors ``(B, k, k)`` of ``params`` (filters.gabor convention), ``c`` left out."""
    a, x0, y0, sx, sy, theta, f, phase = (params[:, i] for i in range(8))
    q = np.stack(
        [a * np.cos(phase), -a * np.sin(phase), 0 * a, x0, y0, np.log(sx), np.log(sy), theta, f],
        axis=1,
    )
    xs, ys = (torch.tensor(v) for v in _grid(k))
    return _model(torch.tensor(q), xs, ys)[0].numpy().reshape(-1, k, k)


def spectral_orientation(patches: np.ndarray, pad: int = _PAD) -> tuple[np.ndarray, np.ndarray]:
    """Orientedness and stripe orientation of 2-D patches ``(B, k, k)``.

    From the power spectrum ``P`` (zero-padded ``pad`` x, DC left out) with ``phi`` the angle
    of each frequency vector (y up): orientedness ``|sum P e^{2 i phi}| / sum P`` in ``[0, 1]``,
    orientation ``arg(sum P e^{2 i phi}) / 2 + 90`` degrees in ``[0, 180)`` (stripes are
    perpendicular to the frequency vector). A zero patch gives ``(0, nan)``.
    """
    x = np.asarray(patches, dtype=np.float64)
    k = x.shape[-1]
    n = pad * k
    power = np.abs(np.fft.fft2(x, s=(n, n))) ** 2
    freq = np.fft.fftfreq(n)
    fy, fx = np.meshgrid(-freq, freq, indexing="ij")  # rows go down, so y up is -row freq
    phi2 = np.exp(2j * np.arctan2(fy, fx))
    phi2[0, 0] = 0.0
    power[..., 0, 0] = 0.0
    total = power.sum(axis=(-2, -1))
    vec = (power * phi2).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        oriented = np.where(total > 0, np.abs(vec) / np.where(total > 0, total, 1.0), 0.0)
    orientation = np.where(total > 0, (np.degrees(np.angle(vec)) / 2.0 + 90.0) % 180.0, np.nan)
    return oriented, orientation


def _dominant_pattern(erf: torch.Tensor) -> np.ndarray:
    """``(U, C, k, k)`` -> ``(U, k, k)``: the first singular vector of each ``(C, k*k)``."""
    u, c, h, w = erf.shape
    mats = erf.double().reshape(u, c, h * w)
    _, s, vh = torch.linalg.svd(mats, full_matrices=False)
    return (s[:, :1, None] * vh[:, :1]).reshape(u, h, w).numpy()


# ------------------------------------------------------------------------ the gradients
def _window(support: torch.Tensor, canvas: int) -> tuple[int, int, int]:
    """Square window ``(top, left, side)`` around the support ``(H, W)`` of the gradients."""
    box = support_box(support)
    if box is None:
        return 0, 0, canvas
    r0, r1, c0, c1 = box
    side = min(canvas, max(r1 - r0 + 1, c1 - c0 + 1))

    def start(lo: int, hi: int) -> int:
        return int(min(max(0, (lo + hi + 1) // 2 - side // 2), canvas - side))

    return start(r0, r1), start(c0, c1), side


def _noise(n: int, channels: int, size: int, std: float, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (0.5 + std * torch.randn(n, channels, size, size, generator=gen)).clamp(0.0, 1.0)


def _layer_gradients(
    model: Model, name: str, pixels: torch.Tensor, batch_size: int, state: dict[str, bool]
) -> torch.Tensor:
    """Mean gradient ``(units, C, H, W)`` of each centre unit of ``name`` over ``pixels``.

    ``state["batched"]`` is set to ``False`` (and the replicated batch used from then on)
    when the model's backward cannot be vmapped."""
    device = model.device
    n = len(pixels)
    total: torch.Tensor | None = None
    chunk = max(1, min(n, batch_size))
    with ActivationCapture(model.module, [name], freeze=True) as cap:
        for start in range(0, n, chunk):
            x = pixels[start : start + chunk].to(device).requires_grad_(True)
            grads = None
            if state.get("batched", True):
                grads = _batched_backward(model, cap, name, x, batch_size)
                state["batched"] = grads is not None
            if grads is None:
                grads = _replicated_backward(model, cap, name, x.detach(), batch_size)
            total = grads if total is None else total + grads
    assert total is not None
    return total / n


def _centre(act: Any, name: str) -> torch.Tensor:
    if not isinstance(act, torch.Tensor) or act.dim() != 4:
        raise ValueError(f"layer {name!r} has no (N, C, H, W) output")
    h, w = act.shape[-2:]
    return act[:, :, h // 2, w // 2]  # (n, units)


def _batched_backward(
    model: Model, cap: ActivationCapture, name: str, x: torch.Tensor, batch_size: int
) -> torch.Tensor | None:
    """One forward pass of the ``n`` images, then vmapped backward passes, ``batch_size // n``
    units each. Returns the gradients summed over the images ``(units, C, H, W)``, or
    ``None`` when the backward cannot be vmapped (an op or ``autograd.Function`` without a
    batching rule)."""
    with torch.enable_grad():
        centre = _centre(cap.run(model.normalize(x))[name], name)
    n, units = centre.shape
    per = max(1, batch_size // n)
    out = []
    for u0 in range(0, units, per):
        u1 = min(units, u0 + per)
        onehot = torch.zeros(u1 - u0, n, units, dtype=centre.dtype, device=centre.device)
        onehot[torch.arange(u1 - u0), :, torch.arange(u0, u1)] = 1.0
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # vmap's slow-path notices
                (grad,) = torch.autograd.grad(
                    centre, x, grad_outputs=onehot, is_grads_batched=True, retain_graph=u1 < units
                )
        except RuntimeError:
            return None
        out.append(grad.sum(dim=1).float().cpu())
    return torch.cat(out)


def _replicated_backward(
    model: Model, cap: ActivationCapture, name: str, x: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """The plain way: image ``(unit, i)`` is a copy of noise image ``i`` that back-propagates
    only ``unit``'s centre value; ``batch_size`` copies per pass."""
    n = len(x)
    with torch.no_grad():
        units = _centre(cap.run(model.normalize(x[:1]))[name], name).shape[1]
    pairs = [(u, i) for u in range(units) for i in range(n)]
    total = torch.zeros(units, *x.shape[1:])
    for start in range(0, len(pairs), max(1, batch_size)):
        chunk = pairs[start : start + batch_size]
        uid = torch.tensor([u for u, _ in chunk], device=x.device)
        iid = torch.tensor([i for _, i in chunk], device=x.device)
        xb = x.detach()[iid].requires_grad_(True)
        with torch.enable_grad():
            centre = _centre(cap.run(model.normalize(xb))[name], name)
            (grad,) = torch.autograd.grad(centre[torch.arange(len(chunk)), uid].sum(), xb)
        total.index_add_(0, uid.cpu(), grad.float().cpu())
    return total


# ------------------------------------------------------------------------------ the probe
def erf_probe(
    model: Model | nn.Module,
    layers: str | Sequence[str],
    *,
    size: int | None = None,
    n_noise: int = 8,
    noise_std: float = 0.15,
    seed: int = 0,
    min_rf: int = 5,
    clipped: bool = False,
    max_fit: int = 32,
    batch_size: int = 64,
    max_gradients: int | None = 384,
    progress: bool = False,
    geometry: LayerGeometry | None = None,
) -> dict[str, ErfResult]:
    """ERF Gabor fits of every unit of ``layers`` (see the module docstring).

    Args:
        model: the model (its preprocessing maps the ``[0, 1]`` noise images to input; a
            bare ``nn.Module`` is taken as a 224 px ImageNet model).
        layers: layer names (dotted or underscore form) with 4-D outputs.
        size: canvas size (default: the model's input size).
        n_noise: noise images averaged per unit.
        noise_std: std of the Gaussian noise around grey 0.5 (pixels, clipped to ``[0, 1]``).
        seed: seed of the noise images (the same images for every unit of a layer).
        min_rf: layers with a smaller receptive field (px) are skipped.
        clipped: also fit layers whose receptive field reaches past the canvas (by default
            they are skipped: their ERF is cut off; measured on EfficientNet-Lite0 their
            fits are poor anyway, median R^2 0.24 in ``_blocks.8``, 0.03 in ``_blocks.15``).
        max_fit: ERF windows larger than this are area-downsampled to it before fitting.
        batch_size: images per forward/backward pass.
        max_gradients: at most this many (unit, noise image) gradients per layer: wider
            layers average ``max(2, max_gradients // units)`` images; ``None``: ``n_noise``.
        progress: show a progress bar over the layers.
        geometry: the model's :class:`~interp.layer_geometry.LayerGeometry`, shared with the
            other instruments that probe it (its inventory and smallest canvases are traced
            once); default a fresh one.

    Returns:
        ``{layer: ErfResult}`` in request order; skipped layers have ``skipped`` set.
        ``rf_size`` is the RF measured on the full canvas (clipped to it:
        ``info["rf_clipped"]``), ``canvas`` the canvas the ERF was measured on.

    Raises:
        UnknownLayerError: for a layer name the model does not have.
    """
    from tqdm.auto import tqdm

    if n_noise < 1 or noise_std <= 0 or min_rf < 1 or max_fit < 5 or batch_size < 1:
        raise ValueError("need n_noise >= 1, noise_std > 0, min_rf >= 1, max_fit >= 5, batch >= 1")
    model = as_model(model)
    names = resolve_layers(model, layers)
    size = size or model.input_size[0]
    channels = model.preprocessing.channels
    results: dict[str, ErfResult] = {}
    state: dict[str, bool] = {}
    geometry = LayerGeometry.of(model, geometry)
    with preserved_state(model.module, eval_mode=True), geometry.pinned():
        infos = {i.name: i for i in geometry.layers(names, size)}
        for name in tqdm(names, desc="ERF", unit="layer", disable=not progress):
            info = infos[name]
            rf = max(info.rf_size) if info.rf_size else 0
            reason = None
            if info.output_shape is None or len(info.output_shape) != 3:
                shape = "no tensor" if info.output_shape is None else f"shape {info.output_shape}"
                reason = f"no spatial (N, C, H, W) output ({shape})"
            elif info.rf_size is None:
                reason = "receptive field not measurable (no gradient reaches the input)"
            elif min(info.rf_size) < min_rf:
                small = min(info.rf_size)
                reason = (
                    f"receptive field {small} px < {min_rf}: a {small}x{small} kernel has no "
                    "room for an oriented Gabor"
                )
            elif info.rf_clipped and not clipped:
                reason = (
                    f"receptive field reaches past the {size}-px canvas: the ERF is cut off, "
                    "a Gabor fit of it is not defined (clipped=True measures it anyway)"
                )
            if reason is not None:
                results[name] = _skipped(name, rf, size, channels, reason)
                continue
            units = int(info.output_shape[0])  # type: ignore[index]
            n = n_noise
            if max_gradients is not None and units * n > max_gradients:
                n = max(min(2, n_noise), max_gradients // units)
            canvas = geometry.canvas(info, size)
            pixels = _noise(n, channels, canvas, noise_std, seed)
            started = time.perf_counter()
            mean_grad = _layer_gradients(model, name, pixels, batch_size, state)
            gradient_s = time.perf_counter() - started
            top, left, side = _window(mean_grad.abs().sum(dim=(0, 1)) > 0, canvas)
            erf = mean_grad[:, :, top : top + side, left : left + side].contiguous()
            started = time.perf_counter()
            results[name] = _fit_layer(name, rf, canvas, erf, max_fit)
            fit_s = time.perf_counter() - started
            results[name].info.update(
                {
                    "noise_images": n,
                    "noise_std": noise_std,
                    "seed": seed,
                    "window": [top, left, side],
                    "rf_clipped": bool(info.rf_clipped),
                    "backward": "batched" if state.get("batched", True) else "replicated",
                    "gradient_seconds": round(gradient_s, 3),
                    "fit_seconds": round(fit_s, 3),
                }
            )
    return results


def _skipped(name: str, rf: int, canvas: int, channels: int, reason: str) -> ErfResult:
    empty = np.zeros(0)
    return ErfResult(
        layer=name,
        rf_size=rf,
        canvas=canvas,
        r2=empty,
        orientedness=empty.copy(),
        orientation=empty.copy(),
        frequency=empty.copy(),
        energy=empty.copy(),
        erf=np.zeros((0, channels, 0, 0), dtype=np.float32),
        info={"skipped": reason},
        skipped=reason,
    )


def _fit_layer(name: str, rf: int, canvas: int, erf: torch.Tensor, max_fit: int) -> ErfResult:
    """Fit every unit's ERF window ``(U, C, side, side)``."""
    side = erf.shape[-1]
    fit = erf
    if side > max_fit:
        fit = F.interpolate(erf, size=(max_fit, max_fit), mode="area")
    k = fit.shape[-1]
    energy = erf.double().flatten(1).norm(dim=1).numpy()
    patterns = _dominant_pattern(fit)
    params, r2 = fit_gabors(patterns)
    dead = ~(energy > 0) | ~np.isfinite(r2)
    oriented = np.zeros(len(r2))
    orientation = np.full(len(r2), np.nan)
    frequency = np.full(len(r2), np.nan)
    live = ~dead
    if live.any():
        o, a = spectral_orientation(_render(params[live], k))
        oriented[live], orientation[live] = o, a
        frequency[live] = params[live, 6] * k / side  # cycles per input pixel
    r2 = np.where(dead, np.nan, r2)
    return ErfResult(
        layer=name,
        rf_size=rf,
        canvas=canvas,
        r2=r2,
        orientedness=oriented,
        orientation=orientation,
        frequency=frequency,
        energy=energy,
        erf=erf.numpy().astype(np.float32),
        info={"fit_size": k, "erf_window": side},
    )
