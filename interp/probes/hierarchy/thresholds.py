"""The control thresholds and every unit's status by each edge instrument.

An instrument's control threshold in a layer is the ``control_quantile`` (95%) of the values
its gate passes on all pooled control units (the dissected controls and the edge-only seeds),
with a bootstrap interval, never the 99th percentile of a few dozen units. A unit's status by
an instrument is ``True``/``False`` by the instrument's rule against that threshold, or
``None`` where the instrument did not measure the layer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..instruments import EDGE_INSTRUMENTS, EdgeInstrument
from ..verdict import control_threshold
from .network import NetworkProbes

__all__ = ["Statuses", "Thresholds", "control_thresholds", "edge_statuses"]

#: instrument -> layer -> its control threshold record (value, interval_90, units, ...)
Thresholds = dict[str, dict[str, dict[str, Any]]]
#: instrument -> layer -> bool per unit (``None``: not measured)
Statuses = dict[str, dict[str, np.ndarray | None]]


def control_thresholds(
    controls: Sequence[NetworkProbes],
    layers: Sequence[str],
    quantile: float,
    instruments: Iterable[EdgeInstrument] | None = None,
) -> Thresholds:
    """Per instrument with a gate and per layer, the control threshold from every pooled
    control unit that passes the instrument's gate (OSI of driven units for the gratings,
    orientedness of good Gabor fits for the ERF); with its 90% bootstrap interval and the
    number of units behind it (``control_units``)."""
    out: Thresholds = {}
    for inst in EDGE_INSTRUMENTS if instruments is None else instruments:
        if inst.gate is None:
            continue
        out[inst.name] = {}
        for name in layers:
            found = [a for a in (c.arrays(inst.name, name) for c in controls) if a is not None]
            n = sum(len(next(iter(a.values()))) for a in found)
            if not n:
                continue
            vals = [np.asarray(inst.gate(a)) for a in found]
            t = control_threshold(np.concatenate(vals), quantile)
            t["control_units"] = n
            out[inst.name][name] = t
    return out


def edge_statuses(
    probes: NetworkProbes,
    thresholds: Thresholds,
    instruments: Iterable[EdgeInstrument] | None = None,
) -> Statuses:
    """Per edge instrument and layer of ``probes``, bool per unit (``None``: not measured)."""
    out: Statuses = {}
    for inst in EDGE_INSTRUMENTS if instruments is None else instruments:
        cut = thresholds.get(inst.name, {})
        out[inst.name] = {}
        for name in probes.layers:
            arrays = probes.arrays(inst.name, name)
            value = cut.get(name, {}).get("value", float("nan"))
            out[inst.name][name] = None if arrays is None else inst.units(arrays, value)
    return out
