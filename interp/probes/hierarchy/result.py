"""The hierarchy check's result: :class:`Hierarchy` (the profile of a model and its
controls, the verdict, every network's arrays; ``to_dict``/``save``/``load``),
:class:`Verdict`, and :class:`UnitScore`, the one per-unit reading every page shows.

**Edge unit** (one definition, :meth:`Hierarchy.unit_scores`): a unit's status by each edge
instrument is ``True`` (an edge unit by that instrument's rule against its random-init
control threshold), ``False`` (measured, not one) or ``None`` (the instrument did not
measure the layer); the unit is an edge unit (``edge``) when at least one instrument that
measured it says so, not one when every instrument that measured it says no, and ``None``
when none measured it.
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...settings import HIERARCHY
from ...utils import atomic_write_text, make_dir
from ..instruments import EDGE_INSTRUMENTS, Column, EdgeInstrument, quantiles
from .network import NetworkProbes
from .thresholds import Statuses, Thresholds, control_thresholds, edge_statuses

__all__ = ["Hierarchy", "UnitScore", "Verdict", "category_units", "wilson"]


def wilson(k: int, n: int, z: float = 1.645) -> list[float]:
    """90% Wilson interval of a fraction ``k / n``."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def category_units(probes: NetworkProbes, category: str) -> dict[str, np.ndarray | None]:
    """Per layer, bool per unit: a detector of ``category`` (``None``: no such category)."""
    out: dict[str, np.ndarray | None] = {}
    for name in probes.layers:
        d = probes.dissection[name] if probes.dissection is not None else None
        if d is None or category not in d.categories:
            out[name] = None
            continue
        out[name] = d.unit_category == d.categories.index(category)
    return out


@dataclass
class Verdict:
    """The answer to "early edges, later parts" (:func:`~interp.probes.verdict.centroid_verdict`).

    Attributes:
        verdict: ``holds``, ``does not hold``, ``inconclusive`` or ``not measured``.
        text: the headline, with each instrument's centroid.
        reason: why it was not measured (``None`` otherwise).
        instruments: per edge instrument, its own verdict, bootstrap support and profile.
        details: the rest of the rule's report (claim, rule, parts, objects after parts...).
    """

    verdict: str
    text: str = ""
    reason: str | None = None
    instruments: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        return self.verdict == "holds"

    def __str__(self) -> str:
        return self.text or (f"{self.verdict}: {self.reason}" if self.reason else self.verdict)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Verdict:
        rest = dict(doc)
        return cls(
            verdict=rest.pop("verdict"),
            text=rest.pop("text", ""),
            reason=rest.pop("reason", None),
            instruments=rest.pop("instruments", {}),
            details=rest,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.details, "verdict": self.verdict}
        if self.instruments:
            out["instruments"] = self.instruments
        if self.text:
            out["text"] = self.text
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    def save(self, path: str | Path) -> Path:
        """The verdict as JSON at ``path``."""
        return atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> Verdict:
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass(frozen=True)
class UnitScore:
    """One unit as every page shows it (module docstring: the edge-unit definition).

    Attributes:
        layer, unit: which unit.
        statuses: per edge instrument: ``True``, ``False`` or ``None`` (not measured).
        values: the instruments' explorer columns (``osi``...) and the dissection's reading
            (``label``, ``concept``, ``category``, ``iou``) and ``selectivity``, where measured.
    """

    layer: str
    unit: int
    statuses: dict[str, bool | None]
    values: dict[str, Any]

    @property
    def edge(self) -> bool | None:
        """An edge unit by at least one instrument that measured it (``None``: none did)."""
        seen = [s for s in self.statuses.values() if s is not None]
        return None if not seen else any(seen)

    @property
    def edge_by(self) -> list[str]:
        """The instruments that call it an edge unit."""
        return [k for k, s in self.statuses.items() if s]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "unit": self.unit,
            "edge": self.edge,
            "statuses": dict(self.statuses),
            **self.values,
        }


@dataclass
class Hierarchy:
    """The profile of a model and its control(s), the verdict, and how they were measured.

    ``controls`` are the dissected controls; ``edge_controls`` the extra edge-only seeds
    pooled with them for the edge instruments' thresholds and control fractions;
    ``instruments`` the edge instruments it was measured with (the registered ones).
    """

    model_name: str
    data_name: str
    layers: list[str]
    categories: list[str]
    model: NetworkProbes
    controls: list[NetworkProbes]
    edge_controls: list[NetworkProbes]
    thresholds: Thresholds
    verdict: Verdict
    settings: dict[str, Any]
    instruments: tuple[EdgeInstrument, ...] = field(default_factory=lambda: tuple(EDGE_INSTRUMENTS))

    JSON = "hierarchy.json"

    # ------------------------------------------------------------------ per unit
    def statuses(self, probes: NetworkProbes) -> Statuses:
        """Per edge instrument and layer of ``probes``: bool per unit, ``None`` unmeasured."""
        return edge_statuses(probes, self.thresholds, self.instruments)

    def edge_units(self, layer: str, statuses: Statuses | None = None) -> dict[str, list[int]]:
        """The model's edge units of ``layer`` by each edge instrument (``statuses``: the
        model's :meth:`statuses`, when the caller has them already)."""
        st = self.statuses(self.model) if statuses is None else statuses
        return {
            k: [] if v.get(layer) is None else np.flatnonzero(v[layer]).tolist()
            for k, v in st.items()
        }

    @property
    def columns(self) -> list[Column]:
        """The explorer columns of the instruments, in registration order."""
        return [c for inst in self.instruments for c in inst.columns]

    def threshold(self, instrument: str, layer: str) -> float:
        """``instrument``'s control threshold in ``layer`` (``nan``: none)."""
        return float(self.thresholds.get(instrument, {}).get(layer, {}).get("value", np.nan))

    @property
    def edge_thresholds(self) -> dict[str, float]:
        """The OSI an edge unit must exceed by the gratings, per layer (the profile's
        ``edge_threshold_osi``: absolute cut or the control's threshold, the higher)."""
        return {
            r["layer"]: r["edge_threshold_osi"] for r in self.profile() if "edge_threshold_osi" in r
        }

    def unit_scores(self, layer: str) -> list[UnitScore]:
        """Every unit of ``layer`` (measured by the check) as the explorer's tiles, the
        report's index, the unit pages and the unit card show it: statuses by instrument,
        ``edge`` (one definition, module docstring) and the values beside them."""
        if layer not in self.layers:
            raise KeyError(f"the hierarchy check did not measure {layer!r}: {self.layers}")
        st = self.statuses(self.model)
        d = self.model.dissection[layer] if self.model.dissection else None
        labels = d.labels() if d is not None else None
        si = d.selectivity if d is not None else None
        units = d.units if d is not None else len(self.model.gratings[layer]["osi"])
        out = []
        for u in range(units):
            values: dict[str, Any] = {}
            for inst in self.instruments:
                arrays = self.model.arrays(inst.name, layer)
                for col in inst.columns:
                    values[col.key] = None if arrays is None else col.value(arrays, u)
            if d is not None and labels is not None:
                best = int(d.best_concept[u])
                values["label"] = labels[u]
                values["concept"] = d.concepts[best]
                values["category"] = d.categories[int(d.concept_category[best])]
                values["iou"] = round(float(d.best_iou[u]), 4)
            values["selectivity"] = None if si is None else round(float(si[u]), 4)
            statuses = {
                k: None if v.get(layer) is None else bool(v[layer][u]) for k, v in st.items()
            }
            out.append(UnitScore(layer, u, statuses, values))
        return out

    def edge_counts(self, layer: str) -> dict[str, int | None]:
        """Edge units of ``layer``: ``edge`` (the one definition) and per instrument
        (``None``: not measured); the same readings as :meth:`unit_scores`."""
        scores = self.unit_scores(layer)
        out: dict[str, int | None] = {"edge": sum(bool(s.edge) for s in scores)}
        for inst in self.instruments:
            seen = [s.statuses[inst.name] for s in scores]
            out[inst.name] = None if all(v is None for v in seen) else sum(bool(v) for v in seen)
        return out

    # ------------------------------------------------------------------ the profile
    def _fractions(
        self, name: str, ms: Statuses, cs_all: list[Statuses]
    ) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
        fr: dict[str, float] = {}
        cfr: dict[str, float] = {}
        intervals: dict[str, Any] = {}
        for inst in (i.name for i in self.instruments if i.fraction):
            m = ms[inst].get(name)
            if m is None:
                continue
            c = [s[inst][name] for s in cs_all if s[inst].get(name) is not None]
            pooled = np.concatenate(c) if c else np.zeros(0, bool)
            fr[f"edge_{inst}"] = round(float(m.mean()), 4)
            cfr[f"edge_{inst}"] = round(float(pooled.mean()), 4) if len(pooled) else 0.0
            intervals[f"edge_{inst}"] = {
                "model": wilson(int(m.sum()), len(m)),
                "control": wilson(int(pooled.sum()), len(pooled)),
                "control_units": int(len(pooled)),
                "control_seeds": len(c),
            }
        d = self.model.dissection[name]
        for i, cat in enumerate(self.categories):
            hits = d.unit_category == i
            fr[cat] = round(float(hits.mean()), 4)
            ch = [c.dissection[name].unit_category == i for c in self.controls]
            pooled = np.concatenate(ch)
            cfr[cat] = round(float(pooled.mean()), 4)
            intervals[cat] = {
                "model": wilson(int(hits.sum()), len(hits)),
                "control": wilson(int(pooled.sum()), len(pooled)),
            }
        return fr, cfr, intervals

    def _summaries(self, name: str) -> dict[str, Any]:
        every = [*self.controls, *self.edge_controls]
        out: dict[str, Any] = {}
        for inst in self.instruments:
            if inst.summary is None:
                continue
            controls = [a for a in (c.arrays(inst.name, name) for c in every) if a is not None]
            out |= inst.summary(
                self.model.arrays(inst.name, name),
                controls,
                self.thresholds.get(inst.name, {}).get(name),
                self.model.layer_info.get(name, {}),
            )
        return out

    def profile(self) -> list[dict[str, Any]]:
        """Per layer: every instrument's fraction with its interval (model; controls pooled),
        the instruments' summaries (drive, clipping, fits, control thresholds), counts,
        edge units and selectivity."""
        ms = self.statuses(self.model)
        cs_all = [self.statuses(c) for c in [*self.controls, *self.edge_controls]]
        rows = []
        for depth, name in enumerate(self.layers):
            d = self.model.dissection[name]
            fr, cfr, intervals = self._fractions(name, ms, cs_all)
            si = d.selectivity
            csi = [c.dissection[name].selectivity for c in self.controls]
            csi = [x for x in csi if x is not None]
            counts = {k: int(np.sum(v[name])) for k, v in ms.items() if v.get(name) is not None}
            rows.append(
                {
                    "layer": name,
                    "depth": depth,
                    "units": d.units,
                    "fractions": fr,
                    "control_fractions": cfr,
                    "intervals_90": intervals,
                    "counts": {**counts, **d.counts()},
                    **self._summaries(name),
                    "edge_units": self.edge_units(name, ms),
                    "selectivity": None if si is None else quantiles(si),
                    "control_selectivity": quantiles(np.concatenate(csi)) if csi else None,
                    "top_detectors": d.summary()["top_units"],
                }
            )
        return rows

    @property
    def edge_fractions(self) -> list[tuple[str, str]]:
        """``(fraction key, label)`` of each instrument with its own profile fraction."""
        return [(f"edge_{i.name}", i.label) for i in self.instruments if i.fraction]

    # ------------------------------------------------------------------ the document
    def _rules(self) -> dict[str, str]:
        s = self.settings
        rules = {f"edge_unit_{i.name}": i.rule(s) for i in self.instruments}
        return {
            **rules,
            "detector": (
                f"best concept's IoU > {s['iou_threshold']} with the unit's region cut at "
                f"its top {s['quantile']:.1%} activation quantile (Network Dissection)"
            ),
            "selectivity": "class selectivity index (Morcos et al. 2018) of the rectified, "
            "spatially averaged activation",
        }

    def _memory(self) -> dict[str, Any]:
        kept = sum(
            self.model.dissection[n].units
            * int(self.model.dissection[n].info.get("values_kept_per_unit", 0))
            * 4
            for n in self.layers
        )
        return {
            "threshold_buffers_mib": round(kept / 2**20, 2),
            "bound": "units x 2k float32 values per layer for the thresholds (k = quantile "
            "x images x positions, at most 2 x 1.2 x 100,000 with subsampling), units x "
            "concepts counters, and 2**22 upsampled values at a time",
        }

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``hierarchy.json``: settings, rules, control, verdict and the
        per-layer profile."""
        every = [*self.controls, *self.edge_controls]
        return {
            "model": self.model_name,
            "data": self.data_name,
            "settings": self.settings,
            "rules": self._rules(),
            "control": {
                "seeds": [c.seed for c in self.controls],
                "edge_only_seeds": [c.seed for c in self.edge_controls],
                "notes": sorted({re.sub(r",? seed \d+", "", n) for c in every for n in c.notes}),
            },
            "memory": self._memory(),
            "skipped_layers": self.model.dissection.skipped,
            "verdict": self.verdict.to_dict(),
            "networks": [network_file(c) for c in self.networks()],
            "first_conv": None
            if self.model.filters is None
            else {
                "model": self.model.filters.summary(),
                "control": [c.filters.summary() for c in self.controls if c.filters],
            },
            "layers": self.profile(),
        }

    def to_json(self) -> dict[str, Any]:
        """Deprecated: :meth:`to_dict`."""
        warnings.warn("Hierarchy.to_json is to_dict", DeprecationWarning, stacklevel=2)
        return self.to_dict()

    def networks(self) -> list[NetworkProbes]:
        """The model's probes, then the dissected controls', then the edge-only ones'."""
        return [self.model, *self.controls, *self.edge_controls]

    def save(self, folder: str | Path) -> dict[str, Path]:
        """Write ``hierarchy.json`` and every network's probes (``networks/``, so that
        :meth:`load` restores the whole result); the figures are
        :func:`interp.views.hierarchy_figures.save_figures`'. Returns the paths written."""
        folder = make_dir(folder)
        nets = make_dir(folder / "networks")
        paths = {}
        for probes in self.networks():
            probes.save(nets / network_file(probes))
            paths[network_file(probes)] = nets / network_file(probes)
        doc = json.dumps(self.to_dict(), indent=1)
        paths["json"] = atomic_write_text(folder / self.JSON, doc)
        return paths

    @classmethod
    def load(cls, folder: str | Path) -> Hierarchy:
        """The result saved by :meth:`save` (or by ``interp hierarchy --out``), with the
        registered instruments it was measured with."""
        folder = Path(folder)
        doc = json.loads((folder / cls.JSON).read_text())
        nets = [NetworkProbes.load(folder / "networks" / f) for f in doc["networks"]]
        model = nets[0]
        controls = [n for n in nets[1:] if n.role == "control"]
        edge_controls = [n for n in nets[1:] if n.role == "control-edges"]
        model.layers = [row["layer"] for row in doc["layers"]]
        quantile = doc["settings"].get("control_quantile", HIERARCHY.control_quantile)
        instruments = EDGE_INSTRUMENTS.resolve(model.instruments)
        every = [*controls, *edge_controls]
        return cls(
            model_name=doc["model"],
            data_name=doc["data"],
            layers=list(model.layers),
            categories=list(model.dissection[model.layers[0]].categories),
            model=model,
            controls=controls,
            edge_controls=edge_controls,
            thresholds=control_thresholds(every, model.layers, quantile, instruments),
            verdict=Verdict.from_dict(doc["verdict"]),
            settings=doc["settings"],
            instruments=instruments,
        )


def network_file(probes: NetworkProbes) -> str:
    """A network's file name in ``networks/`` (``model.npz``, ``control-seed0.npz``...)."""
    return f"{probes.role}{'' if probes.seed is None else f'-seed{probes.seed}'}.npz"
