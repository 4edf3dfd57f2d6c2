"""The report page's HTML (``index.html``): a static page fed the report's document."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .study_figures import study_html

__all__ = ["page_html"]


def page_html(
    doc: dict[str, Any],
    cards: dict[str, str],
    exp: dict[str, Any] | None,
    hierarchy: Any = None,
    study: tuple[dict[str, Any], list[str]] | None = None,
) -> str:
    """The page: the verdict and profile, a section per layer (its card PNG, its edge-unit
        counts and unit table), the experiments' answers when given, the model. ``hierarchy``:
        the :class:`~interp.probes.hierarchy.Hierarchy` behind ``doc["hierarchy"]`` (its edge
        instruments name the table's columns); ``study``: a study's document and figure files (under
    ``study/``), shown as the panel section. Every link is relative."""
    esc = html.escape
    h = doc["hierarchy"]
    v = h["verdict"]
    m = doc["model"]
    columns = _columns(h, hierarchy)
    rows = []
    for r in h["layers"]:
        f, c = r["fractions"], r["control_fractions"]
        cells = "".join(f"<td>{f.get(k, 0):.2f} / {c.get(k, 0):.2f}</td>" for k, _ in columns)
        rows.append(f"<tr><td>{esc(r['layer'])}</td><td>{r['units']}</td>{cells}</tr>")
    heads = "".join(f"<th>{esc(label)}</th>" for _, label in columns)
    labels = {} if hierarchy is None else {i.name: i.label for i in hierarchy.instruments}
    sections = []
    for name, path in cards.items():
        unit_rows = "".join(
            "<tr>"
            f"<td>{u['channel']}</td><td>{esc(str(u.get('label') or '—'))}</td>"
            f"<td>{_num(u.get('iou'), '.3f')}</td><td>{_num(u.get('osi'), '.2f')}</td>"
            f"<td>{_edge_cell(u, labels)}</td>"
            f"<td>{_num(u.get('selectivity'), '.2f')}</td>"
            "</tr>"
            for u in doc["units"].get(name, [])
        )
        sections.append(
            f"<section><h3>{esc(name)}</h3>"
            f"{_counts(doc.get('edge_units', {}).get(name), labels)}"
            f'<img src="{esc(path)}" alt="units of {esc(name)}">'
            "<table><tr><th>unit</th><th>label</th><th>IoU</th><th>OSI</th><th>edge unit</th>"
            f"<th>selectivity</th></tr>{unit_rows}</table></section>"
        )
    exp_html = ""
    if exp:
        parts = []
        for block in exp["questions"]:
            items = []
            for a in block["answers"]:
                links = " ".join(
                    f'<a href="experiments/{esc(f)}">{esc(Path(f).name)}</a>' for f in a["figures"]
                )
                items.append(f"<li><b>{esc(a['experiment'])}</b>: {esc(a['finding'])} {links}</li>")
            figs = sorted({f for a in block["answers"] for f in a["figures"]})
            imgs = "".join(f'<img src="experiments/{esc(f)}" alt="{esc(f)}">' for f in figs[:3])
            parts.append(f"<h3>{esc(block['question'])}</h3><ul>{''.join(items)}</ul>{imgs}")
        exp_html = '<h2 id="experiments">Why units specialize: the experiments</h2>' + "".join(
            parts
        )
    study_section = ""
    if study is not None:
        study_section = (
            '<h2 id="study">Across a panel of CNNs: <code>interp study</code></h2>'
            + study_html(study[0], study[1], prefix="study/")
        )
    notes = "".join(f"<li>{esc(n)}</li>" for n in h["control"]["notes"])
    rules = "".join(f"<li><b>{esc(k)}</b>: {esc(r)}</li>" for k, r in h["rules"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>interp report: {esc(m["name"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.verdict {{ font-size: 1.2em; padding: 0.6em; background: #f4f4f4;
  border-left: 4px solid #4c78a8; }}
</style></head><body>
<h1>interp report: {esc(m["name"])}</h1>
<p>{m["parameters"]:,} parameters; input {esc(str(m["preprocessing"].get("input_size")))}; weights:
{esc(str(m["weights_source"]))}. Images: hierarchy on {esc(h["data"])}; dataset examples from
{esc(doc["settings"]["examples_data"])}.</p>
<h2>Early edges, later parts?</h2>
<p class="verdict"><b>{esc(str(v.get("verdict")))}</b> — {esc(str(v.get("text", "")))}</p>
<p>Rule: {esc(str(v.get("rule", "")))}</p>
<img src="hierarchy/profile.png" alt="profile by depth">
<table><tr><th>layer</th><th>units</th>{heads}</tr>{"".join(rows)}</table>
<p>Fractions of units, model / random-init control. Rules:</p><ul>{rules}</ul>
<p>Control:</p><ul>{notes}</ul>
<img src="hierarchy/osi.png" alt="OSI distributions">
<img src="hierarchy/tuning.png" alt="example tuning curves">
<img src="hierarchy/detectors.png" alt="top detectors">
<h2>Layers</h2>
<p>Each row: a unit's feature visualization, then its top dataset examples (receptive-field
crops, activation above each); OSI, dissection label and class selectivity (SI) on the left.
An edge unit is one by at least one edge instrument that measured its layer, against the
random-init control (the instruments that say so in brackets).</p>
{"".join(sections)}
{exp_html}
{study_section}
<h2>Model</h2>
<img src="layers.png" alt="receptive fields and widths by depth">
<p>All numbers: <a href="report.json">report.json</a>; hierarchy:
<a href="hierarchy/hierarchy.json">hierarchy.json</a>; examples:
<a href="examples/examples.json">examples.json</a>.</p>
</body></html>
"""


def _columns(h: dict[str, Any], hierarchy: Any) -> list[tuple[str, str]]:
    """``(fraction key, header)``: each edge instrument's fraction, then the categories."""
    rows = h["layers"]
    keys = list(rows[0]["fractions"]) if rows else []
    if hierarchy is not None:
        edges = [(k, f"edge units ({label})") for k, label in hierarchy.edge_fractions]
    else:
        edges = [(k, f"edge units ({k[len('edge_') :]})") for k in keys if k.startswith("edge_")]
    seen = {k for k, _ in edges}
    return edges + [(k, k) for k in keys if k not in seen]


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return format(value, spec)


def _edge_cell(unit: dict[str, Any], labels: dict[str, str]) -> str:
    if unit.get("edge_unit") is None:
        return "—"
    if not unit["edge_unit"]:
        return "no"
    by = ", ".join(labels.get(k, k) for k in unit.get("edge_by", []))
    return f"yes ({html.escape(by)})"


def _counts(counts: dict[str, Any] | None, labels: dict[str, str]) -> str:
    """The layer's edge units (every unit, not only the sampled rows)."""
    if not counts:
        return ""
    by = ", ".join(
        f"{html.escape(labels.get(k, k))} {'not measured' if n is None else n}"
        for k, n in counts.items()
        if k != "edge"
    )
    return (
        f'<p class="edge-counts" data-edge="{counts["edge"]}">edge units: {counts["edge"]} '
        f"(by at least one instrument); by instrument: {by}</p>"
    )
