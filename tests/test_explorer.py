"""The explorer site of ``interp report``: a page per layer with a tile per unit, a page per
rendered unit, every link and image resolving from ``file://``, resumable per-unit work, the
unit correlations behind "most similar units" on a planted case; and the site in a real
browser (Playwright driving Debian's Chromium: links, images, console, sorting, filtering,
search, neighbour links).

The browser test needs Playwright (a dev dependency) and Chromium (``.ci/run`` installs
Debian's ``chromium`` when it is missing). Without them it is skipped with the reason, except
under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from interp import Model, Preprocessing
from interp.activations import capture
from interp.pipeline.report import report
from interp.similarity import CorrelationAccumulator, unit_correlations
from interp.views.site import search_script, slug


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.tiles: list[dict[str, str]] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        d = {k: v or "" for k, v in attrs}
        for key in ("src", "href"):
            if d.get(key) and tag in ("img", "a", "script", "link"):
                self.refs.append(d[key])
        if "tile" in d.get("class", "").split():
            self.tiles.append(d)


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text())
    return parser


def _pages(out: Path) -> list[Path]:
    return [out / "index.html", *sorted((out / "layers").glob("*.html"))] + sorted(
        (out / "units").glob("*/*.html")
    )


def _rendered(out: Path) -> dict[str, list[int]]:
    index = json.loads((out / "atlas" / "index.json").read_text())
    return {e["layer"]: [u["channel"] for u in e["units"]] for e in index["layers"]}


def test_a_page_per_layer_a_tile_per_unit_and_every_reference_resolves(quick_report):
    model, out, _ = quick_report
    layers = json.loads((out / "report.json").read_text())["settings"]["layers"]
    rendered = _rendered(out)
    x = model.normalize(torch.rand(1, 3, 32, 32))
    widths = {n: a.shape[1] for n, a in capture(model, x, layers).items()}
    for layer in layers:
        page = out / "layers" / f"{slug(layer)}.html"
        tiles = _parse(page).tiles
        assert [int(t["data-channel"]) for t in tiles] == list(range(widths[layer]))
        for c in rendered[layer]:
            assert (out / "units" / slug(layer) / f"{c}.html").is_file()
    pages = _pages(out)
    assert len(pages) == 1 + len(layers) + sum(len(v) for v in rendered.values())
    for page in pages:
        for ref in _parse(page).refs:
            assert not re.match(r"[a-z]+:", ref) and not ref.startswith("/"), (page, ref)
            target = (page.parent / ref.split("#")[0]).resolve()
            assert target.is_file(), (page.relative_to(out), ref)
    site = json.loads((out / "site.json").read_text())
    assert site["unit_pages"] == sum(len(v) for v in rendered.values())
    assert site["tiles"] == sum(widths.values()) and site["bytes"] > 10_000
    assert "tiny &lt;cnn&gt; &amp; co" in (out / "layers" / f"{slug(layers[0])}.html").read_text()
    assert not list(out.rglob("*.tmp"))


def test_the_search_index_is_a_script_that_cannot_close_its_tag():
    text = search_script([{"id": "a:1", "href": "x.html", "label": "</script><b>"}], {})
    assert text.startswith("window.INTERP_SEARCH = ") and "</script>" not in text
    assert json.loads(text[len("window.INTERP_SEARCH = ") : -2])["units"][0]["label"] == (
        "</script><b>"
    )
    assert slug("a/b c") == "a_b_c" and slug("_blocks.5") == "_blocks.5"


def test_unit_work_resumes_per_unit(quick_report, tmp_path, monkeypatch):
    """A report whose explorer stage was killed redoes only the unit whose record is missing:
    the other units' records are untouched and nothing is rendered for them again."""
    model, out, _ = quick_report
    run = tmp_path / "run"
    shutil.copytree(out, run)
    for marker in (run / "stages").glob("units-*.json"):
        marker.unlink()  # the units stage did not finish
    records = sorted((run / "units").glob("*/*/unit.json"))
    lost = records[0]
    lost.unlink()
    stamps = {p: p.stat().st_mtime_ns for p in records[1:]}
    report(model, run, quick=True, progress=False)
    assert lost.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
    stage = json.loads(next((run / "stages").glob("units-*.json")).read_text())
    result = stage["result"]
    assert (result["done"], result["reused"]) == (1, len(records) - 1)
    doc = json.loads((run / "report.json").read_text())
    assert doc["seconds"]["atlas"] == doc["seconds"]["hierarchy"] == "reused"


def test_a_new_renderer_renders_the_unit_extras_again(quick_report, tmp_path, monkeypatch):
    """The extra starts and diversity sets are renders: with another renderer version none of
    the finished unit records is reused."""
    import interp.pipeline.explorer as explorer

    model, out, _ = quick_report
    run = tmp_path / "run"
    shutil.copytree(out, run)
    records = sorted((run / "units").glob("*/*/unit.json"))
    monkeypatch.setattr(explorer, "RENDERER_VERSION", explorer.RENDERER_VERSION + 1)
    report(model, run, quick=True, progress=False)
    stages = [json.loads(p.read_text()) for p in (run / "stages").glob("units-*.json")]
    assert (len(records), 0) in [(s["result"]["done"], s["result"]["reused"]) for s in stages]
    doc = json.loads((run / "report.json").read_text())
    assert doc["seconds"]["atlas"] == "reused"  # the atlas's own key did not change


class _Planted(nn.Module):
    """Four units of known correlation: u1 = 2 u0 + 1, u2 = -u0, u3 independent of u0."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 4, 1)
        w = torch.zeros(4, 3, 1, 1)
        w[0, 0] = 1.0
        w[1, 0] = 2.0
        w[2, 0] = -1.0
        w[3, 1] = 1.0
        self.mix.weight.data.copy_(w)
        self.mix.bias.data.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.mix(x)


class _Images(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(n, 3, 8, 8, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):  # noqa: ANN204
        return self.x[i], 0


def test_unit_correlations_find_planted_partners():
    pre = Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3, input_size=(8, 8))
    model = Model(_Planted().eval(), "planted", pre)
    corr = unit_correlations(model, _Images(200), ["mix"], batch_size=32)["mix"]
    assert corr.shape == (4, 4)
    assert corr[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert corr[0, 2] == pytest.approx(-1.0, abs=1e-5)
    assert abs(corr[0, 3]) < 0.2  # independent channels of random images
    assert np.allclose(np.diag(corr), 1.0, atol=1e-5)
    # shards' sums merge exactly into one stream's
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 3)), rng.normal(size=(30, 3))
    whole, left, right = (
        CorrelationAccumulator(),
        CorrelationAccumulator(),
        CorrelationAccumulator(),
    )
    whole.update(np.vstack([a, b]), np.vstack([a, b]))
    left.update(a, a)
    right.update(b, b)
    left.merge([right])
    assert np.allclose(left.result(), whole.result())


def _browser():
    """Playwright's sync API and the path of a Chromium, or ``(None, reason)``."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None, "Playwright is not installed (pip install -e '.[dev]')"
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return (sync_playwright, path), ""
    return None, "Chromium is not installed (.ci/run installs Debian's chromium)"


def test_the_explorer_in_a_real_browser(quick_report):
    found, reason = _browser()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test cannot run under CI: {reason}")
        pytest.skip(reason)
    sync_playwright, chromium = found
    _, out, index = quick_report
    layers = json.loads((out / "report.json").read_text())["settings"]["layers"]
    search = json.loads(
        (out / "assets" / "search.js").read_text()[len("window.INTERP_SEARCH = ") : -2]
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
            # every page: loads without errors, every image has pixels, every link resolves
            for path in _pages(out):
                page.goto(path.as_uri())
                # decode() loads a lazy image too and fails for one that cannot be shown
                # (checking `complete` races with loading on a busy machine)
                broken = page.evaluate(
                    """async () => {
                        const bad = [];
                        for (const i of document.images) {
                            i.loading = "eager";
                            try { await i.decode(); } catch (e) { bad.push(i.src); continue; }
                            if (!(i.naturalWidth > 0)) bad.push(i.src);
                        }
                        return bad;
                    }"""
                )
                assert not broken, (path.name, broken[:3])
                for href in page.evaluate("[...document.links].map(a => a.href)"):
                    assert href.startswith("file://"), href
                    target = Path(href.split("#")[0][len("file://") :])
                    assert target.is_file(), (path.name, href)
            assert not errors, errors[:5]

            # a layer page: sorting and filtering change the visible tiles as expected
            layer = layers[-1]
            page.goto((out / "layers" / f"{slug(layer)}.html").as_uri())
            tiles = page.locator(".tile")
            total = tiles.count()
            visible = page.locator(".tile:not(.hidden)")
            assert visible.count() == total
            cats = page.eval_on_selector_all(".tile", "ts => ts.map(t => t.dataset.category)")
            cat = max(set(cats), key=cats.count)
            page.select_option("#category", cat)
            assert visible.count() == cats.count(cat) < total or len(set(cats)) == 1
            assert page.text_content("#shown") == f"{cats.count(cat)} of {total} units"
            page.select_option("#category", "")
            page.select_option("#sort", "iou")
            ious = page.eval_on_selector_all(
                ".tile:not(.hidden)", "ts => ts.map(t => parseFloat(t.dataset.iou))"
            )
            assert ious == sorted(ious, reverse=True) and len(ious) == total
            page.fill("#min-iou", str(ious[len(ious) // 2]))
            kept = visible.count()
            assert 0 < kept < total or ious[0] == ious[-1]
            page.fill("#min-iou", "0")
            page.check("#edge-only")
            edges = page.eval_on_selector_all(
                ".tile", "ts => ts.filter(t => t.dataset.edge === '1').length"
            )
            assert visible.count() == edges
            page.uncheck("#edge-only")
            page.select_option("#sort", "channel")
            first = page.eval_on_selector_all(
                ".tile:not(.hidden)", "ts => ts.map(t => +t.dataset.channel)"
            )
            assert first == list(range(total))

            # search: a unit, then a concept
            rendered = _rendered(out)
            unit = f"{layer}:{rendered[layer][0]}"
            page.fill("#search", unit)
            results = page.locator("#search-results a")
            assert results.first.text_content().startswith(unit)
            results.first.click()
            page.wait_for_load_state()
            assert page.url.endswith(f"units/{slug(layer)}/{rendered[layer][0]}.html")
            assert page.locator("h1").text_content() == unit
            concept = next(iter(search["concepts"]))
            page.fill("#search", concept)
            texts = results.all_text_contents()
            assert texts and all(t.startswith(concept) for t in texts)

            # the unit page's neighbour links lead to units of the same layer
            links = page.locator("h2:has-text('Most similar') + p + ul a")
            assert links.count() >= 1
            name = links.first.text_content()
            links.first.click()
            page.wait_for_load_state()
            assert name.startswith(f"{layer}:")
            channel = int(name.rsplit(":", 1)[1])
            assert page.url.endswith((f"/{channel}.html", f"#u{channel}"))
            assert not errors, errors[:5]
        finally:
            browser.close()
    assert index.is_file()
