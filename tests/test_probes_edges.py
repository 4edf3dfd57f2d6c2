"""Edge probe validated on planted filters: Gabors recover their orientation with a high OSI,
isotropic difference-of-Gaussians get an OSI near zero."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from interp import Model, Preprocessing
from interp.probes import edge_probe, gratings, orientation_selectivity


def planted(kernels: torch.Tensor, size: int = 33) -> Model:
    conv = nn.Conv2d(
        3, kernels.shape[0], kernels.shape[-1], padding=kernels.shape[-1] // 2, bias=False
    )
    with torch.no_grad():
        conv.weight.copy_(kernels[:, None].expand(-1, 3, -1, -1) / 3)
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(size, size))
    return Model(nn.Sequential(conv).eval(), "planted", pre)


def kernel_coords(k: int = 11):
    c = (k - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(k) - c, torch.arange(k) - c, indexing="ij")
    return cols.float(), -rows.float()  # x right, y up


def gabor(stripe_deg: float, freq: float = 0.15, sigma: float = 2.5) -> torch.Tensor:
    x, y = kernel_coords()
    wave = math.radians(stripe_deg + 90)
    envelope = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    return envelope * torch.cos(2 * math.pi * freq * (x * math.cos(wave) + y * math.sin(wave)))


def dog(s1: float, s2: float) -> torch.Tensor:
    x, y = kernel_coords()
    r2 = x**2 + y**2
    g = lambda s: torch.exp(-r2 / (2 * s**2)) / (2 * math.pi * s**2)  # noqa: E731
    return g(s1) - g(s2)


def test_osi_formula_on_known_tunings():
    angles = [15.0 * k for k in range(12)]
    flat = np.ones(12)
    peaked = np.zeros(12)
    peaked[4] = 1.0
    assert orientation_selectivity(flat, angles) == pytest.approx(0.0, abs=1e-9)
    assert orientation_selectivity(peaked, angles) == pytest.approx(1.0)
    assert orientation_selectivity(np.zeros(12), angles) == 0.0


def test_gratings_are_oriented_as_named():
    g = gratings(21, [0.0, 90.0], [0.1], [0.0], channels=1)
    horizontal, vertical = g[0, 0], g[1, 0]
    assert torch.allclose(horizontal[:, 3], horizontal[:, 15])  # constant along a row
    assert torch.allclose(vertical[3, :], vertical[15, :])  # constant along a column


def test_planted_gabors_and_dogs():
    stripes = [0.0, 30.0, 60.0, 90.0, 120.0, 150.0]
    kernels = torch.stack([gabor(a) for a in stripes] + [dog(1.0, 2.5), dog(1.5, 3.5)])
    result = edge_probe(planted(kernels), "0", n_orientations=12, n_phases=4)["0"]
    for i, a in enumerate(stripes):
        diff = abs((result.preferred_orientation[i] - a + 90) % 180 - 90)
        assert diff <= 15, (a, result.preferred_orientation[i])
        assert result.osi[i] > 0.5, (a, result.osi[i])
    assert result.osi[6] < 0.1 and result.osi[7] < 0.1, result.osi[6:]
    assert result.summary()["units"] == 8
