"""The ERF edge instrument (:mod:`interp.probes.erf`): a Gabor fit of the effective
receptive field (the gradient of the centre unit averaged over noise images) that is good
(R^2 >= 0.8) and oriented, and above the random-init controls' threshold of orientedness;
layers with receptive fields under 5 px are not measured."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...settings import HIERARCHY
from ..erf import ORIENTED_MIN, R2_MIN, erf_edge_units, erf_probe
from .base import Arrays, Column, EdgeInstrument, ProbeContext, Probed, quantiles

__all__ = ["ERF"]

#: per-unit arrays kept (``edge``: the absolute rule, the control's threshold comes later)
KEYS = ("r2", "orientedness", "orientation", "edge")


def _probe(net: Any, layers: Sequence[str], ctx: ProbeContext) -> Probed:
    found = erf_probe(
        net, list(layers), size=ctx.size, progress=ctx.progress, geometry=ctx.geometry
    )
    out = Probed({})
    for name in layers:
        er = found.get(name)
        if er is None or er.skipped is not None:
            why = er.skipped if er is not None else "no 4-D output for the ERF instrument"
            out.info[name] = {"erf_skipped": why}
            continue
        out.arrays[name] = {k: np.asarray(getattr(er, k)) for k in KEYS[:-1]}
        out.arrays[name]["edge"] = erf_edge_units(er, absolute=True)
    return out


def _units(e: Arrays, threshold: float) -> np.ndarray:
    edge = e["edge"].astype(bool).copy()  # a good oriented Gabor fit ...
    if np.isfinite(threshold):
        edge &= e["orientedness"] > threshold  # ... above the control's orientedness
    return edge


def _gate(e: Arrays) -> np.ndarray:
    return e["orientedness"][e["r2"] >= R2_MIN]


def _summary(
    e: Arrays | None, controls: list[Arrays], threshold: dict | None, info: dict
) -> dict[str, Any]:
    row: dict[str, Any] = {"erf": None}
    if e is not None:
        row["erf"] = {
            "r2": quantiles(e["r2"]),
            "orientedness": quantiles(e["orientedness"]),
            "good_fits": round(float((e["r2"] >= R2_MIN).mean()), 4),
            "control_threshold": threshold,
        }
    row["erf_skipped"] = info.get("erf_skipped")
    return row


def _rule(s: Mapping[str, Any]) -> str:
    q = s.get("control_quantile", HIERARCHY.control_quantile)
    return (
        f"Gabor fit of the effective receptive field with R^2 >= {R2_MIN} and "
        f"orientedness >= {ORIENTED_MIN}, and orientedness above the "
        f"{q:.0%} quantile of the pooled controls' good fits; "
        "layers with receptive fields under 5 px are not measured"
    )


ERF = EdgeInstrument(
    name="erf",
    label="ERF fit",
    version="1",
    keys=KEYS,
    probe=_probe,
    units=_units,
    gate=_gate,
    summary=_summary,
    rule=_rule,
    columns=(
        Column("erf_r2", "ERF Gabor fit R^2", lambda e, u: round(float(e["r2"][u]), 4)),
        Column(
            "erf_orientedness",
            "ERF orientedness",
            lambda e, u: round(float(e["orientedness"][u]), 4),
            tile=False,
        ),
    ),
    skips_layers=True,
)
