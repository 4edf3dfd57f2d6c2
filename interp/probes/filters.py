"""The first convolution's filters: Gabor fits and the colour-versus-luminance split.

* **Gabor fit**: the filter's dominant colour direction (the first singular vector of the
  ``(in_channels, k*k)`` weight matrix) gives its spatial pattern, to which a 2-D Gabor
  ``A exp(-(x'^2/2sx^2 + y'^2/2sy^2)) cos(2 pi f x' + phase) + c`` is fitted by least squares
  from several starts (orientation and frequency from the pattern's spectrum); goodness of fit
  is ``R^2``. Kernels smaller than 5x5 have about as many pixels as a Gabor has parameters,
  so they are not fitted (``R^2`` is ``nan`` and the reason is stated).
* **Colour split**: ``colour fraction = ||W - mean_c W||^2 / ||W||^2``, the share of a
  filter's energy that differs between input channels: 0 for a filter that sees luminance
  only, 1 for a purely colour-opponent one (random filters average ``1 - 1/channels``).
  Krizhevsky et al. (2012) saw AlexNet's first layer split into the two kinds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ..models.base import Model
from ..models.registry import as_model

__all__ = [
    "FilterAnalysis",
    "analyse_filters",
    "colour_fraction",
    "first_conv",
    "gabor",
    "fit_gabor",
]

MIN_GABOR_KERNEL = 5


def first_conv(model: Model | nn.Module) -> tuple[str, nn.Conv2d]:
    """Name and module of the first ``Conv2d`` in the network (registration order)."""
    module = as_model(model).module
    for name, sub in module.named_modules():
        if isinstance(sub, nn.Conv2d):
            return name, sub
    raise ValueError("the model has no Conv2d layer")


def colour_fraction(weight: np.ndarray) -> np.ndarray:
    """Share of each filter's energy that is colour (differs between input channels).

    ``weight``: ``(out, in, k, k)``. Returns ``(out,)``; ``nan`` for one input channel.
    """
    w = np.asarray(weight, dtype=np.float64)
    if w.shape[1] < 2:
        return np.full(w.shape[0], np.nan)
    lum = w.mean(axis=1, keepdims=True)
    total = (w**2).sum(axis=(1, 2, 3))
    colour = ((w - lum) ** 2).sum(axis=(1, 2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, colour / total, 0.0)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.arange(size) - (size - 1) / 2.0
    ys, xs = np.meshgrid(r, r, indexing="ij")
    return ys, xs


def gabor(params: np.ndarray, size: int) -> np.ndarray:
    """A ``size`` x ``size`` Gabor patch: params ``(A, x0, y0, sx, sy, theta, f, phase, c)``."""
    return _gabor_and_jacobian(params, *_grid(size), jacobian=False)[0]


def _gabor_and_jacobian(
    params: np.ndarray, ys: np.ndarray, xs: np.ndarray, jacobian: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """The Gabor on the grid and, with ``jacobian``, its derivatives by each parameter
    (``(size, size, 9)``; checked against central differences in tests/test_hierarchy.py)."""
    a, x0, y0, sx, sy, theta, f, phase, c = params
    ct, st = math.cos(theta), math.sin(theta)
    dx, dy = xs - x0, ys - y0
    xr = dx * ct + dy * st
    yr = -dx * st + dy * ct
    env = np.exp(-(xr**2) / (2 * sx**2) - yr**2 / (2 * sy**2))
    arg = 2 * math.pi * f * xr + phase
    co = np.cos(arg)
    g = a * env * co + c
    if not jacobian:
        return g, None
    si = np.sin(arg)
    d_xr = a * env * (-xr / sx**2 * co - 2 * math.pi * f * si)  # dg/dx' and dg/dy'
    d_yr = a * env * co * (-yr / sy**2)
    jac = np.stack(
        [
            env * co,
            -ct * d_xr + st * d_yr,
            -st * d_xr - ct * d_yr,
            a * env * co * xr**2 / sx**3,
            a * env * co * yr**2 / sy**3,
            d_xr * yr - d_yr * xr,
            -a * env * si * 2 * math.pi * xr,
            -a * env * si,
            np.ones_like(env),
        ],
        axis=-1,
    )
    return g, jac


def fit_gabor(pattern: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares Gabor fit of a square 2-D ``pattern``: ``(params, R^2)``."""
    from scipy.optimize import least_squares

    p = np.asarray(pattern, dtype=np.float64)
    k = p.shape[0]
    sst = float(((p - p.mean()) ** 2).sum())
    if sst <= 0:
        return np.full(9, np.nan), 0.0
    # starting orientation and frequency from the spectrum's peak (zero-padded)
    n = 32
    spec = np.abs(np.fft.fftshift(np.fft.fft2(p - p.mean(), s=(n, n))))
    iy, ix = np.unravel_index(spec.argmax(), spec.shape)
    fy, fx = (iy - n // 2) / n, (ix - n // 2) / n
    f0 = max(math.hypot(fx, fy), 0.5 / k)
    theta0 = math.atan2(fy, fx)
    amp = float(np.abs(p - p.mean()).max())
    half = (k - 1) / 2.0
    lower = [-np.inf, -half, -half, 0.3, 0.3, -np.inf, 0.0, -np.inf, -np.inf]
    upper = [np.inf, half, half, 2.0 * k, 2.0 * k, np.inf, 0.5, np.inf, np.inf]
    best, best_cost = None, np.inf
    ys, xs = _grid(k)
    flat = p.ravel()

    def residual(q: np.ndarray) -> np.ndarray:
        return _gabor_and_jacobian(q, ys, xs, jacobian=False)[0].ravel() - flat

    def jacobian(q: np.ndarray) -> np.ndarray:
        return _gabor_and_jacobian(q, ys, xs)[1].reshape(k * k, 9)  # type: ignore[union-attr]

    # the amplitude's sign covers a phase shift of pi, so two phases suffice
    for phase in (0.0, math.pi / 2):
        for sigma in (k / 6.0, k / 3.0):
            x0 = np.array([amp, 0.0, 0.0, sigma, sigma, theta0, min(f0, 0.49), phase, p.mean()])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fit = least_squares(residual, x0, jac=jacobian, bounds=(lower, upper), max_nfev=400)
            if fit.cost < best_cost:
                best, best_cost = fit.x, fit.cost
    r2 = 1.0 - 2.0 * best_cost / sst
    return best, float(r2)


@dataclass
class FilterAnalysis:
    """Gabor fits and colour split of the first convolution's filters."""

    layer: str
    kernel: int
    in_channels: int
    gabor_r2: np.ndarray  # (out,), nan when not fitted
    colour_fraction: np.ndarray  # (out,)
    note: str = ""

    def summary(self, gabor_rule: float = 0.8) -> dict[str, Any]:
        fitted = not np.isnan(self.gabor_r2).all()
        cf = self.colour_fraction
        has_colour = not np.isnan(cf).all()
        return {
            "layer": self.layer,
            "kernel": self.kernel,
            "filters": int(len(cf)),
            "gabor": {
                "rule": f"Gabor-like when the fit's R^2 > {gabor_rule}",
                "fraction": round(float((self.gabor_r2 > gabor_rule).mean()), 4),
                "r2_quantiles_10_50_90": np.quantile(self.gabor_r2, [0.1, 0.5, 0.9])
                .round(4)
                .tolist(),
            }
            if fitted
            else {"rule": self.note, "fraction": None},
            "colour": {
                "rule": "colour filter when colour fraction > 0.8, luminance filter when < 0.2 "
                f"(random filters average {1 - 1 / max(1, self.in_channels):.2f})",
                "colour_fraction_quantiles_10_50_90": np.quantile(cf, [0.1, 0.5, 0.9])
                .round(4)
                .tolist(),
                "colour_filters": round(float((cf > 0.8).mean()), 4),
                "luminance_filters": round(float((cf < 0.2).mean()), 4),
            }
            if has_colour
            else None,
        }


def analyse_filters(model: Model | nn.Module, *, fit: bool = True) -> FilterAnalysis:
    """Gabor fit (when the kernel is at least 5x5) and colour split of the first conv."""
    name, conv = first_conv(model)
    w = conv.weight.detach().float().cpu().numpy()
    out, cin, kh, kw = w.shape
    cf = colour_fraction(w)
    r2 = np.full(out, np.nan)
    note = ""
    if kh != kw or kh < MIN_GABOR_KERNEL:
        note = (
            f"{kh}x{kw} kernels are not fitted: a Gabor has 9 parameters, so a fit to fewer "
            f"than {MIN_GABOR_KERNEL}x{MIN_GABOR_KERNEL} pixels says nothing"
        )
    elif fit:
        for i in range(out):
            u, s, vt = np.linalg.svd(w[i].reshape(cin, -1), full_matrices=False)
            pattern = (s[0] * vt[0]).reshape(kh, kw)
            r2[i] = fit_gabor(pattern)[1]
    return FilterAnalysis(name, kh, cin, r2, cf, note)
