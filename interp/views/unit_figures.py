"""Figures for single units: dataset-example grids, attribution overlays and the unit card."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figures import blank_axis, save_figure  # noqa: E402

__all__ = [
    "heat_overlay",
    "plot_attribution",
    "plot_examples_grid",
    "plot_tuning_curve",
    "plot_unit_card",
]


def heat_overlay(
    image: np.ndarray, heat: np.ndarray, alpha: float = 0.6, *, attribution: bool = False
) -> np.ndarray:
    """``image`` (H, W, 3) in [0, 1] blended with ``heat`` (H, W) through ``inferno``.

    Activation maps are scaled by their maximum (negative values shown as zero). Attribution
    maps (``attribution=True``) are pixel-level and speckled: their absolute value is smoothed
    (Gaussian, sigma 1.5 px) and scaled by its 99.5th percentile, for display only.
    """
    if attribution:
        from scipy.ndimage import gaussian_filter

        h = gaussian_filter(np.abs(heat).astype(np.float64), 1.5)
        h = np.clip(h / (np.quantile(h, 0.995) + 1e-12), 0, 1)
    else:
        h = np.clip(heat / (np.abs(heat).max() + 1e-12), 0, 1)
    coloured = plt.get_cmap("inferno")(h)[..., :3]
    weight = alpha * h[..., None] ** 0.5 if attribution else alpha
    return np.clip((1 - weight) * image * (0.55 if attribution else 1) + weight * coloured, 0, 1)


def plot_examples_grid(
    rows: Sequence[tuple[int, Sequence[tuple[np.ndarray, float]]]], title: str, rf: int
) -> plt.Figure:
    """One row per unit: its top crops (receptive-field boxes), each with its activation."""
    cols = max(1, max(len(c) for _, c in rows))
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(1.05 * cols + 0.6, 1.15 * len(rows) + 0.5), squeeze=False
    )
    for r, (unit, crops) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            blank_axis(ax)
            if c < len(crops):
                img, value = crops[c]
                ax.imshow(img)
                ax.set_title(f"{value:.2f}", fontsize=6, pad=1)
            if c == 0:
                ax.set_ylabel(f"#{unit}", fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{title}: top dataset examples per unit ({rf} px receptive fields)", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def plot_attribution(image: np.ndarray, heat: np.ndarray, title: str) -> plt.Figure:
    """The image, the attribution map and their overlay side by side."""
    fig, axes = plt.subplots(1, 3, figsize=(8.4, 3.0))
    axes[0].imshow(image)
    axes[0].set_title("input", fontsize=9)
    lim = float(np.abs(heat).max()) or 1.0
    im = axes[1].imshow(heat, cmap="RdBu_r", vmin=-lim, vmax=lim)
    axes[1].set_title("attribution", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04)
    axes[2].imshow(heat_overlay(image, heat, attribution=True))
    axes[2].set_title("overlay (|attribution|, smoothed)", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_unit_card(card: Any) -> plt.Figure:
    """One unit on one card: feature visualization, top dataset examples with where the unit
    fires (activation) and which pixels drive it (attribution), and its scores and label
    (``card``: a :class:`~interp.pipeline.card.UnitCard`, or the dict of its parts)."""
    if not isinstance(card, dict):
        card = {
            "title": f"{card.model}  {card.layer}:{card.channel}",
            "featvis": card.featvis,
            "examples": card.rows,
            "lines": card.lines,
        }
    ex = card["examples"]
    n = len(ex)
    cols = max(n, 3)
    fig = plt.figure(figsize=(1.7 * cols + 0.5, 7.6))
    grid = fig.add_gridspec(4, cols, height_ratios=[1.35, 1, 1, 1])
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(card["featvis"])
    ax.set_title("feature visualization", fontsize=8)
    ax.axis("off")
    text = fig.add_subplot(grid[0, 1:])
    text.axis("off")
    text.text(0, 1, "\n".join(card["lines"]), va="top", ha="left", fontsize=8, family="monospace")
    for j, e in enumerate(ex):
        for r, (img, label) in enumerate(
            ((e["crop"], f"{e['value']:.2f}"), (e["fires"], "fires"), (e["drives"], "drives"))
        ):
            ax = fig.add_subplot(grid[1 + r, j])
            ax.imshow(img)
            ax.axis("off")
            if j == 0 or r == 0:
                ax.set_title(label if r == 0 else f"{label}", fontsize=7, pad=2)
    fig.suptitle(card["title"], fontsize=10)
    with warnings.catch_warnings():  # long text lines can defeat tight_layout: harmless
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def plot_tuning_curve(tuning: np.ndarray, orientations: Sequence[float], title: str) -> plt.Figure:
    """One unit's evoked orientation tuning curve (the explorer's unit page)."""
    fig, ax = plt.subplots(figsize=(3.2, 2.0), dpi=80)
    ax.plot(list(orientations), tuning, "o-", color="#4c78a8", ms=3)
    ax.axhline(0, color="#999", lw=0.5)
    ax.set_xlabel("grating orientation (deg)", fontsize=7)
    ax.set_ylabel("evoked response", fontsize=7)
    ax.tick_params(labelsize=6)
    ax.set_title(title, fontsize=7)
    fig.tight_layout()
    return fig


def save_unit_card(card: Any, folder: str | Path) -> Path:
    """The card's PNG (``card_<layer>_<channel>.png``), then its data (``card.save``: JSON and
    arrays, recording the PNG's name); returns the PNG's path."""
    png = save_figure(plot_unit_card(card), Path(folder) / f"{card.stem}.png")
    card.files["png"] = png.name
    card.save(folder)
    return png
