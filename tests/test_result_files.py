"""Every result has ``to_dict`` / ``save(folder)`` / ``load(folder)``: the grating, ERF and
render results round-trip through their files (JSON + npz, written atomically)."""

from __future__ import annotations

import json

import numpy as np
import torch
from conftest import tiny_cnn

from interp import Model, Preprocessing
from interp.featvis.render import RenderResult, render
from interp.probes.edges import EdgeResult, edge_probe
from interp.probes.erf import ErfResult, erf_probe


def _model() -> Model:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        module = tiny_cnn().eval()
    return Model(module, "tiny", Preprocessing(input_size=(24, 24)))


def _same_arrays(a, b, names):
    for name in names:
        x, y = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        assert x.dtype == y.dtype and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


def _json(doc):
    return json.loads(json.dumps(doc))


def test_erf_result_round_trips(tmp_path):
    results = erf_probe(_model(), ["0", "4", "8"], n_noise=2, min_rf=3)
    assert results["8"].skipped  # a skipped layer round-trips too
    for layer, res in results.items():
        paths = res.save(tmp_path / layer)
        assert [p.suffix for p in paths] == [".npz", ".json"]
        back = ErfResult.load(tmp_path / layer)
        _same_arrays(res, back, ErfResult.ARRAYS)
        assert back.to_dict() == _json(res.to_dict()) and back.skipped == res.skipped
    results["0"].save(tmp_path / "0", stem="other")
    back = ErfResult.load(tmp_path / "0", "other")
    assert back.layer == "0"


def test_edge_result_round_trips(tmp_path):
    res = edge_probe(_model(), ["2"], reference=None, size=24)["2"]
    res.save(tmp_path)
    back = EdgeResult.load(tmp_path)
    _same_arrays(res, back, EdgeResult.ARRAYS)
    assert back.to_dict() == _json(res.to_dict())
    assert back.summary() == _json(res.summary())


def test_render_result_round_trips(tmp_path):
    res = render(_model(), "2:0", steps=2, size=24, progress=False)
    res.save(tmp_path)
    back = RenderResult.load(tmp_path)
    assert torch.equal(back.images, res.images) and torch.equal(back.values, res.values)
    assert back.to_dict() == _json(res.to_dict()) and back.history == res.history
