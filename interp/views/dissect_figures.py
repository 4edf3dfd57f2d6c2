"""Figures of Network Dissection, fed its result (:class:`~interp.probes.dissect.Dissection`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .figures import plt, save_figure
from .hierarchy_figures import CATEGORY_COLOURS, short_name

__all__ = ["figures", "plot_dissection", "save_dissection"]


def plot_dissection(dissection: Any, title: str = "") -> plt.Figure:
    """Network Dissection by depth: per layer, the fraction of its units that detect a
    concept of each category (stacked), with the detector count (``dissection``: a
    :class:`~interp.probes.dissect.Dissection`, or its ``to_dict()``)."""
    result = hasattr(dissection, "to_dict")  # a Dissection is a dict of layers itself
    doc = dissection.to_dict() if result else dissection
    title = title or (dissection.data if result else "")
    layers = doc["layers"]
    cats = list(layers[0]["fraction_by_category"]) if layers else []
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(layers) + 2.5), 3.4))
    pos = np.arange(len(layers))
    bottom = np.zeros(len(layers))
    for cat in cats:
        share = np.array([row["fraction_by_category"].get(cat, 0.0) for row in layers])
        ax.bar(pos, share, 0.7, bottom=bottom, label=cat, color=CATEGORY_COLOURS.get(cat))
        bottom += share
    for x, row, top in zip(pos, layers, bottom, strict=True):
        ax.text(x, top + 0.01, f"{row['detectors']}/{row['units']}", ha="center", fontsize=6)
    names = [short_name(row["layer"]) for row in layers]
    ax.set_xticks(pos, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, max(0.1, float(bottom.max(initial=0.0)) * 1.2))
    ax.set_ylabel("fraction of units detecting")
    if cats:
        ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{title}: detectors by category (labels: detectors/units)", fontsize=10)
    fig.tight_layout()
    return fig


def figures(dissection: Any, title: str = "") -> dict[str, plt.Figure]:
    """``{"dissection": fig}`` (:func:`plot_dissection`)."""
    return {"dissection": plot_dissection(dissection, title)}


def save_dissection(dissection: Any, folder: str | Path, *, title: str = "") -> list[Path]:
    """:meth:`Dissection.save <interp.probes.dissect.Dissection.save>` (arrays and JSON) and
    its figure (``dissection.png``) in ``folder``; returns the paths written."""
    paths = list(dissection.save(folder))
    for name, fig in figures(dissection, title).items():
        paths.append(save_figure(fig, Path(folder) / f"{name}.png"))
    return paths
