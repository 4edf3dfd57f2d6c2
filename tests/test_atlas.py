"""The visualize and atlas jobs: outputs, default layers, channel specs, resume."""

from __future__ import annotations

import json

import pytest
import torchvision

import interp
import interp.featvis.batches as batches_mod
from interp import ChannelError
from interp.cli import main
from interp.inventory import default_layers
from interp.models.registry import as_model
from interp.pipeline.atlas import atlas, parse_channels


def test_parse_channels():
    assert parse_channels("0:4", 10) == [0, 1, 2, 3]
    assert parse_channels("0:10:4, 7", 10) == [0, 4, 8, 7]
    assert parse_channels("all", 3) == [0, 1, 2]
    with pytest.raises(ChannelError, match=r"10 channels \(0..9\)"):
        parse_channels("8,12", 10)
    with pytest.raises(ChannelError, match="0:16"):
        parse_channels("abc", 10)


def test_default_layers_are_the_blocks(resnet18, lite0):
    assert default_layers(resnet18) == [f"layer{i}.{j}" for i in range(1, 5) for j in (0, 1)]
    assert default_layers(lite0) == [f"_blocks.{i}" for i in range(16)]
    plain = as_model(torchvision.models.alexnet())
    assert default_layers(plain) == [
        "features.1",
        "features.4",
        "features.7",
        "features.9",
        "features.11",
    ]


def test_visualize_cli_writes_pngs_grid_and_results(tmp_path, capsys):
    out = tmp_path / "vis"
    argv = [
        "visualize",
        "torchvision:resnet18",
        "--weights",
        "none",
        "--layer",
        "layer1_0_conv1",
        "--channels",
        "0:3",
        "--steps",
        "3",
        "--size",
        "32",
        "--n-reference",
        "8",
        "--precision",
        "fp32",
        "--quiet",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    entry = doc["layers"][0]
    assert [u["channel"] for u in entry["units"]] == [0, 1, 2]
    for unit in entry["units"]:
        assert (out / unit["png"]).is_file()
        assert {"value", "natural_max", "exceeds_natural", "seed"} <= set(unit)
    assert (out / "grid.png").is_file() and entry["layer"] == "layer1.0.conv1"
    assert "natural max" in capsys.readouterr().out
    assert doc["settings"]["precision"] == "fp32"
    loaded = interp.Atlas.load(out)  # the result object reads back what was written
    assert loaded.to_dict() == doc and loaded.image("layer1.0.conv1", 2).shape[:2] == (32, 32)
    bad = [*argv[:-1], str(tmp_path / "bad")]
    bad[bad.index("0:3")] = "60:70"
    assert main(bad) == 2
    assert "64 channels" in capsys.readouterr().err


def test_atlas_resumes_without_redoing_finished_units(tmp_path, monkeypatch, resnet18):
    calls = []
    real = batches_mod.render

    def flaky(*args, **kwargs):
        calls.append(kwargs["seeds"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(batches_mod, "render", flaky)
    kwargs = dict(
        layers="layer1.0,layer2.0",
        per_layer=4,
        batch=2,
        steps=2,
        size=32,
        reference=None,
        progress=False,
    )
    with pytest.raises(KeyboardInterrupt):
        atlas(resnet18, tmp_path, **kwargs)
    first = json.loads((tmp_path / "layer1.0" / "units.json").read_text())
    assert len(first["units"]) == 4
    assert not (tmp_path / "layer2.0" / "units.json").exists()
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name or ".png." in p.name]

    calls.clear()
    monkeypatch.setattr(batches_mod, "render", real)
    counted = []
    monkeypatch.setattr(batches_mod, "render", lambda *a, **k: counted.append(1) or real(*a, **k))
    doc = atlas(resnet18, tmp_path, **kwargs)
    assert len(counted) == 2  # only layer2.0's two batches
    assert {k: doc.this_run[k] for k in ("reused", "rendered")} == {"reused": 4, "rendered": 4}
    assert [len(e["units"]) for e in doc.layers] == [4, 4]
    index = json.loads((tmp_path / "index.json").read_text())
    assert [e["layer"] for e in index["layers"]] == ["layer1.0", "layer2.0"]
    assert (tmp_path / "overview.png").is_file()
    again = json.loads((tmp_path / "layer1.0" / "units.json").read_text())
    assert again["units"] == first["units"]  # finished units untouched

    counted.clear()
    atlas(resnet18, tmp_path, **{**kwargs, "steps": 3})  # new settings: everything again
    assert len(counted) == 4


def test_the_atlas_result_writes_data_and_views_draw_it(tmp_path):
    """Atlas.save writes the index (and copies unit PNGs elsewhere); the grids and the
    overview come from interp.views.atlas_figures, fed the result."""
    import numpy as np
    from PIL import Image

    from interp.utils import save_png
    from interp.views import atlas_figures

    src = tmp_path / "src"
    units = []
    for c in range(3):
        (src / "a").mkdir(parents=True, exist_ok=True)
        image = Image.fromarray(np.full((8, 8, 3), 40 * c, dtype=np.uint8))
        save_png(image, src / "a" / f"a_c{c:04d}.png")
        units.append({"channel": c, "value": 1.0 + c, "png": f"a_c{c:04d}.png", "objective": "x"})
    layers = [{"layer": "a", "folder": "a", "grid": "a/grid.png", "units": units}]
    result = interp.Atlas("toy", {"steps": 1}, layers, src)
    assert result.save() == src / "index.json" and not (src / "a" / "grid.png").exists()
    assert set(atlas_figures.figures(result)) == {"overview", "a"}
    index = atlas_figures.save_atlas(result, tmp_path / "copy")
    copy = tmp_path / "copy"
    assert index == copy / "index.json" and (copy / "overview.png").is_file()
    assert (copy / "a" / "grid.png").is_file() and (copy / "a" / "a_c0002.png").is_file()
    back = interp.Atlas.load(copy)
    assert back.to_dict() == result.to_dict() and back.image("a", 1)[0, 0, 0] == 40
