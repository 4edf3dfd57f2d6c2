"""The grating edge instrument (:mod:`interp.probes.edges`): evoked, grey-subtracted tuning
to drifting gratings, read per unit at a contrast where its tuning touches no bound; an edge
unit is driven (drive ratio >= 0.3 against its top-0.5% response on natural photo crops) and
oriented (OSI >= 0.2 and above the random-init controls' threshold)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...settings import HIERARCHY
from ..edges import DRIVE_MIN, GRATINGS_VERSION, OSI_MIN, driven, edge_mask, edge_probe
from .base import Arrays, Column, EdgeInstrument, ProbeContext, Probed, quantiles

__all__ = ["GRATINGS"]

#: per-unit arrays kept (``tuning``: the curve at the preferred frequency and contrast read)
KEYS = (
    "osi",
    "drive_ratio",
    "simple",
    "preferred_orientation",
    "contrast",
    "unit_clipped",
    "tuning",
)


def _probe(net: Any, layers: Sequence[str], ctx: ProbeContext) -> Probed:
    found = edge_probe(
        net,
        list(layers),
        reference=ctx.reference,
        reference_images=len(ctx.reference),
        size=ctx.size,
        progress=ctx.progress,
        geometry=ctx.geometry,
    )
    out = Probed({})
    for name in layers:
        if name not in found:
            continue
        r = found[name]
        arrays = {k: np.asarray(getattr(r, k)) for k in KEYS[:-1]}
        f_idx = np.searchsorted(np.asarray(r.frequencies), r.preferred_frequency)
        arrays["tuning"] = r.tuning[np.arange(r.units), :, f_idx].astype(np.float32)
        out.arrays[name] = arrays
        out.info[name] = {
            "clipped_by_contrast": [round(float(v), 4) for v in r.clipped],
            "contrasts": r.contrasts,
            "rf_centre": r.info["rf_centre"],
            "rf_size": r.info["rf_size"],
            "orientations": r.orientations,
        }
    return out


def _units(g: Arrays, threshold: float) -> np.ndarray:
    # driven, OSI above the absolute cut and the control's threshold
    return edge_mask(g["osi"], g["drive_ratio"], osi_threshold=threshold)


def _gate(g: Arrays) -> np.ndarray:
    return g["osi"][driven(g["drive_ratio"])]


def _summary(
    g: Arrays | None, cg: list[Arrays], threshold: dict | None, info: dict
) -> dict[str, Any]:
    if g is None:
        return {}
    ratio = g["drive_ratio"][np.isfinite(g["drive_ratio"])]
    cratio = np.concatenate([x["drive_ratio"] for x in cg])
    cratio = cratio[np.isfinite(cratio)]
    control_units = max(1, sum(len(x["osi"]) for x in cg))
    value = (threshold or {}).get("value", float("nan"))
    return {
        "gratings": {
            "osi": quantiles(g["osi"]),
            "control_osi": quantiles(np.concatenate([x["osi"] for x in cg])),
            "drive_ratio": quantiles(ratio) if len(ratio) else None,
            "control_drive_ratio": quantiles(cratio) if len(cratio) else None,
            "driven_fraction": round(float((ratio >= DRIVE_MIN).sum() / len(g["osi"])), 4),
            "control_driven_fraction": round(float((cratio >= DRIVE_MIN).sum() / control_units), 4),
            "simple_fraction": round(float(g["simple"].mean()), 4),
            "contrast_read_median": float(np.median(g["contrast"])),
            "clipped_by_contrast": info.get("clipped_by_contrast"),
            "contrasts": info.get("contrasts"),
            "clipped_at_contrast_read_median": round(float(np.median(g["unit_clipped"])), 4),
            "rf_centre": info.get("rf_centre"),
            "control_threshold": threshold,
        },
        # the OSI an edge unit must exceed: the absolute cut or the control's, the higher
        "edge_threshold_osi": round(float(np.nanmax([OSI_MIN, value])), 4),
    }


def _rule(s: Mapping[str, Any]) -> str:
    q = s.get("control_quantile", HIERARCHY.control_quantile)
    n = s.get("min_control_units", HIERARCHY.min_control_units)
    return (
        f"driven (drive ratio >= {DRIVE_MIN}: the best evoked grating response over "
        "the unit's evoked top-0.5% response on natural photo crops) and OSI of the "
        f"evoked tuning >= {OSI_MIN} and above the {q:.0%} "
        "quantile of the pooled random-init controls' driven units (at least "
        f"{n} control units per layer)"
    )


GRATINGS = EdgeInstrument(
    name="gratings",
    label="gratings",
    version=str(GRATINGS_VERSION),
    note="(evoked, contrast series, read per unit)",
    keys=KEYS,
    probe=_probe,
    units=_units,
    gate=_gate,
    summary=_summary,
    rule=_rule,
    columns=(
        Column("osi", "OSI", lambda g, u: round(float(g["osi"][u]), 4)),
        Column(
            "preferred_orientation",
            "preferred orientation (deg)",
            lambda g, u: float(g["preferred_orientation"][u]),
            fmt=".3f",
            tile=False,
        ),
        Column(
            "drive_ratio",
            "drive ratio (gratings / photos)",
            lambda g, u: float(g["drive_ratio"][u]),
            fmt=".3f",
            tile=False,
        ),
        Column(
            "simple",
            "simple-like",
            lambda g, u: "yes" if bool(g["simple"][u]) else "no",
            tile=False,
        ),
    ),
)
