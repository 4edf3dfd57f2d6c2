"""Figures of dataset examples, fed their result (:class:`~interp.dataset_examples.Examples`):
per layer, grids of units, a row per unit with its top receptive-field crops."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..utils import make_dir, prepare_output
from .figures import plt, save_figure
from .unit_figures import plot_examples_grid

__all__ = ["figures", "layer_figures", "save_examples"]

#: all units (``None``), the same channels in every layer, or each layer its own (the
#: ``Units`` of :mod:`interp.dataset_examples`, which the figures do not import)
Units = Sequence[int] | Mapping[str, Sequence[int]] | None


def layer_figures(
    examples: Any,
    layer: str,
    units: Units = None,
    *,
    per_figure: int = 16,
    title: str = "",
) -> Iterator[tuple[list[int], plt.Figure]]:
    """``(units, figure)`` for each grid of ``per_figure`` units of ``layer`` (all its
    units, or those ``units`` gives it: :meth:`~interp.dataset_examples.Examples.unit_indices`);
    the examples need their dataset (``examples.data``)."""
    chosen = examples.unit_indices(layer, units)
    rf = examples[layer].rf_size
    cache: dict[int, Any] = {}  # images already read, by item
    for start in range(0, len(chosen), per_figure):
        part = chosen[start : start + per_figure]
        rows = [(u, examples.crops(layer, u, cache=cache)) for u in part]
        yield part, plot_examples_grid(rows, f"{title} {layer}".strip(), rf)


def figures(
    examples: Any, units: Units = None, *, per_figure: int = 16, title: str = ""
) -> dict[str, list[plt.Figure]]:
    """Per layer, its grids (:func:`layer_figures`)."""
    return {
        name: [
            fig
            for _, fig in layer_figures(examples, name, units, per_figure=per_figure, title=title)
        ]
        for name in examples
    }


def save_examples(
    examples: Any,
    folder: str | Path,
    *,
    units: Units = None,
    per_figure: int = 16,
    title: str = "",
) -> Path:
    """The grid PNGs of ``units`` (``<layer>/units_AAAA-BBBB.png``, saved and closed one at
    a time; none for examples loaded without their dataset), then what :meth:`Examples.save
    <interp.dataset_examples.Examples.save>` writes (``examples.json``, which lists the
    grids, and ``examples.pt``); returns the JSON's path."""
    out = prepare_output(folder)
    written: dict[str, list[str]] = {}
    for name in examples:
        sub = make_dir(out / name.replace("/", "_"))
        written[name] = []
        if examples.data is None:
            continue
        for part, fig in layer_figures(examples, name, units, per_figure=per_figure, title=title):
            path = sub / f"units_{part[0]:04d}-{part[-1]:04d}.png"
            save_figure(fig, path)
            written[name].append(str(path.relative_to(out)))
    return examples.save(out, units=units, figures=written)
