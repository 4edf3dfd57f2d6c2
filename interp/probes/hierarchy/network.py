"""One network's measurements (the model or one control): every edge instrument's per-unit
arrays per layer, the dissection, the first-conv filter analysis; saved as one npz (arrays
``edges/{instrument}/{layer}/{key}``, ``dissection/{layer}/{key}``, ``filters/{key}``) beside
a ``.meta.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...utils import atomic_path, atomic_write_text
from ..dissect import Dissection
from ..filters import FilterAnalysis
from ..instruments.dissection_edges import dissection_edges

__all__ = ["NetworkProbes"]

#: the npz layout; files without it are the layout before instruments were generic
FORMAT = 2
_LEGACY_INSTRUMENTS = ["gratings", "erf", "dissection"]


@dataclass
class NetworkProbes:
    """Everything measured on one network (the model or one control).

    ``edges[instrument][layer]`` holds an edge instrument's per-unit arrays (its
    :attr:`~interp.probes.instruments.EdgeInstrument.keys`); a layer it did not measure is
    absent. ``instruments`` names the instruments the network was probed with (a stored
    result reads them back in this order). ``dissection`` is ``None`` for an edge-only
    control (one of the extra seeds pooled for the edge thresholds).
    """

    role: str  # "model", "control" or "control-edges"
    seed: int | None
    layers: list[str]
    edges: dict[str, dict[str, dict[str, np.ndarray]]]
    dissection: Dissection | None
    filters: FilterAnalysis | None
    notes: list[str] = field(default_factory=list)
    layer_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    instruments: list[str] = field(default_factory=list)

    def arrays(self, instrument: str, layer: str) -> dict[str, np.ndarray] | None:
        """``instrument``'s arrays of ``layer`` (``None``: not measured)."""
        return self.edges.get(instrument, {}).get(layer)

    @property
    def gratings(self) -> dict[str, dict[str, np.ndarray]]:
        """The grating instrument's arrays per layer (``edges["gratings"]``)."""
        return self.edges.get("gratings", {})

    @property
    def erf(self) -> dict[str, dict[str, np.ndarray]]:
        """The ERF instrument's arrays per layer (``edges["erf"]``)."""
        return self.edges.get("erf", {})

    @property
    def osi(self) -> dict[str, np.ndarray]:
        return {n: self.gratings[n]["osi"] for n in self.layers}

    @property
    def preferred_orientation(self) -> dict[str, np.ndarray]:
        return {n: self.gratings[n]["preferred_orientation"] for n in self.layers}

    def save(self, path: Path) -> None:
        """Arrays to ``path`` (.npz), the rest to ``path`` with .meta.json (both atomic)."""
        arrays: dict[str, np.ndarray] = {}
        for inst, per_layer in self.edges.items():
            for name, values in per_layer.items():
                if name in self.layers:
                    arrays |= {f"edges/{inst}/{name}/{k}": v for k, v in values.items()}
        if self.dissection is not None:
            arrays |= {f"dissection/{k}": v for k, v in self.dissection.arrays().items()}
        if self.filters is not None:
            arrays["filters/gabor_r2"] = self.filters.gabor_r2
            arrays["filters/colour_fraction"] = self.filters.colour_fraction
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        f = self.filters
        meta: dict[str, Any] = {
            "format": FORMAT,
            "role": self.role,
            "seed": self.seed,
            "layers": self.layers,
            "instruments": self.instruments,
            "notes": self.notes,
            "layer_info": self.layer_info,
            "filters": None
            if f is None
            else {
                "layer": f.layer,
                "kernel": f.kernel,
                "in_channels": f.in_channels,
                "note": f.note,
            },
            "dissection": None if self.dissection is None else self.dissection.meta(),
        }
        atomic_write_text(path.with_suffix(".meta.json"), json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path) -> NetworkProbes:
        path = Path(path)
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        if meta.get("format") is None:
            return _legacy(meta, arrays)
        layers = meta["layers"]
        edges: dict[str, dict[str, dict[str, np.ndarray]]] = {n: {} for n in meta["instruments"]}
        rest: dict[str, np.ndarray] = {}
        for key, value in arrays.items():
            if key.startswith("edges/"):
                _, inst, name, k = key.split("/", 3)
                edges.setdefault(inst, {}).setdefault(name, {})[k] = value
            elif key.startswith("dissection/"):
                rest[key[len("dissection/") :]] = value
        dis = None
        if meta["dissection"] is not None:
            dis = Dissection.from_arrays(rest, meta["dissection"], layers)
        return cls(
            role=meta["role"],
            seed=meta["seed"],
            layers=layers,
            edges=edges,
            dissection=dis,
            filters=_filters(meta, arrays),
            notes=meta["notes"],
            layer_info=meta["layer_info"],
            instruments=list(meta["instruments"]),
        )


def _filters(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> FilterAnalysis | None:
    f = meta["filters"]
    if f is None:
        return None
    return FilterAnalysis(
        f["layer"],
        f["kernel"],
        f["in_channels"],
        arrays["filters/gabor_r2"],
        arrays["filters/colour_fraction"],
        f["note"],
    )


def _legacy(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> NetworkProbes:
    """A network saved before the instruments were generic (``{layer}/gratings/{key}``,
    ``{layer}/erf/{key}``, the dissection's ``{layer}/{key}``): stage files of an earlier
    run, whose stage keys are unchanged."""
    layers = meta["layers"]

    def group(name: str, kind: str) -> dict[str, np.ndarray]:
        prefix = f"{name}/{kind}/"
        return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

    dis = None
    if meta["dissection"] is not None:
        dis = Dissection.from_arrays(arrays, meta["dissection"], layers)
    edges: dict[str, dict[str, dict[str, np.ndarray]]] = {
        "gratings": {n: group(n, "gratings") for n in layers},
        "erf": {n: group(n, "erf") for n in meta["erf_layers"]},
        "dissection": {},
    }
    for name in layers:
        edge = dissection_edges(dis, name)
        if edge is not None:
            edges["dissection"][name] = {"edge": edge}
    return NetworkProbes(
        role=meta["role"],
        seed=meta["seed"],
        layers=layers,
        edges=edges,
        dissection=dis,
        filters=_filters(meta, arrays),
        notes=meta["notes"],
        layer_info=meta["layer_info"],
        instruments=list(_LEGACY_INSTRUMENTS),
    )
