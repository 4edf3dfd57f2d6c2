"""The report page's HTML (``index.html``): a static page fed the report's document."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

__all__ = ["page_html"]


def page_html(doc: dict[str, Any], cards: dict[str, str], exp: dict[str, Any] | None) -> str:
    """The page: the verdict and profile, a section per layer (its card PNG and unit
    table), the experiments' answers when given, the model. Every link is relative."""
    esc = html.escape
    h = doc["hierarchy"]
    v = h["verdict"]
    m = doc["model"]
    rows = []
    for r in h["layers"]:
        f, c = r["fractions"], r["control_fractions"]
        cells = "".join(
            f"<td>{f.get(k, 0):.2f} / {c.get(k, 0):.2f}</td>"
            for k in ("edge_gratings", "edge_erf", "colour", "edge", "part", "object")
        )
        rows.append(f"<tr><td>{esc(r['layer'])}</td><td>{r['units']}</td>{cells}</tr>")
    sections = []
    for name, path in cards.items():
        unit_rows = "".join(
            "<tr>"
            f"<td>{u['channel']}</td><td>{esc(str(u.get('label') or '—'))}</td>"
            f"<td>{u.get('iou', float('nan')):.3f}</td><td>{u.get('osi', float('nan')):.2f}</td>"
            f"<td>{'yes' if u.get('edge_unit') else 'no'}</td>"
            f"<td>{'' if u.get('selectivity') is None else format(u['selectivity'], '.2f')}</td>"
            "</tr>"
            for u in doc["units"].get(name, [])
        )
        sections.append(
            f"<section><h3>{esc(name)}</h3>"
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
<table><tr><th>layer</th><th>units</th><th>edge units (gratings)</th><th>edge units (ERF fit)</th>
<th>colour</th><th>edge</th><th>part</th><th>object</th></tr>{"".join(rows)}</table>
<p>Fractions of units, model / random-init control. Rules:</p><ul>{rules}</ul>
<p>Control:</p><ul>{notes}</ul>
<img src="hierarchy/osi.png" alt="OSI distributions">
<img src="hierarchy/tuning.png" alt="example tuning curves">
<img src="hierarchy/detectors.png" alt="top detectors">
<h2>Layers</h2>
<p>Each row: a unit's feature visualization, then its top dataset examples (receptive-field
crops, activation above each); OSI, dissection label and class selectivity (SI) on the left.</p>
{"".join(sections)}
{exp_html}
<h2>Model</h2>
<img src="layers.png" alt="receptive fields and widths by depth">
<p>All numbers: <a href="report.json">report.json</a>; hierarchy:
<a href="hierarchy/hierarchy.json">hierarchy.json</a>; examples:
<a href="examples/examples.json">examples.json</a>.</p>
</body></html>
"""
