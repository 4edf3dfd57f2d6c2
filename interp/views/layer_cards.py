"""The report's layer cards: per layer, each sampled unit's feature visualization next to its
top dataset examples, with its scores."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .figures import plt

__all__ = ["plot_layer_card"]


def plot_layer_card(
    model: str,
    layer: str,
    rows: Sequence[tuple[int, np.ndarray, dict[str, Any], Sequence[tuple[np.ndarray, float]]]],
) -> plt.Figure:
    """``rows``: per unit, ``(channel, feature visualization, scores, [(crop, value), ...])``;
    scores may hold ``osi``, ``label`` and ``selectivity``."""
    k = max((len(crops) for *_, crops in rows), default=0)
    fig, axes = plt.subplots(
        len(rows), 1 + k, figsize=(1.5 * (1 + k) + 2.6, 1.6 * len(rows)), squeeze=False
    )
    for r, (channel, featvis, scores, crops) in enumerate(rows):
        for ax in axes[r]:
            ax.axis("off")
        axes[r, 0].imshow(featvis, cmap="gray" if featvis.ndim == 2 else None)
        axes[r, 0].set_title(f"#{channel}", fontsize=7)
        text = f"OSI {scores.get('osi', float('nan')):.2f}\n{scores.get('label') or 'no detector'}"
        if scores.get("selectivity") is not None:
            text += f"\nSI {scores['selectivity']:.2f}"
        axes[r, 0].text(
            -0.1, 0.5, text, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=6.5
        )
        for j, (image, value) in enumerate(crops):
            axes[r, 1 + j].imshow(image)
            axes[r, 1 + j].set_title(f"{value:.2f}", fontsize=6)
    fig.suptitle(f"{model} {layer}: feature visualization | top dataset examples", fontsize=8)
    fig.tight_layout(rect=(0.12, 0, 1, 0.97))
    return fig
