"""One trace of a network's layer geometry (inventory with receptive fields, smallest
canvases) shared by every instrument that probes it (issue 35, item 4): counted, identical
to the untraced calls, never stale, and leaving the model as it was."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from conftest import all_hooks
from torch import nn

import interp
import interp.layer_geometry as geometry_module
from interp import Model
from interp.data.concepts import PartsWorldConcepts
from interp.inventory import layers as inventory
from interp.inventory import smallest_canvas
from interp.layer_geometry import LayerGeometry
from interp.models.base import Preprocessing
from interp.probes.edges import edge_probe
from interp.probes.erf import erf_probe
from interp.probes.hierarchy import probe_network, random_control, reference_crops

LAYERS = ["features.relu1", "features.relu3", "features.relu5"]
SIZE = 32


@pytest.fixture(scope="module")
def small():
    return interp.load_model("simplecnn", weights="none", seed=3, width=0.25, input_size=SIZE)


@pytest.fixture
def counted(monkeypatch):
    """Counts the traces behind every geometry: ``{"layers": n, "canvas": Counter(layer)}``."""
    calls = {"layers": 0, "canvas": Counter()}

    def trace(*args, **kwargs):
        calls["layers"] += 1
        return inventory(*args, **kwargs)

    def canvas(model, info, size):
        calls["canvas"][info.name] += 1
        return smallest_canvas(model, info, size)

    monkeypatch.setattr(geometry_module, "layers", trace)
    monkeypatch.setattr(geometry_module, "smallest_canvas", canvas)
    return calls


def _both(model, geometry=None):
    kw = {"size": SIZE, "geometry": geometry}
    ref = reference_crops(16, SIZE)
    edges = edge_probe(model, LAYERS, reference=ref, reference_images=16, **kw)
    erf = erf_probe(model, LAYERS, n_noise=2, **kw)
    return edges, erf


def test_a_hierarchy_network_traces_its_inventory_once_and_each_canvas_once(small, counted):
    data = PartsWorldConcepts(n=8, size=SIZE)
    found = probe_network(
        small,
        data,
        LAYERS,
        role="model",
        seed=None,
        notes=[],
        dissect_kwargs=None,
        reference=reference_crops(16, SIZE),
        progress=False,
    )
    assert found.gratings and found.erf  # both instruments measured
    assert counted["layers"] == 1
    assert counted["canvas"] == Counter(LAYERS)  # each layer's canvas searched once
    # without a shared geometry each probe traces its own: the work the memo saves
    counted["layers"], counted["canvas"] = 0, Counter()
    _both(small)
    assert counted["layers"] == 2 and max(counted["canvas"].values()) == 2


def test_shared_geometry_gives_the_untraced_results(small, counted):
    alone_edges, alone_erf = _both(small)
    geometry = LayerGeometry(small)
    edges, erf = _both(small, geometry)
    assert counted["layers"] == 2 + 1
    assert geometry.counts() == {"traced": 1, "searched": len(LAYERS), "reused": 3}
    assert list(edges) == list(alone_edges) and list(erf) == list(alone_erf)
    for name in edges:
        a, b = alone_edges[name], edges[name]
        for key in ("osi", "drive_ratio", "preferred_orientation", "contrast", "tuning"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
        assert a.info == b.info
    for name in erf:
        a, b = alone_erf[name], erf[name]
        assert (a.skipped, a.canvas, a.rf_size) == (b.skipped, b.canvas, b.rf_size)
        for key in ("r2", "orientedness", "orientation", "erf"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    # and the geometry's answers are the inventory's and smallest_canvas's
    infos = inventory(small, names=LAYERS, input_size=(SIZE, SIZE))
    assert geometry.layers(LAYERS, SIZE) == infos
    assert geometry.canvases(infos, SIZE) == {
        i.name: smallest_canvas(small, i, SIZE) for i in infos
    }


def test_a_part_that_leaves_out_only_non_spatial_layers_reads_the_trace(small):
    geometry = LayerGeometry(small)
    with_fc = geometry.layers([*LAYERS[:2], "fc"], SIZE)
    assert len(with_fc[-1].output_shape) == 1  # fc: no spatial output
    part = geometry.layers(LAYERS[:2], SIZE)
    assert geometry.counts()["traced"] == 1
    assert part == inventory(small, names=LAYERS[:2], input_size=(SIZE, SIZE))
    geometry.layers(LAYERS[:1], SIZE)  # leaves out a spatial layer: traced anew
    geometry.layers(LAYERS[:2], (SIZE, SIZE), chunk=1)  # other settings: traced anew
    assert geometry.counts()["traced"] == 3


def _dead_path() -> Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(16, 16))
    return Model(net.eval(), "dead path", pre)


def test_the_trace_follows_the_weights_and_the_structure_never_stale():
    model = _dead_path()
    geometry = LayerGeometry(model)
    assert geometry.layers(["2"], 16)[0].rf_size == (5, 5)
    # a ReLU that never fires hides every pixel: the receptive field is measured with the
    # weights (changed through .data, which no version counter sees)
    model.module[0].bias.data.fill_(-100.0)
    assert geometry.layers(["2"], 16)[0].rf_size is None
    assert inventory(model, names=["2"], input_size=(16, 16))[0].rf_size is None
    # so a random-init control of the same architecture sees what the model does not: each
    # control gets its own geometry, the model's is refused
    control, _ = random_control(model, 0)
    assert inventory(control, names=["2"], input_size=(16, 16))[0].rf_size == (5, 5)
    with pytest.raises(ValueError, match="its own LayerGeometry"):
        LayerGeometry.of(control, geometry)
    assert LayerGeometry.of(model, geometry) is geometry
    # a structural change without a new parameter (dilation 2): traced anew
    model.module[0].bias.data.zero_()
    conv = model.module[2]
    conv.dilation, conv.padding = (2, 2), (2, 2)
    info = geometry.layers(["2"], 16)[0]
    assert info.rf_size == (7, 7) == inventory(model, names=["2"], input_size=(16, 16))[0].rf_size
    assert geometry.canvas(info, 16) == smallest_canvas(model, info, 16)
    assert geometry.counts()["traced"] == 3


def test_hooks_modes_and_grad_flags_are_restored(small):
    module = small.module
    module.train()
    module.features[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in module.parameters()]
    modes = [m.training for m in module.modules()]
    hooks = all_hooks(module)
    try:
        geometry = LayerGeometry(small)
        infos = geometry.layers(LAYERS, SIZE)
        geometry.canvases(infos, SIZE)
        _both(small, geometry)
        assert all_hooks(module) == hooks
        assert [m.training for m in module.modules()] == modes
        assert [p.requires_grad for p in module.parameters()] == flags
    finally:
        module.eval()
        module.features[0].weight.requires_grad_(True)


def test_a_pinned_block_compares_the_weights_once(monkeypatch):
    model = _dead_path()
    geometry = LayerGeometry(model)
    digests = []
    real = geometry_module.weights_digest
    monkeypatch.setattr(geometry_module, "weights_digest", lambda m: digests.append(1) or real(m))
    info = geometry.layers(["2"], 16)[0]
    geometry.canvas(info, 16)
    assert len(digests) == 2  # before every answer
    with geometry.pinned():
        geometry.layers(["2"], 16)
        geometry.canvas(info, 16)
        geometry.canvases([info], 16)
    assert len(digests) == 3  # once, on entry
    model.module[0].bias.data.fill_(-100.0)
    assert geometry.layers(["2"], 16)[0].rf_size is None  # after the block: compared again
