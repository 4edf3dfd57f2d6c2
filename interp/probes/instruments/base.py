"""The edge-instrument protocol and its registry.

An edge instrument says, per unit of a layer, whether the unit is an edge unit. Everything
the hierarchy check, its figures, the explorer, the report and the command line need to know
about one instrument is in its :class:`EdgeInstrument`, declared once in the instrument's own
module and registered with :func:`register_edge_instrument`::

    register_edge_instrument(EdgeInstrument(
        name="contrast", label="luminance contrast", version="1",
        keys=("contrast",), probe=probe, units=lambda a, t: a["contrast"] > max(0.5, t),
        gate=lambda a: a["contrast"], rule=lambda s: "contrast above the control's quantile",
        columns=(Column("contrast", "contrast", lambda a, u: float(a["contrast"][u])),),
    ))

A network's arrays are kept per instrument and layer (``{instrument}/{layer}/{key}`` in the
npz of :class:`~interp.probes.hierarchy.NetworkProbes`), so a new instrument needs no new
storage code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...layer_geometry import LayerGeometry
from ..dissect import Dissection

__all__ = [
    "EDGE_INSTRUMENTS",
    "Column",
    "EdgeInstrument",
    "InstrumentRegistry",
    "ProbeContext",
    "Probed",
    "quantiles",
    "register_edge_instrument",
]

Arrays = Mapping[str, np.ndarray]  # one layer's per-unit arrays of one instrument


@dataclass(frozen=True)
class ProbeContext:
    """What an instrument's probe may use besides the network and its layers: the probe
    images' size, the natural reference crops (drive ratios), the network's dissection
    (``None`` for an edge-only control), whether to show progress, and the network's layer
    geometry (:class:`~interp.layer_geometry.LayerGeometry`: its inventory and smallest
    canvases, traced once for every instrument that probes it; ``None``: each traces its
    own)."""

    size: int
    reference: torch.Tensor
    dissection: Dissection | None = None
    progress: bool = False
    geometry: LayerGeometry | None = None


@dataclass
class Probed:
    """What a probe returns: per layer, the instrument's per-unit arrays (a layer it did not
    measure is absent) and JSON facts about the layer (``info``: merged into the network's
    ``layer_info``; a skipped layer may say why)."""

    arrays: dict[str, dict[str, np.ndarray]]
    info: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Column:
    """A per-unit value an instrument adds to the explorer (tiles, sort menu, unit page) and
    to the unit's scores.

    Attributes:
        key: the tile's field and ``data-`` attribute (unique over the instruments).
        label: the header of the value on the unit page.
        value: ``value(arrays, unit)`` -> a number, a string or ``None``.
        fmt: the number format on the tile and the unit page.
        tile: shown on the tile and offered as a sort key (else on the unit page only).
    """

    key: str
    label: str
    value: Callable[[Arrays, int], Any]
    fmt: str = ".2f"
    tile: bool = True


@dataclass(frozen=True)
class EdgeInstrument:
    """One edge instrument (module docstring).

    Attributes:
        name: its key in statuses, thresholds, the verdict and stored arrays (no ``/``).
        label: its name for people (figures, tables, pages).
        version: bumped when its numbers change with the same settings; recorded with the
            hierarchy's settings (and so in the stage keys), with ``note`` after it.
        keys: the per-unit arrays it keeps per layer.
        probe: ``probe(net, layers, ctx)`` -> :class:`Probed`.
        units: ``units(arrays, threshold)`` -> bool per unit: edge units of one layer given
            the control's ``threshold`` (``nan`` where there is none).
        gate: ``gate(arrays)`` -> the control units' values that set the threshold (its
            ``control_quantile``); ``None``: the instrument has no control threshold.
        summary: ``summary(model, controls, threshold, info)`` -> entries of the layer's row
            in ``hierarchy.json`` (``model``: the model's arrays or ``None``, ``controls``: the
            controls' arrays of the layer, ``threshold``: its control threshold record or
            ``None``, ``info``: the model's ``layer_info``).
        rule: ``rule(settings)`` -> the rule's text in ``hierarchy.json`` (``rules``).
        columns: what it adds to the explorer and the unit scores.
        note: words after the version in the settings' ``edge_instruments``.
        needs: a concept category the data must have for it to count in the verdict.
        needs_dissection: it reads the dissection (not measured on edge-only controls; its
            controls are the dissected ones).
        fraction: it has its own profile fraction (``edge_<name>``: a line in the profile
            figure and a column of the tables); ``False`` where the profile shows it already
            (dissection's edge concepts are its ``edge`` category).
        skips_layers: it may leave a layer unmeasured without the layer being dropped (the
            ERF fit skips receptive fields under 5 px); otherwise the hierarchy keeps only
            the layers it measured.
    """

    name: str
    label: str
    version: str
    keys: tuple[str, ...]
    probe: Callable[[Any, Sequence[str], ProbeContext], Probed]
    units: Callable[[Arrays, float], np.ndarray]
    gate: Callable[[Arrays], np.ndarray] | None = None
    summary: Callable[[Arrays | None, list[Arrays], dict | None, dict], dict[str, Any]] | None = (
        None
    )
    rule: Callable[[Mapping[str, Any]], str] = lambda settings: ""
    columns: tuple[Column, ...] = ()
    note: str = ""
    needs: str | None = None
    needs_dissection: bool = False
    fraction: bool = True
    skips_layers: bool = False

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"an instrument's name is a non-empty word without '/': {self.name!r}")

    @property
    def described(self) -> str:
        """``name vVERSION note`` (the settings' ``edge_instruments`` entry)."""
        return " ".join(x for x in (self.name, self.version and f"v{self.version}", self.note) if x)


class InstrumentRegistry:
    """The registered edge instruments, in registration order."""

    def __init__(self) -> None:
        self._items: dict[str, EdgeInstrument] = {}

    def register(self, instrument: EdgeInstrument, *, replace: bool = False) -> EdgeInstrument:
        if instrument.name in self._items and not replace:
            raise ValueError(f"an edge instrument named {instrument.name!r} is registered")
        keys = {c.key for i in self._items.values() if i.name != instrument.name for c in i.columns}
        clash = keys & {c.key for c in instrument.columns}
        if clash:
            raise ValueError(f"explorer columns {sorted(clash)} are another instrument's")
        self._items[instrument.name] = instrument
        return instrument

    def unregister(self, name: str) -> EdgeInstrument:
        return self._items.pop(name)

    def __getitem__(self, name: str) -> EdgeInstrument:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[EdgeInstrument]:
        return iter(list(self._items.values()))

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return list(self._items)

    def resolve(self, names: Sequence[str]) -> tuple[EdgeInstrument, ...]:
        """The registered instruments among ``names`` (a stored result's), in its order."""
        return tuple(self._items[n] for n in names if n in self._items)


#: every edge instrument the hierarchy check runs (gratings, ERF fit, dissection's edges)
EDGE_INSTRUMENTS = InstrumentRegistry()


def register_edge_instrument(instrument: EdgeInstrument) -> EdgeInstrument:
    """Add ``instrument`` to :data:`EDGE_INSTRUMENTS` (returns it)."""
    return EDGE_INSTRUMENTS.register(instrument)


def quantiles(x: np.ndarray) -> dict[str, Any]:
    """Mean and 10/25/50/75/90% quantiles of the finite values (rounded to 4 digits)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    q = np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9]) if len(x) else [np.nan] * 5
    mean = float(x.mean()) if len(x) else float("nan")
    return {"mean": round(mean, 4), "q10_25_50_75_90": np.round(q, 4).tolist()}
