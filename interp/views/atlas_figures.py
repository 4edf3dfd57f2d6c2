"""Figures of an atlas of feature visualizations, fed its result
(:class:`~interp.pipeline.atlas.Atlas`): each layer's labelled grid and the overview of every
layer, early to late. The unit images are read from the atlas's folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..utils import make_dir
from .figures import blank_axis, plot_image_grid, plt, save_figure

__all__ = ["figures", "grid_figure", "overview_figure", "save_atlas"]


def grid_figure(model: str, layer: str, units: list[dict[str, Any]], folder: Path) -> plt.Figure:
    """One layer's unit images (from ``folder``), each labelled with its channel, the value
    it reached and, with a reference set, the best natural crop's."""
    images, labels = [], []
    for u in units:
        arr = np.asarray(Image.open(folder / u["png"]), dtype=np.float32) / 255.0
        arr = arr[..., None] if arr.ndim == 2 else arr
        images.append(torch.from_numpy(arr).permute(2, 0, 1))
        nat = f" | nat {u['natural_max']:.3g}" if "natural_max" in u else ""
        value = "dead" if u.get("dead") else f"{u['value']:.3g}"
        labels.append(f"#{u['channel']}: {value}{nat}")
    title = f"{model}  {layer}  ({units[0]['objective'] if units else 'channel'} objective"
    title += "; value reached | best natural crop)" if units and "natural_max" in units[0] else ")"
    return plot_image_grid(images, labels, title)


def overview_figure(model: str, entries: list[dict[str, Any]], folder: Path) -> plt.Figure:
    """Up to eight units of every layer (``entries``: the atlas's layers), a row per layer."""
    cols = min(8, max((len(e["units"]) for e in entries), default=1))
    rows = max(1, len(entries))
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.3 * cols + 1.6, 1.35 * rows + 0.5), squeeze=False
    )
    for r, entry in enumerate(entries):
        for c in range(cols):
            ax = axes[r, c]
            blank_axis(ax)
            if c < len(entry["units"]):
                unit = entry["units"][c]
                img = Image.open(folder / entry["folder"] / unit["png"])
                ax.imshow(img, cmap="gray" if img.mode == "L" else None)
                ax.set_title(f"#{unit['channel']}", fontsize=6, pad=1)
        axes[r, 0].set_ylabel(entry["layer"], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{model}: feature visualizations, early (top) to late (bottom)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (1.35 * rows + 0.5)))
    return fig


def figures(atlas: Any) -> dict[str, plt.Figure]:
    """``{"overview": all layers, "<layer>": that layer's labelled grid}``."""
    figs = {"overview": overview_figure(atlas.model, atlas.layers, atlas.folder)}
    for entry in atlas.layers:
        figs[entry["layer"]] = grid_figure(
            atlas.model, entry["layer"], entry["units"], atlas.folder / entry["folder"]
        )
    return figs


def save_atlas(atlas: Any, folder: str | Path | None = None) -> Path:
    """Every layer's ``grid.png`` and (for an atlas, not a single layer's ``visualize``)
    ``overview.png`` in ``folder`` (default the atlas's own), then what :meth:`Atlas.save
    <interp.pipeline.atlas.Atlas.save>` writes (the index last; unit PNGs copied to another
    folder); returns the index's path."""
    target = make_dir(folder if folder is not None else atlas.folder)
    for entry in atlas.layers:
        sub = make_dir(target / entry["folder"])
        grid = grid_figure(
            atlas.model, entry["layer"], entry["units"], atlas.folder / entry["folder"]
        )
        save_figure(grid, sub / "grid.png")
    if atlas.layers and atlas.index == "index.json":  # visualize: its grid is enough
        save_figure(
            overview_figure(atlas.model, atlas.layers, atlas.folder), target / "overview.png"
        )
    return atlas.save(target)
