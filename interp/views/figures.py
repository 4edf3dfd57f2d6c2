"""PNG figures for the foundation jobs (layer inventory, classification)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..data.images import ImageLike, to_input  # noqa: E402
from ..data.partsworld import EDGE_BINS, PART_TYPES  # noqa: E402
from ..inventory import LayerInfo  # noqa: E402
from ..models.base import Preprocessing  # noqa: E402
from ..predictions import Prediction  # noqa: E402
from ..utils import atomic_path  # noqa: E402

__all__ = ["blank_axis", "save_figure", "plot_inventory", "plot_classification"]


def blank_axis(ax: plt.Axes) -> None:
    """No ticks and no frame (an image cell of a grid), but labels and titles still show."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def save_figure(fig: plt.Figure, path: str | os.PathLike[str], dpi: int = 110) -> Path:
    """Save ``fig`` as PNG atomically (temp file, then rename) and close it."""
    try:
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_inventory(infos: Sequence[LayerInfo], title: str) -> plt.Figure:
    """Receptive field size, stride and channel count against execution order."""
    rows = [i for i in infos if i.rf_size is not None and i.order is not None]
    fig, (ax_rf, ax_ch) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    if rows:
        xs = list(range(len(rows)))
        ax_rf.plot(xs, [r.rf_size[0] for r in rows], ".-", label="receptive field (px)")
        ax_rf.plot(
            xs, [r.rf_stride[0] if r.rf_stride else 0 for r in rows], ".-", label="stride (px)"
        )
        clipped = [x for x, r in zip(xs, rows, strict=True) if r.rf_clipped]
        if clipped:
            ax_rf.axvspan(
                clipped[0] - 0.5,
                xs[-1] + 0.5,
                color="0.9",
                zorder=0,
                label="RF reaches the image border",
            )
        ax_rf.set_yscale("log")
        ax_rf.legend(loc="upper left", fontsize=8)
        ax_ch.plot(xs, [r.channels for r in rows], ".-", color="C2")
        step = max(1, len(rows) // 24)
        ax_ch.set_xticks(xs[::step])
        ax_ch.set_xticklabels([r.name for r in rows][::step], rotation=70, fontsize=7, ha="right")
    ax_rf.set_ylabel("pixels")
    ax_ch.set_ylabel("channels")
    ax_rf.set_title(title)
    fig.tight_layout()
    return fig


def plot_classification(
    images: Sequence[ImageLike],
    predictions: Sequence[Sequence[Prediction]],
    preprocessing: Preprocessing,
    title: str,
    names: Sequence[str] | None = None,
) -> plt.Figure:
    """A grid of the crops the model saw, each with its top-3 classes and probabilities."""
    n = len(images)
    cols = min(5, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (image, preds) in enumerate(zip(images, predictions, strict=True)):
        ax = axes.flat[i]
        crop = preprocessing.denormalize(to_input(image, preprocessing))[0].clamp(0, 1)
        ax.imshow(crop.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        label = "\n".join(f"{p.name[:24]}  {p.probability:.0%}" for p in preds[:3])
        head = f"{names[i]}\n" if names else ""
        ax.set_title(head + label, fontsize=8, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_image_grid(
    images: Sequence[object],
    labels: Sequence[str],
    title: str,
    cols: int | None = None,
    tile: float = 1.6,
) -> plt.Figure:
    """Tiles of ``(C, H, W)`` images in ``[0, 1]`` with a small label under each."""
    import math

    import torch

    n = len(images)
    cols = cols or (n if n <= 8 else min(8, math.ceil(math.sqrt(n))))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(
        rows, cols, figsize=(tile * cols, (tile + 0.35) * rows + 0.4), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, images, labels, strict=False):
        arr = torch.as_tensor(image).detach().float().cpu().clamp(0, 1).permute(1, 2, 0)
        ax.imshow(arr.squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=7, pad=2)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return fig


def plot_partsworld_preview(samples: Sequence[object], title: str) -> plt.Figure:
    """Rows of PartsWorld samples: the image, its part masks, object mask and edge masks."""
    import numpy as np

    cmap = plt.get_cmap("tab20")
    part_colours = {p: np.array(cmap(i % 20)[:3]) for i, p in enumerate(PART_TYPES)}
    edge_colours = {b: np.array(plt.get_cmap("Set1")(i)[:3]) for i, b in enumerate(EDGE_BINS)}
    fig, axes = plt.subplots(len(samples), 4, figsize=(8.4, 2.2 * len(samples)), squeeze=False)
    for row, s in zip(axes, samples, strict=True):
        image = np.transpose(s.image, (1, 2, 0))  # type: ignore[attr-defined]
        masks = s.masks  # type: ignore[attr-defined]
        parts = image * 0.35
        legend = []
        for name, mask in masks.items():
            if name.startswith("part:"):
                kind = name.split(":")[1]
                parts[mask] = part_colours[kind]
                legend.append(kind)
        obj = image * 0.35
        for name, mask in masks.items():
            if name.startswith("object:"):
                obj[mask] = image[mask]
        edges = image * 0.35
        for b in EDGE_BINS:
            if f"edge:{b}" in masks:
                edges[masks[f"edge:{b}"]] = edge_colours[b]
        panels = [
            (image, f"{s.class_name}"),  # type: ignore[attr-defined]
            (parts, "parts: " + ", ".join(sorted(set(legend)))),
            (obj, "object mask"),
            (edges, "edges: 0 red, 45 blue, 90 green, 135 purple"),
        ]
        for ax, (img, label) in zip(row, panels, strict=True):
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_title(label, fontsize=6)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.25 / (2.2 * len(samples))))
    return fig
