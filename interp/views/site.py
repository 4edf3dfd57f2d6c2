"""The explorer's HTML: a static site that works from ``file://`` (no server, no external
script, font or request), fed plain documents by :mod:`interp.pipeline.explorer`.

* ``index.html``: the report's summary (:func:`interp.views.html.page_html`) under a bar with
  the search box and links to every layer;
* ``layers/<slug>.html``: every unit of the layer as a tile, sorted and filtered in the page
  (``assets/site.js``: plain JavaScript over the tiles' ``data-*`` attributes);
* ``units/<slug>/<channel>.html``: one unit: feature visualizations, top and bottom dataset
  examples with attribution, tuning curve, concepts, class profile, similar units.

The search index (``assets/search.js``) is a script, not JSON: a page opened from ``file://``
may not ``fetch`` a file beside it, but it may load a script.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from typing import Any

__all__ = [
    "CSS",
    "JS",
    "layer_page",
    "search_script",
    "slug",
    "unit_page",
    "with_site_bar",
]

esc = html.escape


def slug(name: str) -> str:
    """A file name for a layer (``_blocks.5`` -> ``_blocks.5``, ``a/b c`` -> ``a_b_c``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "_"


CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; }
main { max-width: 1200px; margin: 1em auto; padding: 0 1em; }
nav.bar { background: #24313f; color: #eee; padding: 0.5em 1em; display: flex;
  flex-wrap: wrap; gap: 0.8em; align-items: center; font-size: 0.9em; }
nav.bar a { color: #cfe3ff; text-decoration: none; }
nav.bar input { padding: 3px 6px; width: 16em; }
#search-results { background: #fff; color: #222; position: absolute; top: 2.6em;
  max-height: 20em; overflow: auto; border: 1px solid #999; z-index: 5; min-width: 22em; }
#search-results a { display: block; color: #114; padding: 2px 6px; }
#search-results:empty { display: none; }
.search { position: relative; }
img { max-width: 100%; }
.tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr));
  gap: 8px; }
.tile { border: 1px solid #ccc; border-radius: 4px; padding: 4px; font-size: 0.75em;
  background: #fafafa; }
.tile.hidden { display: none; }
.tile img { display: block; width: 100%; image-rendering: auto; }
.tile .fv { background: #eee; color: #888; text-align: center; padding: 2px 0; }
.tile .meta { margin-top: 2px; line-height: 1.35; }
.tile .edge { color: #4c78a8; font-weight: bold; }
.controls { display: flex; flex-wrap: wrap; gap: 0.8em; margin: 0.6em 0; font-size: 0.9em; }
.row { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
.row figure { margin: 0; font-size: 0.75em; text-align: center; }
.row figure img { width: 128px; display: block; }
.big img { width: 224px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
td, th { border: 1px solid #ccc; padding: 2px 6px; text-align: right; }
td:first-child, th:first-child { text-align: left; }
.note { color: #666; font-size: 0.85em; }
"""

JS = r"""
(function () {
  "use strict";
  function root() { return document.body.getAttribute("data-root") || ""; }
  // search: units (LAYER:CHANNEL) and concepts (category:name), from assets/search.js
  var box = document.getElementById("search");
  var out = document.getElementById("search-results");
  function search(q) {
    q = q.trim().toLowerCase();
    var hits = [];
    if (!q || !window.INTERP_SEARCH) { return hits; }
    var data = window.INTERP_SEARCH;
    data.units.forEach(function (u) {
      if (u.id.toLowerCase() === q || u.id.toLowerCase().indexOf(q) === 0) {
        hits.push({href: u.href, text: u.id + (u.label ? "  " + u.label : "")});
      }
    });
    Object.keys(data.concepts).forEach(function (c) {
      if (c.toLowerCase().indexOf(q) !== -1) {
        data.concepts[c].forEach(function (u) {
          hits.push({href: u.href, text: c + "  " + u.id + "  IoU " + u.iou.toFixed(3)});
        });
      }
    });
    return hits.slice(0, 60);
  }
  function show() {
    out.innerHTML = "";
    search(box.value).forEach(function (h) {
      var a = document.createElement("a");
      a.href = root() + h.href;
      a.textContent = h.text;
      out.appendChild(a);
    });
  }
  if (box && out) {
    box.addEventListener("input", show);
    box.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && out.firstChild) { window.location.href = out.firstChild.href; }
    });
  }
  // a layer page: sort and filter the tiles
  var grid = document.getElementById("tiles");
  if (!grid) { return; }
  var tiles = Array.prototype.slice.call(grid.querySelectorAll(".tile"));
  var sortBy = document.getElementById("sort");
  var category = document.getElementById("category");
  var concept = document.getElementById("concept");
  var minIou = document.getElementById("min-iou");
  var edgeOnly = document.getElementById("edge-only");
  var count = document.getElementById("shown");
  function num(t, key) {
    var v = parseFloat(t.getAttribute("data-" + key));
    return isNaN(v) ? -Infinity : v;
  }
  function apply() {
    var key = sortBy.value;
    var sorted = tiles.slice().sort(function (a, b) {
      if (key === "channel") { return num(a, "channel") - num(b, "channel"); }
      return num(b, key) - num(a, key) || num(a, "channel") - num(b, "channel");
    });
    var cat = category.value, text = concept.value.trim().toLowerCase();
    var lo = parseFloat(minIou.value) || 0, shown = 0;
    sorted.forEach(function (t) {
      var ok = (!cat || t.getAttribute("data-category") === cat) &&
        (!text || (t.getAttribute("data-concept") || "").toLowerCase().indexOf(text) !== -1) &&
        (num(t, "iou") >= lo || lo <= 0) &&
        (!edgeOnly.checked || t.getAttribute("data-edge") === "1");
      t.classList.toggle("hidden", !ok);
      if (ok) { shown += 1; }
      grid.appendChild(t);
    });
    count.textContent = shown + " of " + tiles.length + " units";
  }
  [sortBy, category, edgeOnly].forEach(function (el) { el.addEventListener("change", apply); });
  [concept, minIou].forEach(function (el) { el.addEventListener("input", apply); });
  apply();
})();
"""


def _bar(root: str, title: str, layers: Sequence[str], extra: str = "") -> str:
    links = " ".join(f'<a href="{root}layers/{esc(slug(n))}.html">{esc(n)}</a>' for n in layers)
    return (
        f'<nav class="bar"><a href="{root}index.html"><b>{esc(title)}</b></a>'
        '<span class="search"><input id="search" type="search" '
        'placeholder="unit (_blocks.5:12) or concept (part:wheel)" aria-label="search">'
        '<span id="search-results"></span></span>'
        f"<span>layers: {links}</span>{extra}</nav>"
    )


def _page(root: str, title: str, bar: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title>
<link rel="stylesheet" href="{root}assets/site.css">
</head><body data-root="{root}">
{bar}
<main>
{body}
</main>
<script src="{root}assets/search.js"></script>
<script src="{root}assets/site.js"></script>
</body></html>
"""


def with_site_bar(index_html: str, model: str, layers: Sequence[str], extra: str = "") -> str:
    """The report's page with the site's bar (search, layer links) and scripts added."""
    bar = _bar("", f"interp: {model}", layers, extra)
    head = '<link rel="stylesheet" href="assets/site.css">\n</head>'
    page = index_html.replace("</head>", head, 1)
    page = re.sub(r"<body>", f'<body data-root="">\n{bar}', page, count=1)
    scripts = '<script src="assets/search.js"></script>\n<script src="assets/site.js"></script>'
    return page.replace("</body>", scripts + "\n</body>", 1)


def _fmt(value: Any, spec: str = ".2f") -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and value != value:  # nan
        return "—"
    return format(value, spec)


def _attr(value: Any) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return esc(str(value))


def _status(value: Any) -> str:
    return "" if value is None else "1" if value else "0"


def layer_page(model: str, layer: dict[str, Any], layers: Sequence[str]) -> str:
    """Every unit of ``layer`` as a tile that can be sorted and filtered. ``layer``:
    ``{"name", "units": [tile], "categories", "info", "columns": [{"key", "label", "fmt"}],
    "instruments": [{"name", "label"}]}``; a tile holds its scores (the columns' keys),
    ``edge`` (the one edge-unit definition) and ``statuses`` (per instrument: true, false or
    ``None``, not measured)."""
    root = "../"
    columns = layer.get("columns", [])
    labels = {i["name"]: i["label"] for i in layer.get("instruments", [])}
    tiles = []
    for t in layer["units"]:
        fv = (
            f'<img src="{esc(t["featvis"])}" alt="feature visualization of unit {t["channel"]}"'
            ' loading="lazy">'
            if t.get("featvis")
            else '<div class="fv">not rendered</div>'
        )
        ex = (
            f'<img src="{esc(t["examples"])}" alt="top dataset examples of unit '
            f'{t["channel"]}" loading="lazy">'
            if t.get("examples")
            else ""
        )
        name = f"#{t['channel']}"
        head = f'<a href="{esc(t["href"])}">{name}</a>' if t.get("href") else name
        statuses = t.get("statuses", {})
        by = ", ".join(labels.get(k, k) for k, v in statuses.items() if v)
        edge = (
            f' <span class="edge" title="edge unit by {esc(by)}">edge</span>'
            if t.get("edge")
            else ""
        )
        label = esc(t.get("label") or "—")
        data = "".join(f' data-{c["key"]}="{_attr(t.get(c["key"]))}"' for c in columns)
        data += "".join(f' data-edge-{esc(k)}="{_status(v)}"' for k, v in statuses.items())
        cells = " · ".join(
            [f"IoU {_fmt(t.get('iou'), '.3f')}"]
            + [f"{esc(c['label'])} {_fmt(t.get(c['key']), c['fmt'])}" for c in columns]
            + [f"SI {_fmt(t.get('selectivity'))}"]
        )
        tiles.append(
            f'<div class="tile" id="u{t["channel"]}" data-channel="{t["channel"]}"'
            f' data-iou="{_attr(t.get("iou"))}"{data}'
            f' data-selectivity="{_attr(t.get("selectivity"))}"'
            f' data-activation="{_attr(t.get("activation"))}"'
            f' data-category="{_attr(t.get("category"))}"'
            f' data-concept="{_attr(t.get("concept"))}" data-edge="{1 if t.get("edge") else 0}">'
            f'{fv}{ex}<div class="meta"><b>{head}</b>{edge} {label}<br>{cells}</div></div>'
        )
    cats = "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in layer["categories"])
    sorts = "".join(f'<option value="{esc(c["key"])}">{esc(c["label"])}</option>' for c in columns)
    controls = (
        '<div class="controls">'
        '<label>sort <select id="sort"><option value="channel">unit</option>'
        f'<option value="iou">IoU</option>{sorts}'
        '<option value="selectivity">selectivity</option>'
        '<option value="activation">top activation</option></select></label>'
        f'<label>category <select id="category"><option value="">any</option>{cats}'
        "</select></label>"
        '<label>concept <input id="concept" type="text" size="12"></label>'
        '<label>IoU at least <input id="min-iou" type="number" min="0" max="1" step="0.01"'
        ' value="0" style="width:5em"></label>'
        '<label><input id="edge-only" type="checkbox"> edge units only</label>'
        '<span id="shown"></span></div>'
    )
    info = esc(layer.get("info", ""))
    rule = (
        '<p class="note">edge unit: an edge unit by at least one edge instrument that '
        "measured the layer, against its random-init control (each tile's badge names "
        "them; the unit page shows every instrument's status)</p>"
    )
    body = (
        f"<h1>{esc(layer['name'])}</h1><p>{info}</p>{rule}{controls}"
        f'<div class="tiles" id="tiles">{"".join(tiles)}</div>'
    )
    title = f"{layer['name']} — interp: {model}"
    return _page(root, title, _bar(root, f"interp: {model}", layers), body)


def _figures(items: Sequence[dict[str, Any]], cls: str = "") -> str:
    figs = "".join(
        f'<figure><img src="{esc(i["src"])}" alt="{esc(i["caption"])}">'
        f"<figcaption>{esc(i['caption'])}</figcaption></figure>"
        for i in items
    )
    return f'<div class="row {cls}">{figs}</div>' if items else '<p class="note">none</p>'


_NO_BOTTOM = (
    '<p class="note">none: the unit is never negative (rectified), so no image is the one it '
    "likes least</p>"
)


def unit_page(model: str, unit: dict[str, Any], layers: Sequence[str]) -> str:
    """One unit: ``unit`` holds its layer, channel, scores, image entries and neighbours."""
    root = "../../"
    layer, c = unit["layer"], unit["channel"]
    s = unit["scores"]
    score_rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(v if isinstance(v, str) else _fmt(v, '.3f'))}</td></tr>"
        for k, v in s.items()
    )
    concepts = "".join(
        f"<tr><td>{esc(x['concept'])}</td><td>{x['iou']:.4f}</td></tr>" for x in unit["concepts"]
    )
    classes = "".join(
        f"<tr><td>{esc(x['class'])}</td><td>{x['mean']:.4f}</td></tr>" for x in unit["classes"]
    )
    similar = "".join(
        f'<li><a href="{esc(n["href"])}">{esc(layer)}:{n["channel"]}</a> '
        f"r = {n['r']:.3f} {esc(n.get('label') or '')}</li>"
        for n in unit["similar"]
    )
    tuning = (
        f'<img src="{esc(unit["tuning"])}" alt="orientation tuning curve" style="width:320px">'
        if unit.get("tuning")
        else '<p class="note">no tuning curve (the edge probe skipped this layer)</p>'
    )
    body = f"""<h1>{esc(layer)}:{c}</h1>
<p><a href="{root}layers/{esc(slug(layer))}.html#u{c}">back to {esc(layer)}</a>.
{esc(unit.get("summary", ""))}</p>
<h2>Feature visualizations</h2>
{_figures(unit["featvis"], "big")}
<p class="note">{esc(unit.get("featvis_note", ""))}</p>
<h2>Top dataset examples</h2>
{_figures(unit["top"])}
<h2>Bottom dataset examples (most negative)</h2>
{_figures(unit["bottom"]) if unit["bottom"] else _NO_BOTTOM}
<h2>Orientation tuning</h2>
{tuning}
<h2>Scores</h2>
<table>{score_rows}</table>
<h2>Best concepts</h2>
<table><tr><th>concept</th><th>IoU</th></tr>{concepts}</table>
<h2>Class profile</h2>
<table><tr><th>class</th><th>mean activation</th></tr>{classes}</table>
<h2>Most similar units in {esc(layer)}</h2>
<p class="note">by correlation of the units' mean activations over the dataset</p>
<ul>{similar}</ul>
"""
    title = f"{layer}:{c} — interp: {model}"
    return _page(root, title, _bar(root, f"interp: {model}", layers), body)


def search_script(units: Sequence[dict[str, Any]], concepts: dict[str, list[dict]]) -> str:
    """``assets/search.js``: ``window.INTERP_SEARCH = {units: [...], concepts: {...}}``."""
    doc = {"units": list(units), "concepts": concepts}
    text = json.dumps(doc, separators=(",", ":")).replace("</", "<\\/")
    return f"window.INTERP_SEARCH = {text};\n"
