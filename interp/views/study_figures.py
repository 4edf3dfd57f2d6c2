"""Figures and the page of a study (:class:`~interp.pipeline.study.Study`): every network's
depth centroids with their 90% intervals; per family, each category's excess per layer and
each layer's CKA to its final state against the training step (seeds averaged)."""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils import atomic_write_text
from .figures import plt, save_figure

__all__ = [
    "figures",
    "plot_centroids",
    "plot_emergence",
    "save_figures",
    "study_html",
    "write_page",
]

_COLOURS = {
    "edge_gratings": "#4c78a8",
    "edge_erf": "#72b7b2",
    "edge_dissection": "#54a24b",
    "part": "#e45756",
    "object": "#b279a2",
}


def _colour(key: str, i: int) -> str:
    return _COLOURS.get(key, plt.get_cmap("tab10")(i % 10))


def plot_centroids(rows: Sequence[dict[str, Any]]) -> plt.Figure:
    """A row per network: each category's depth centroid (0 first layer, 1 last) with its
    90% bootstrap interval; the verdict on the right."""
    keys = list(dict.fromkeys(k for r in rows for k in r["centroids"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.3))
    offsets = np.linspace(-0.25, 0.25, max(1, len(keys)))
    for y, r in enumerate(rows):
        for i, k in enumerate(keys):
            c = r["centroids"].get(k)
            if not c or c.get("centroid") is None:
                continue
            lo, hi = c.get("interval_90") or (None, None)
            yy = y + offsets[i]
            if lo is not None and hi is not None:
                ax.plot([lo, hi], [yy, yy], color=_colour(k, i), lw=1.5)
            ax.plot(c["centroid"], yy, "o", color=_colour(k, i), ms=4)
        ax.text(1.03, y, r["verdict"], va="center", fontsize=7, transform=ax.get_yaxis_transform())
    for i, k in enumerate(keys):
        ax.plot([], [], "o-", color=_colour(k, i), label=k.replace("edge_", "edges: "))
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("depth centroid of the excess over random-init controls (0 first, 1 last layer)")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=len(keys))
    ax.set_title("Early edges, later parts? Depth centroids with 90% intervals", fontsize=9)
    fig.tight_layout()
    return fig


def _mean_over(runs: Sequence[dict[str, Any]], what: str, key: str | None) -> np.ndarray:
    arrs = []
    for e in runs:
        data = e[what] if key is None else e[what][key]
        arrs.append(np.array([[np.nan if v is None else v for v in r] for r in data], float))
    with warnings.catch_warnings():  # a layer no seed measured stays NaN (not drawn)
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.stack(arrs), axis=0)


def plot_emergence(family: str, runs: Sequence[dict[str, Any]]) -> plt.Figure:
    """One panel per category (its excess per layer) and one of each layer's CKA to its final
    state, against the training step; seeds averaged, a line per layer coloured by depth."""
    steps = np.asarray(runs[0]["steps"], dtype=float)
    layers = runs[0]["layers"]
    cats = list(runs[0]["excess"])
    fig, axes = plt.subplots(1, len(cats) + 1, figsize=(2.7 * (len(cats) + 1), 2.8), squeeze=False)
    cmap = plt.get_cmap("viridis")
    x = steps + 1  # step 0 (the initialization) on a log axis
    for ax, cat in zip(axes[0], [*cats, "cka"], strict=True):
        data = (
            _mean_over(runs, "cka_to_final", None)
            if cat == "cka"
            else _mean_over(runs, "excess", cat)
        )
        for j, name in enumerate(layers):
            ax.plot(x, data[:, j], "-", color=cmap(j / max(1, len(layers) - 1)), lw=1, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("training step + 1", fontsize=7)
        ax.tick_params(labelsize=6)
        if cat == "cka":
            ax.set_title("CKA to the final state", fontsize=8)
            ax.axhline(0.9, color="#999", lw=0.6, ls="--")
        else:
            ax.set_title(f"excess: {cat.replace('edge_', 'edges by ')}", fontsize=8)
            ax.axhline(0, color="#999", lw=0.5)
    axes[0][-1].legend(fontsize=5, loc="lower right", ncol=2)
    fig.suptitle(
        f"{family}: as it emerges during training ({len(runs)} seeds averaged)", fontsize=9
    )
    fig.tight_layout()
    return fig


def figures(result: Any) -> dict[str, plt.Figure]:
    """``centroids`` and ``emergence_<family>`` for each family with trained networks."""
    doc = result.doc
    out = {"centroids": plot_centroids(doc["rows"])}
    family_of = {r["name"]: r["family"] for r in doc["rows"]}
    by_family: dict[str, list[dict[str, Any]]] = {}
    for name, e in doc["emergence"].items():
        by_family.setdefault(family_of[name], []).append(e)
    for fam, runs in by_family.items():
        out[f"emergence_{_slug(fam)}"] = plot_emergence(fam, runs)
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def save_figures(result: Any, folder: str | Path) -> dict[str, Path]:
    """Every figure as ``folder/<name>.png`` (atomically)."""
    return {n: save_figure(f, Path(folder) / f"{n}.png") for n, f in figures(result).items()}


def study_html(doc: dict[str, Any], figures: Sequence[str], prefix: str = "") -> str:
    """The study's findings, table and figures as HTML (no page around them): the study's
    own ``index.html`` and the report's panel section (``prefix``: where the study's files
    are, relative to the page)."""
    esc = html.escape
    rows = []
    for r in doc["rows"]:
        cents = "; ".join(
            f"{esc(k.replace('edge_', 'edges: '))} {c['centroid']:.2f}"
            + (
                f" [{c['interval_90'][0]:.2f}, {c['interval_90'][1]:.2f}]"
                if c.get("interval_90") and None not in c["interval_90"]
                else ""
            )
            for k, c in r["centroids"].items()
            if c.get("centroid") is not None
        )
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        link = f"{prefix}networks/{r['name']}/{r.get('file', 'hierarchy/hierarchy.json')}"
        rows.append(
            f"<tr><td>{esc(r['name'])}</td><td>{esc(r['family'])}</td>"
            f"<td title='{esc(r['accuracy_of'])}'>{acc}</td><td>{esc(r['verdict'])}</td>"
            f"<td>{cents}</td><td><a href='{esc(link)}'>json</a></td></tr>"
        )
    return (
        f"<ul>{''.join(f'<li>{esc(f)}</li>' for f in doc.get('findings', []))}</ul>"
        "<table><tr><th>network</th><th>family</th><th>accuracy</th><th>verdict</th>"
        f"<th>depth centroids [90%]</th><th>hierarchy</th></tr>{''.join(rows)}</table>"
        + "".join(
            f'<h3>{esc(f[:-4])}</h3><img src="{esc(prefix + f)}" alt="{esc(f[:-4])}">'
            for f in figures
        )
        + f'<p>Data: <a href="{esc(prefix)}study.json">study.json</a>, '
        f'<a href="{esc(prefix)}study.md">study.md</a>.</p>'
    )


def write_page(result: Any, folder: str | Path) -> Path:
    """``folder/index.html``: the findings, the table, the figures; links to each network's
    hierarchy file."""
    figs = sorted(p.name for p in Path(folder).glob("*.png"))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>interp study</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px}}
img{{max-width:100%}}</style></head><body>
<h1>Across a panel of CNNs: does "early edges, later parts" hold?</h1>
{study_html(result.doc, figs)}
</body></html>
"""
    return atomic_write_text(Path(folder) / "index.html", page)
