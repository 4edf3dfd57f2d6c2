"""Edge probe validated on planted units with known answers: Gabors (also saturating ReLU6
units with a positive bias, and behind a second layer) are edge units at their planted
orientations, difference-of-Gaussians and colour-opponent units are not, deep colour-blob
decoys with a weak oriented leak are not (the former probe ranked them above the Gabors),
and a unit's status survives a change of baseline or gain."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import all_hooks
from planted import GaborsThenDecoys, gabor_bank, non_edges, preprocessing, single
from torch import nn

import interp
from interp import Model, Preprocessing
from interp.data.concepts import PartsWorldConcepts
from interp.probes import edge_probe, gratings, orientation_selectivity
from interp.probes.edges import edge_units, natural_reference

# colourful natural-ish reference images for the drive ratio (PartsWorld scenes, 48 px)
_REF = PartsWorldConcepts(n=48, size=48)


def _angle_error(a: np.ndarray, b) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + 90) % 180 - 90)


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
    result = edge_probe(planted(kernels), "0", n_orientations=12, n_phases=4, reference=None)["0"]
    for i, a in enumerate(stripes):
        diff = abs((result.preferred_orientation[i] - a + 90) % 180 - 90)
        assert diff <= 15, (a, result.preferred_orientation[i])
        assert result.osi[i] > 0.5, (a, result.osi[i])
    assert result.osi[6] < 0.1 and result.osi[7] < 0.1, result.osi[6:]
    assert result.summary()["units"] == 8


def test_saturating_relu6_gabors_are_edge_units_at_their_orientations():
    """(a) Gabors with a positive bias (2.6, like the stem's median at grey) and a gain that
    saturates ReLU6 at full contrast: the probe reads them at a contrast that does not clip,
    and all of them are edge units at their planted orientations."""
    bank, angles = gabor_bank()
    linear = edge_probe(single(bank), "0", reference=_REF)["0"]
    sat = edge_probe(single(bank, 2.6, 1.0, nn.ReLU6()), "1", reference=_REF)["1"]
    assert sat.clipped[-1] > 0.05  # full contrast clips ...
    assert (sat.contrast < 1.0).all() and (sat.unit_clipped < 0.05).all()  # ... so not read there
    assert edge_units(sat).all() and edge_units(linear).all()
    assert (_angle_error(sat.preferred_orientation, angles) <= 15).all()
    assert np.allclose(sat.osi, linear.osi, atol=0.03)
    assert sat.simple.all()


def test_non_edges_are_not_edge_units():
    """(c) Isotropic DoGs (on/off centre) and colour-opponent blobs and DoGs."""
    for model, layer in (
        (single(non_edges()), "0"),
        (single(non_edges(), 2.6, 1.0, nn.ReLU6()), "1"),
    ):
        r = edge_probe(model, layer, reference=_REF)[layer]
        assert not edge_units(r).any(), (r.osi, r.drive_ratio)
        assert (r.osi[:3] < 0.06).all()  # luminance DoGs: isotropic
        assert (r.drive_ratio[3:] < 0.05).all()  # colour-opponent: luminance gratings do nothing


def test_status_survives_baseline_and_gain():
    """(d) +-2 on the baseline, or another gain within the non-clipping range, changes no
    unit's status (Gabors stay edge units, DoGs and opponent units stay not)."""
    bank, _ = gabor_bank()
    weights = torch.cat([bank, non_edges()])
    ref = natural_reference(single(weights, 2.6, 1.0, nn.ReLU6()), _REF, ["1"], images=48)
    status = []
    for bias, gain in ((2.6, 1.0), (4.6, 1.0), (0.6, 1.0), (2.6, 0.5), (2.6, 0.25)):
        model = single(weights, bias, gain, nn.ReLU6())
        r = edge_probe(model, "1", reference=_REF)["1"]
        status.append(edge_units(r))
    assert all(np.array_equal(status[0], s) for s in status[1:])
    assert status[0][: len(bank)].all() and not status[0][len(bank) :].any()
    assert ref["1"].shape == (len(weights),)


def test_deep_decoys_are_not_edge_units_though_the_old_probe_ranked_them_first():
    """(b) Colour-blob units with a weak oriented leak and a negative offset at a signed layer:
    the former probe (rectified, max over phase, no baseline, full contrast) gives them a
    higher OSI than the planted Gabors; the drive ratio (~0.1) keeps them out."""
    torch.manual_seed(0)
    net = Model(GaborsThenDecoys().eval(), "planted", preprocessing(48))
    r = edge_probe(net, ["early.1", "deep"], reference=_REF)
    early, deep = r["early.1"], r["deep"]
    assert edge_units(early).all() and not edge_units(deep).any()
    assert (deep.drive_ratio < 0.25).all() and (early.drive_ratio > 0.6).all()
    # the former probe's OSI, from the same gratings at full contrast
    old = {}
    for name in ("early.1", "deep"):
        g = gratings(48, early.orientations, [0.1414], [k * math.pi / 2 for k in range(4)])
        act = interp.capture(net, net.normalize(g), [name])[name][:, :, 24, 24]
        tuning = act.clamp_min(0).reshape(12, 4, -1).amax(dim=1).T.numpy()
        old[name] = orientation_selectivity(tuning, early.orientations)
    assert np.median(old["deep"]) > np.median(old["early.1"])


@pytest.mark.parametrize("size", [32, 33])
def test_gratings_are_centred_on_the_rf_on_even_and_odd_canvases(size):
    """The centre unit of an even map sits half a pixel off the canvas centre: the probe
    measures the RF centre, and an isotropic DoG gets OSI ~0 on both sizes."""
    from interp.probes.edges import rf_centres

    model = planted(torch.stack([dog(1.0, 2.5)]), size)
    centre = rf_centres(model, ["0"], size)["0"]
    assert centre == (float(size // 2), float(size // 2))
    r = edge_probe(model, "0", reference=None, size=size)["0"]
    assert r.osi[0] < 0.02


def test_edge_probe_restores_hooks_and_mode_also_when_it_raises():
    bank, _ = gabor_bank()
    model = single(bank, 2.6, 1.0, nn.ReLU6())
    model.module.train()
    flags = [p.requires_grad for p in model.module.parameters()]
    before = all_hooks(model.module)
    edge_probe(model, "1", reference=_REF)
    assert all_hooks(model.module) == before and model.module.training
    assert [p.requires_grad for p in model.module.parameters()] == flags

    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    bad = Model(nn.Sequential(model.module[0], Boom(), nn.ReLU6()), "bad", preprocessing(48))
    with pytest.raises(RuntimeError):
        edge_probe(bad, "2", reference=None)
    assert all_hooks(bad.module) == 0 and bad.module.training


def test_without_reference_no_unit_is_an_edge_unit():
    bank, _ = gabor_bank()
    r = edge_probe(single(bank), "0", reference=None)["0"]
    assert np.isnan(r.drive_ratio).all() and not edge_units(r).any()
    assert (r.osi > 0.25).all()
