"""Dataset examples: the streaming top-k equals brute force, a planted patch detector finds the
images with the patch and its receptive-field box holds it, hooks never survive."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Boom, all_hooks
from torch import nn

from interp import Model, Preprocessing
from interp.dataset_examples import Examples, RunningTopK, examples
from interp.views.examples_figures import save_examples


def _brute(values, sources, k, largest, dedup):
    out = []
    for row in values:
        order = sorted(range(len(row)), key=lambda i: (-row[i] if largest else row[i], i))
        seen, keep = set(), []
        for i in order:
            if dedup and sources[i] in seen:
                continue
            seen.add(sources[i])
            keep.append(i)
            if len(keep) == k:
                break
        out.append(keep + [-1] * (k - len(keep)))
    return out


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("dedup", [True, False])
def test_running_topk_equals_brute_force(largest, dedup):
    g = torch.Generator().manual_seed(0)
    n, units, k = 61, 5, 7
    values = torch.randint(0, 12, (units, n), generator=g).float()  # many ties
    sources = torch.randint(0, 9, (n,), generator=g)
    top = RunningTopK(units, k, largest=largest, dedup=dedup)
    for start in range(0, n, 8):
        sl = slice(start, min(n, start + 8))
        idx = torch.arange(n)[sl]
        top.update(values[:, sl], idx, sources[sl], torch.zeros(units, len(idx), dtype=torch.long))
    want = _brute(values.tolist(), sources.tolist(), k, largest, dedup)
    assert top.items.tolist() == want


def _patch_world(n: int = 40, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    patch = np.zeros((3, 5, 5), dtype=np.float32)
    patch[0, ::2, ::2] = 1.0  # a red checkerboard on black
    patch[2, 1::2, 1::2] = 1.0
    images, where = [], {}
    for i in range(n):
        img = rng.uniform(0.4, 0.6, (3, size, size)).astype(np.float32)
        if i % 5 == 2:
            y, x = rng.integers(0, size - 5, 2)
            img[:, y : y + 5, x : x + 5] = patch
            where[i] = (int(x), int(y))
        images.append(torch.from_numpy(img))
    dataset = [(im, 0) for im in images]
    return dataset, patch, where


def _matched(patch: np.ndarray, size: int = 32) -> Model:
    conv = nn.Conv2d(3, 2, 5, padding=2, bias=False)
    w = torch.from_numpy(patch - patch.mean())
    with torch.no_grad():
        conv.weight[0] = w
        conv.weight[1] = -w
    pre = Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3, input_size=(size, size))
    return Model(nn.Sequential(OrderedDict(conv=conv)).eval(), "matched", pre)


def test_planted_patch_detector_finds_the_patch(tmp_path):
    dataset, patch, where = _patch_world()
    model = _matched(patch)
    res = examples(model, dataset, ["conv"], k=len(where), bottom=True, progress=False)
    r = res["conv"]
    assert r.rf_size == 5 and r.grid == (32, 32)
    top = r.unit(0)
    assert sorted(e["item"] for e in top) == sorted(where)
    for e in top:
        x, y = where[e["item"]]
        x0, y0, x1, y1 = e["box"]
        assert x0 <= x and y0 <= y and x1 >= x + 5 and y1 >= y + 5  # the crop holds the patch
        assert (x1 - x0, y1 - y0) == (5, 5)
    # unit 1 is the negated filter: its most negative responses are the same images
    assert sorted(e["item"] for e in r.unit(1, "bottom")) == sorted(where)
    doc = json.loads(save_examples(res, tmp_path, title="matched").read_text())
    assert (tmp_path / "examples.json").is_file()
    assert (tmp_path / doc["layers"][0]["figures"][0]).stat().st_size > 1000
    assert all_hooks(model.module) == 0
    # the result alone writes its data and lists no figure; it loads back the same
    res.save(tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [
        "examples.json",
        "examples.pt",
    ]
    back = Examples.load(tmp_path / "data", data=dataset)
    assert back.to_dict() == res.to_dict() and back["conv"].unit(1, "bottom") == r.unit(1, "bottom")
    assert (
        json.loads((tmp_path / "data" / "examples.json").read_text())["layers"][0]["figures"] == []
    )


def test_grids_show_each_layer_its_own_units(tmp_path):
    """A ``{layer: channels}`` mapping (the report's: each layer's atlas units) gives each
    layer the grids and JSON records of its own channels, none of another layer's."""
    dataset, patch, _ = _patch_world(n=20)
    model = _matched(patch)
    model.module.add_module("relu", nn.ReLU())
    res = examples(model, dataset, ["conv", "relu"], k=3, progress=False)
    assert res.unit_indices("conv", {"conv": [1], "relu": [0]}) == [1]
    assert res.unit_indices("relu", {"conv": [1]}) == []
    assert res.unit_indices("relu", [0, 1, 5]) == [0, 1]  # a sequence: every layer
    doc = json.loads(save_examples(res, tmp_path, units={"conv": [1], "relu": [0]}).read_text())
    by_layer = {e["layer"]: e for e in doc["layers"]}
    assert list(by_layer["conv"]["units"]) == ["1"] and list(by_layer["relu"]["units"]) == ["0"]
    assert [Path(f).name for f in by_layer["conv"]["figures"]] == ["units_0001-0001.png"]
    assert [Path(f).name for f in by_layer["relu"]["figures"]] == ["units_0000-0000.png"]
    assert sorted(p.name for p in (tmp_path / "conv").iterdir()) == ["units_0001-0001.png"]


def test_examples_restore_state_and_hooks_on_error():
    dataset, patch, _ = _patch_world(n=10)
    module = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 2, 3), boom=Boom())).train()
    model = Model(module, "boom", Preprocessing(input_size=(32, 32)))
    flags = [p.requires_grad for p in module.parameters()]
    with pytest.raises(RuntimeError, match="boom"):
        examples(model, dataset, ["boom"], progress=False)
    assert all_hooks(module) == 0 and module.training
    assert [p.requires_grad for p in module.parameters()] == flags


def test_photo_examples_are_deduplicated_by_photo(lite0):
    res = examples(lite0, "photos", ["_blocks.2"], k=5, n=24, size=96, progress=False)
    r = res["_blocks.2"]
    for u in range(r.units):
        sources = [e["source"] for e in r.unit(u)]
        assert len(sources) == len(set(sources)) == 5
    assert all_hooks(lite0.module) == 0


def test_unit_card_for_a_planted_unit(tmp_path):
    from interp.pipeline.card import unit_card

    dataset, patch, where = _patch_world()
    model = _matched(patch)
    card = unit_card(
        model, "conv:0", tmp_path, data=dataset, k=4, steps=8, featvis_size=32, progress=False
    )
    doc = card.to_dict()
    assert json.loads((tmp_path / f"{card.stem}.json").read_text()) == doc
    assert {e["item"] for e in doc["examples"]} <= set(where)
    assert doc["rf_size"] == 5 and 0 <= doc["scores"]["osi"] <= 1
    assert (tmp_path / doc["png"]).stat().st_size > 5000
    assert all_hooks(model.module) == 0
    back = type(card).load(tmp_path)  # every result loads back what it saved
    assert back.to_dict() == doc and np.array_equal(back.featvis, card.featvis)
    pairs = zip(back.rows, card.rows, strict=True)
    assert all(np.array_equal(a["drives"], b["drives"]) for a, b in pairs)
    from interp import ChannelError

    with pytest.raises(ChannelError):
        unit_card(model, "conv:7", tmp_path, data=dataset, steps=8, progress=False)
