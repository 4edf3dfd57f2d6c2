"""Network Dissection's edge instrument (:mod:`interp.probes.dissect`): a unit is an edge
unit when its best concept is an edge concept whose IoU passes the dissection's threshold.
It reads the network's dissection (so edge-only controls do not measure it) and counts in
the verdict only where the concept data have an ``edge`` category; its profile fraction is
the dissection's ``edge`` column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .base import Arrays, EdgeInstrument, ProbeContext, Probed

__all__ = ["DISSECTION", "dissection_edges"]


def dissection_edges(dissection: Any, layer: str) -> np.ndarray | None:
    """Bool per unit: an edge-concept detector of ``layer`` (``None``: no edge concepts)."""
    if dissection is None or layer not in dissection:
        return None
    d = dissection[layer]
    if "edge" not in d.categories:
        return None
    return np.asarray(d.unit_category == d.categories.index("edge"))


def _probe(net: Any, layers: Sequence[str], ctx: ProbeContext) -> Probed:
    out = Probed({})
    for name in layers:
        edge = dissection_edges(ctx.dissection, name)
        if edge is not None:
            out.arrays[name] = {"edge": edge}
    return out


def _units(a: Arrays, threshold: float) -> np.ndarray:
    return np.asarray(a["edge"], dtype=bool)


DISSECTION = EdgeInstrument(
    name="dissection",
    label="dissection (edge concepts)",
    version="",
    keys=("edge",),
    probe=_probe,
    units=_units,
    rule=lambda s: "an edge-concept detector of Network Dissection",
    needs="edge",
    needs_dissection=True,
    fraction=False,
    skips_layers=True,
)
