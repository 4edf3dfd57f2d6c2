"""The edge-instrument protocol: a fourth instrument declared and registered in this file
alone reaches hierarchy.json, the profile figure, the verdict's headline, the explorer's
tiles and unit pages and the report's index; and one unit's edge statuses are the same on
its tile, its unit page, the index (counts and unit table) and its unit card."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import interp
from interp.activations import capture
from interp.pipeline.card import unit_card
from interp.pipeline.report import report
from interp.probes.hierarchy import Hierarchy
from interp.probes.instruments import (
    EDGE_INSTRUMENTS,
    Column,
    EdgeInstrument,
    Probed,
    register_edge_instrument,
)
from interp.views.hierarchy_figures import plot_profile
from interp.views.site import slug


# ---------------------------------------------------------------- the toy instrument
def _probe(net, layers, ctx):  # noqa: ANN001, ANN202
    """Per unit: the spread of its mean response over the reference photos, relative."""
    with torch.no_grad():
        acts = capture(net, net.normalize(ctx.reference).to(net.device), list(layers))
    out = Probed({})
    for name in layers:
        a = acts[name]
        if not (isinstance(a, torch.Tensor) and a.dim() == 4):
            continue
        m = a.float().mean(dim=(2, 3))
        out.arrays[name] = {"contrast": (m.std(0) / (m.abs().mean(0) + 1e-6)).cpu().numpy()}
    return out


TOY = EdgeInstrument(
    name="toy",
    label="luminance contrast",
    version="1",
    keys=("contrast",),
    probe=_probe,
    units=lambda a, t: a["contrast"] > (t if np.isfinite(t) else 0.5),
    gate=lambda a: a["contrast"],
    rule=lambda s: "relative spread of the mean response over photos above the control's",
    columns=(
        Column("toy_contrast", "toy contrast", lambda a, u: round(float(a["contrast"][u]), 4)),
    ),
)


@pytest.fixture(scope="module")
def toy_report(tmp_path_factory: pytest.TempPathFactory):
    """A quick report of a small random-init CNN with the toy instrument registered."""
    register_edge_instrument(TOY)
    try:
        model = interp.load_model("simplecnn", weights="none", seed=0, width=0.25, input_size=32)
        out = tmp_path_factory.mktemp("toy-report")
        report(model, out, quick=True, progress=False)
        yield model, out
    finally:
        EDGE_INSTRUMENTS.unregister("toy")


def _tiles(page: Path) -> list[dict[str, str]]:
    tags = re.findall(r'<div class="tile" ([^>]*)>', page.read_text())
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', t)) for t in tags]


def _score_rows(page: Path) -> dict[str, str]:
    rows = re.findall(r"<tr><td>([^<]*)</td><td>([^<]*)</td></tr>", page.read_text())
    return {html.unescape(k): html.unescape(v) for k, v in rows}


def _yes(status: bool | None) -> str:
    return "not measured" if status is None else "yes" if status else "no"


def test_a_fourth_instrument_registered_from_one_file_reaches_every_page(toy_report):
    model, out = toy_report
    doc = json.loads((out / "hierarchy" / "hierarchy.json").read_text())
    assert "over photos above the control" in doc["rules"]["edge_unit_toy"]
    assert doc["settings"]["edge_instruments"].endswith(", toy v1")
    for row in doc["layers"]:
        assert {"edge_gratings", "edge_toy"} <= set(row["fractions"])  # ERF: RF >= 5 px
        assert "toy" in row["counts"] and "toy" in row["edge_units"]
        assert row["intervals_90"]["edge_toy"]["control_units"] >= 32
    v = doc["verdict"]
    assert set(v["instruments"]) == {"gratings", "erf", "dissection", "toy"}
    assert re.match(r"(holds|does not hold|inconclusive): \d of 4 edge instruments", v["text"])
    hier = Hierarchy.load(out / "hierarchy")
    assert [i.name for i in hier.instruments][-1] == "toy"
    fig = plot_profile(hier)
    assert "edge units (luminance contrast)" in fig.axes[0].get_legend_handles_labels()[1]
    assert "edge units (luminance contrast)" in (out / "index.html").read_text()
    layer = hier.layers[0]
    page = out / "layers" / f"{slug(layer)}.html"
    text = page.read_text()
    assert '<option value="toy_contrast">toy contrast</option>' in text
    tiles = _tiles(page)
    assert all("data-toy_contrast" in t and "data-edge-toy" in t for t in tiles)
    unit = next(iter(sorted((out / "units" / slug(layer)).glob("*.html"))))
    rows = _score_rows(unit)
    assert "toy contrast" in rows and "edge unit by luminance contrast" in rows
    saved = json.loads((out / "report.json").read_text())
    assert all("toy" in u["statuses"] for u in saved["units"][layer])


def test_one_units_edge_statuses_agree_on_tile_unit_page_index_and_card(toy_report):
    model, out = toy_report
    hier = Hierarchy.load(out / "hierarchy")
    saved = json.loads((out / "report.json").read_text())
    index = (out / "index.html").read_text()
    checked = []
    for layer in hier.layers:
        scores = hier.unit_scores(layer)
        counts = hier.edge_counts(layer)
        tiles = _tiles(out / "layers" / f"{slug(layer)}.html")
        assert len(tiles) == len(scores)
        # tiles: the headline and every instrument's status
        assert sum(t["data-edge"] == "1" for t in tiles) == counts["edge"]
        for t, s in zip(tiles, scores, strict=True):
            assert (t["data-edge"] == "1") == bool(s.edge)
            for name, status in s.statuses.items():
                assert t[f"data-edge-{name}"] == ("" if status is None else str(int(status)))
        # the index: the layer's counts and the sampled units' rows
        assert saved["edge_units"][layer] == counts
        if saved["units"].get(layer):
            assert f'data-edge="{counts["edge"]}">edge units: {counts["edge"]} ' in index
        for row in saved["units"][layer]:
            s = scores[row["channel"]]
            assert row["edge_unit"] == s.edge and row["statuses"] == s.statuses
        # unit pages
        for page in sorted((out / "units" / slug(layer)).glob("*.html")):
            s = scores[int(page.stem)]
            rows = _score_rows(page)
            assert rows["edge unit (by at least one instrument)"] == _yes(s.edge)
            for inst in hier.instruments:
                assert rows[f"edge unit by {inst.label}"] == _yes(s.statuses[inst.name])
            checked.append(s)
    assert checked
    # the unit card of a rendered unit (an edge unit where there is one)
    s = next((s for s in checked if s.edge), checked[0])
    card = unit_card(
        model,
        f"{s.layer}:{s.unit}",
        hierarchy=out / "hierarchy",
        data="partsworld",
        n=8,
        k=1,
        n_steps=2,
        steps=1,
        featvis_size=16,
        progress=False,
    )
    h = card.scores["hierarchy"]
    assert h["edge_unit"] == s.edge and h["edge_unit_by"] == s.statuses
    assert any(line.strip().startswith("edge unit:") for line in card.lines)
