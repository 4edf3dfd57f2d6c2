"""Figures of an attribution, fed its result (:class:`~interp.attribution.Attribution`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .figures import plt, save_figure
from .unit_figures import plot_attribution

__all__ = ["figures", "save_attribution"]


def figures(attribution: Any) -> dict[str, plt.Figure]:
    """``{"attribution": fig}``: the image, the map and the map over the image."""
    title = f"{attribution.method}: {attribution.target}"
    return {"attribution": plot_attribution(attribution.image, attribution.map, title)}


def save_attribution(
    attribution: Any, folder: str | os.PathLike[str], stem: str | None = None
) -> list[Path]:
    """``STEM.png`` (the figure) and what :meth:`Attribution.save
    <interp.attribution.Attribution.save>` writes (``STEM.npy``, ``STEM.npz``, ``STEM.json``)
    in ``folder``, atomically; ``stem`` defaults to the method. Returns the paths, the figure
    and the map first."""
    stem = stem or attribution.method
    data = attribution.save(folder, stem)
    png = save_figure(figures(attribution)["attribution"], Path(folder) / f"{stem}.png")
    return [png, *data]
