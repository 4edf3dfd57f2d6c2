"""The one stage cache: its key follows the weights, the settings and the data; the same ones
reuse, a changed one recomputes, for every pipeline job (atlas, examples, hierarchy, report,
the experiment suite: tests/test_experiments.py)."""

from __future__ import annotations

import json

import pytest
import torch

import interp
import interp.featvis.batches as batches_mod
from interp.data.concepts import PartsWorldConcepts
from interp.pipeline import atlas as atlas_mod
from interp.pipeline import examples as examples_mod
from interp.pipeline import hierarchy as hierarchy_mod
from interp.pipeline.cache import StageCache, architecture_digest, stage_key, weights_digest


def _tiny(seed: int = 0) -> interp.Model:
    return interp.load_model("simplecnn", weights="none", seed=seed, width=0.25, input_size=32)


def _nudge(model: interp.Model) -> None:
    """A retrained checkpoint at the same path: one weight differs, the name does not."""
    with torch.no_grad():
        next(model.module.parameters()).view(-1)[0] += 1e-3


def test_weights_digest_follows_values_architecture_digest_only_shapes():
    a, b = _tiny(0), _tiny(1)
    assert weights_digest(a) != weights_digest(b)
    assert architecture_digest(a) == architecture_digest(b)
    before = weights_digest(a)
    _nudge(a)
    assert weights_digest(a) != before and a.name == b.name
    wider = interp.load_model("simplecnn", weights="none", seed=0, width=0.5, input_size=32)
    assert architecture_digest(wider) != architecture_digest(a)
    assert weights_digest(a) == weights_digest(a.module)  # a Model or its module


def test_stage_key_changes_with_each_part():
    model = _tiny()
    base = stage_key(model=model, settings={"k": 1}, data="photos")
    assert base == stage_key(model=model, settings={"k": 1}, data="photos")
    assert base != stage_key(model=model, settings={"k": 2}, data="photos")
    assert base != stage_key(model=model, settings={"k": 1}, data="partsworld")
    _nudge(model)
    assert base != stage_key(model=model, settings={"k": 1}, data="photos")


def test_stage_cache_reuse_recompute_force_and_exclusive(tmp_path):
    calls = []

    def work(tag):
        return lambda: calls.append(tag) or {"tag": tag}

    cache = StageCache(tmp_path, progress=False)
    assert cache.run("s", "k1", work("a")) == {"tag": "a"}
    assert cache.run("s", "k1", work("b")) == {"tag": "a"} and calls == ["a"]  # reused
    assert cache.log["s"] == "reused"
    assert cache.run("s", "k2", work("c")) == {"tag": "c"}  # another key: computed
    assert cache.run("s", "k1", work("d")) == {"tag": "a"}  # the first key's stage is kept
    assert StageCache(tmp_path, force=True).run("s", "k1", work("e")) == {"tag": "e"}
    cache.run("s", "k3", work("f"), exclusive=True)  # in place: the other keys are forgotten
    assert sorted(p.name for p in (tmp_path / "stages").glob("s-*.json")) == ["s-k3.json"]
    (tmp_path / "stages" / "s-k3.json").write_text("{not json")  # a torn marker: redo
    assert cache.run("s", "k3", work("g")) == {"tag": "g"}
    assert calls == list("acefg")
    assert StageCache(None).run("s", "k1", work("h")) == {"tag": "h"}  # no folder: no cache
    assert not list(tmp_path.rglob("*.tmp"))


def test_atlas_reuses_same_settings_and_rerenders_new_weights(tmp_path, monkeypatch):
    model = _tiny()
    calls = []
    real = batches_mod.render
    monkeypatch.setattr(batches_mod, "render", lambda *a, **k: calls.append(1) or real(*a, **k))
    kw = dict(layers="features.relu2", per_layer=2, steps=2, size=16, reference=None)
    first = atlas_mod.atlas(model, tmp_path, progress=False, **kw)
    assert calls and first.this_run["rendered"] == 2
    calls.clear()
    again = atlas_mod.atlas(model, tmp_path, progress=False, **kw)
    assert not calls and {k: again.this_run[k] for k in ("reused", "rendered")} == {
        "reused": 2,
        "rendered": 0,
    }
    _nudge(model)  # same name, other weights: the old images are not this model's
    third = atlas_mod.atlas(model, tmp_path, progress=False, **kw)
    assert calls and third.this_run["rendered"] == 2
    assert third.settings["weights"] != first.settings["weights"]
    assert interp.Atlas.load(tmp_path).settings["weights"] == third.settings["weights"]


def test_examples_job_reuses_same_settings_and_recomputes_a_change(tmp_path, monkeypatch):
    model = _tiny()
    calls = []
    real = examples_mod.find_examples
    monkeypatch.setattr(
        examples_mod, "find_examples", lambda *a, **k: calls.append(k["k"]) or real(*a, **k)
    )
    kw = dict(data="partsworld", layers=["features.relu2"], n=12, units=[0, 1], progress=False)
    first = examples_mod.examples_job(model, tmp_path, k=3, **kw)
    again = examples_mod.examples_job(model, tmp_path, k=3, **kw)
    assert calls == [3]  # the same weights, settings and data: the saved lists
    assert torch.equal(again["features.relu2"].top.items, first["features.relu2"].top.items)
    assert again.crops("features.relu2", 0)[0][0].shape == (64, 64, 3)  # with its dataset
    examples_mod.examples_job(model, tmp_path, k=2, **kw)  # a setting
    examples_mod.examples_job(model, tmp_path, k=2, **{**kw, "data": "partsworld?split=val"})
    _nudge(model)
    examples_mod.examples_job(model, tmp_path, k=2, **{**kw, "data": "partsworld?split=val"})
    assert calls == [3, 2, 2, 2]
    markers = list((tmp_path / "stages").glob("examples-*.json"))
    assert len(markers) == 1  # the folder holds one pass: only its marker is left
    doc = json.loads((tmp_path / "examples.json").read_text())
    assert doc["data"] == "partsworld?split=val" and set(doc["layers"][0]["units"]) == {"0", "1"}


def test_hierarchy_stages_follow_weights_and_controls_follow_the_architecture(
    tmp_path, monkeypatch
):
    model = _tiny(3)
    data = PartsWorldConcepts(n=24, size=32)
    kw = dict(
        control_seeds=(0,),
        max_control_seeds=1,
        bootstrap=20,
        batch_size=12,
        reference_images=8,
        progress=False,
    )
    probed = []
    real = hierarchy_mod.measure_hierarchy

    def counting(*args, **kwargs):
        stage = kwargs["stage"]

        def hook(role, seed, layers, compute):
            return stage(role, seed, layers, lambda c: probed.append(role) or compute(c))

        return real(*args, **{**kwargs, "stage": hook})

    monkeypatch.setattr(hierarchy_mod, "measure_hierarchy", counting)
    layers = ["features.relu1", "features.relu3"]
    hierarchy_mod.hierarchy(model, data, layers, out=tmp_path, **kw)
    assert probed == ["model", "control"]
    hierarchy_mod.hierarchy(model, data, layers, out=tmp_path, **kw)
    assert probed == ["model", "control"]  # reused
    hierarchy_mod.hierarchy(model, data, layers, out=tmp_path, **{**kw, "quantile": 0.01})
    assert probed[2:] == ["model", "control"]  # a setting of the dissection: both again
    _nudge(model)
    result = hierarchy_mod.hierarchy(model, data, layers, out=tmp_path, **kw)
    assert probed[4:] == ["model"]  # new weights: the model; its control is the same network
    saved = json.loads((tmp_path / "hierarchy.json").read_text())
    assert saved["settings"]["stages"] == result.settings["stages"]
    back = interp.Hierarchy.load(tmp_path)
    assert back.model.osi["features.relu1"].tolist() == result.model.osi["features.relu1"].tolist()
    (tmp_path / "stages" / result.settings["stages"]["model"]).unlink()  # probes deleted
    hierarchy_mod.hierarchy(model, data, layers, out=tmp_path, **kw)
    assert probed[5:] == ["model"]  # its marker alone is not a finished stage


@pytest.mark.parametrize("bad", ["partsworld?split=dev", "partsworld?colour=1", "nope:x"])
def test_data_specs_are_parsed_in_one_place(bad):
    from interp.data.specs import DatasetUnavailableError, data_images, parse_data_spec

    with pytest.raises(DatasetUnavailableError):
        parse_data_spec(bad)
    spec = parse_data_spec("partsworld?seed=2&split=val")
    assert (spec.name, spec.option("seed", 0, int), spec.option("split")) == (
        "partsworld",
        2,
        "val",
    )
    # one meaning of partsworld: the examples' images, the concepts and the training splits
    # of world 0 agree on the test split's seed (3), which no `interp train` run saw
    from interp.data import load_data
    from interp.data.concepts import load_concepts

    test = load_data("partsworld", size=16, n=10).test
    assert data_images("partsworld", size=16, n=4).seed == test.seed == 3
    assert load_concepts("partsworld", size=16, n=2).world.seed == 3
    assert load_concepts("partsworld?seed=1&split=train", size=16, n=2).world.seed == 1_000_004
    with pytest.raises(DatasetUnavailableError, match="dissection"):
        parse_data_spec("photos", "concepts")


def test_the_cli_takes_its_data_specs_from_the_registry(capsys):
    from interp.cli import main
    from interp.data.specs import DATASETS

    assert main(["data", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(e.usage in listed for e in DATASETS.values())
    for command, use in (("train", "splits"), ("examples", "images"), ("hierarchy", "concepts")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for e in DATASETS.values():
            shown = " ".join(e.usage.split())
            assert (shown.replace(" ", "") in text.replace(" ", "")) == getattr(e, use), (
                command,
                e.name,
            )
