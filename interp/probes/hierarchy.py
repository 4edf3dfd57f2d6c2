"""The hierarchy check: how edge-, colour-, part- and object-like each layer is, against a
random-initialization control, and whether "early edges, later parts" holds.

For the model and for random-init controls (the same architecture re-initialized with fixed
seeds; BatchNorm statistics of a control are re-estimated on the probe images, so that it is
not handicapped by statistics that belong to other weights), every layer's units are
measured with

* three **edge instruments**, each validated on planted units (tests/test_probes_edges.py,
  tests/test_erf.py):

  - **gratings** (:mod:`interp.probes.edges`): evoked (grey-subtracted, signed) tuning, F1
    or F0 by the unit's phase behaviour, read at the highest contrast that clips < 5% of
    the bounded activations upstream; an edge unit is *driven* (drive ratio >= 0.3 against
    its top-0.5% response on natural photo crops) and *oriented* (OSI >= 0.2 and above the
    controls' threshold);
  - **ERF fit** (:mod:`interp.probes.erf`): a Gabor fit of the effective receptive field (the
    gradient of the centre unit averaged over noise images) that is good (R^2 >= 0.8) and
    oriented, and above the controls' threshold of orientedness; layers with receptive fields
    under 5 px are not measured;
  - **dissection**: Network Dissection's edge-concept detectors;

* **Network Dissection** (:mod:`interp.probes.dissect`): each unit's best concept; it is a
  colour / edge / part / object detector when that IoU passes ``iou_threshold``;
* **class selectivity** (Morcos et al. 2018);
* and, for the first convolution, Gabor fits and the colour/luminance split
  (:mod:`interp.probes.filters`).

**Controls that are not noise.** The dissected controls (``control_seeds``) are joined, for
the two edge instruments, by further edge-only seeds, each probed only in the layers that
still have fewer than ``min_control_units`` control units; an instrument's control threshold
is the ``control_quantile`` (95%) of its gated control units' values, with a bootstrap
interval, never the 99th percentile of a few dozen units.

**Verdict** (:mod:`interp.probes.verdict`): per edge instrument, the depth centroid of its
excess-over-control profile against the part detectors'; bootstrap over units and control
seeds; the headline says how many instruments support it or how they disagree.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..activations import ActivationCapture, capture
from ..data.concepts import ConceptData, PartsWorldConcepts
from ..data.photos import PhotoCrops
from ..device import keeps_freed_memory
from ..featvis.render import render_channels
from ..inventory import declared_stages, default_layers
from ..inventory import layers as inventory
from ..models.base import Model, reestimate_batchnorm
from ..models.registry import as_model, build_random, list_models, load_model
from ..settings import HIERARCHY
from ..streaming import Stream
from ..utils import atomic_path, atomic_write_text, make_dir
from ..views import hierarchy_figures as hfigs
from ..views.figures import plt, save_figure
from .dissect import Dissection, dissect, upsample
from .edges import DRIVE_MIN, OSI_MIN, driven, edge_mask, edge_probe
from .erf import ORIENTED_MIN, R2_MIN, erf_edge_units, erf_probe
from .filters import FilterAnalysis, analyse_filters, first_conv
from .verdict import centroid_verdict, control_threshold

__all__ = [
    "EDGE_INSTRUMENTS",
    "EdgeInstrument",
    "Hierarchy",
    "HierarchyResult",
    "Verdict",
    "compare",
    "measure_hierarchy",
    "NetworkProbes",
    "default_hierarchy_layers",
    "control_thresholds",
    "edge_control_thresholds",
    "edge_instruments",
    "random_control",
]

_ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
)


def default_hierarchy_layers(model: Model | nn.Module) -> list[str]:
    """The first convolution's activation (or the conv itself), then the network's blocks:
    the stages the model declares (``model.info["feature_layers"]``: timm's ``feature_info``)
    where it declares them, else :func:`~interp.inventory.default_layers`."""
    model = as_model(model)
    blocks = declared_stages(model) or default_layers(model)
    infos = [i for i in inventory(model, receptive_field=False) if i.order is not None]
    infos.sort(key=lambda i: i.order or 0)
    modules = dict(model.module.named_modules())
    first = next((i for i in infos if isinstance(modules[i.name], nn.Conv2d)), None)
    if first is None:
        return blocks
    after = [i for i in infos if (i.order or 0) > (first.order or 0)]
    act = next((i for i in after if isinstance(modules[i.name], _ACTIVATIONS)), None)
    head = act.name if act is not None else first.name
    order = {i.name: i.order for i in infos}
    if blocks and (order.get(head) or 0) >= (order.get(blocks[0]) or 0):
        return blocks
    if head in blocks or any(head.startswith(b + ".") for b in blocks):
        return blocks
    return [head, *blocks]


# ----------------------------------------------------------------------------- the control
def _rebuild(model: Model, seed: int) -> tuple[Model, str]:
    """The model's architecture with its own initialization, seeded; or reset_parameters."""
    spec = None
    kwargs: dict[str, Any] = {}
    if model.info.get("arch"):
        spec, kwargs = str(model.info["arch"]), dict(model.info.get("arch_kwargs") or {})
    elif model.name in list_models():
        spec = model.name
    if spec is not None:
        try:
            fresh = load_model(
                spec, device="cpu", weights="none", seed=seed, offline=True, **kwargs
            )
            same = {k: v.shape for k, v in fresh.module.state_dict().items()} == {
                k: v.shape for k, v in model.module.state_dict().items()
            }
            if same:
                fresh.preprocessing = model.preprocessing
                fresh.class_names = model.class_names
                return fresh, f"{spec} rebuilt with its own initialization, seed {seed}"
        except Exception:  # noqa: BLE001 - fall back to resetting a copy
            pass
    module = copy.deepcopy(model.module).cpu()

    def reset() -> nn.Module:
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()  # type: ignore[operator]
        return module

    build_random(reset, seed)
    control = Model(
        module=module,
        name=model.name,
        preprocessing=model.preprocessing,
        class_names=model.class_names,
        weights_source=f"random init (reset_parameters, seed {seed})",
    )
    return control, f"a copy of the model with PyTorch's default initialization, seed {seed}"


class _Truncated(nn.Module):
    """Runs ``module`` only up to ``layer`` (modes untouched): BatchNorm statistics of a
    control that is probed only in its first layers need no pass through the rest."""

    def __init__(self, module: nn.Module, layer: str) -> None:
        super().__init__()
        self.inner = module
        self.layer = layer

    def forward(self, x: torch.Tensor) -> None:
        with ActivationCapture(self.inner, [self.layer], eval_mode=False) as cap:
            cap.run(x)


def _reestimate_batchnorm(
    model: Model,
    data: ConceptData,
    images: int,
    batch_size: int,
    progress: bool,
    upto: str | None = None,
) -> int:
    """Recompute BatchNorm running statistics on the first ``images`` of ``data`` (through
    the layers up to ``upto`` only, when given); returns the number of images used (0
    without BatchNorm)."""
    n = min(images, len(data))

    def batches():  # noqa: ANN202
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            x = torch.stack([data.item(i, masks=False).image for i in range(start, stop)])
            yield model.normalize(x).to(model.device)

    module = model.module if upto is None else _Truncated(model.module, upto)
    return n if reestimate_batchnorm(module, batches()) else 0


def random_control(
    model: Model,
    seed: int = 0,
    data: ConceptData | None = None,
    *,
    bn_images: int = 512,
    batch_size: int = 32,
    progress: bool = False,
    upto: str | None = None,
) -> tuple[Model, list[str]]:
    """The random-init control of ``model``: same architecture, fixed ``seed``.

    With ``data``, BatchNorm statistics are re-estimated on its first ``bn_images`` images
    (in the layers up to ``upto`` only, when given: a control probed in its first layers).
    Returns the control (on the model's device, eval mode) and notes saying how it was made.
    """
    control, how = _rebuild(model, seed)
    control.module.to(model.device).eval()
    notes = [how]
    if data is not None:
        n = _reestimate_batchnorm(control, data, bn_images, batch_size, progress, upto)
        if n:
            notes.append(f"BatchNorm statistics re-estimated on {n} probe images")
    return control, notes


# ----------------------------------------------------------------------- one network's probes
#: per-unit arrays kept from each edge instrument
_GRATING_KEYS = (
    "osi",
    "drive_ratio",
    "simple",
    "preferred_orientation",
    "contrast",
    "unit_clipped",
)
_ERF_KEYS = ("r2", "orientedness", "orientation")


@dataclass
class NetworkProbes:
    """Everything measured on one network (the model or one control).

    ``gratings[layer]`` holds the evoked grating probe's per-unit arrays (OSI, drive ratio,
    simple-like, preferred orientation, the contrast read and its clipping) and ``tuning``
    the tuning curve at the preferred frequency; ``erf[layer]`` the ERF Gabor fit's (R^2,
    orientedness, orientation) or nothing for a layer the ERF instrument skips; ``dissection``
    is ``None`` for an edge-only control (one of the extra seeds pooled for edge thresholds).
    """

    role: str  # "model", "control" or "control-edges"
    seed: int | None
    layers: list[str]
    gratings: dict[str, dict[str, np.ndarray]]
    erf: dict[str, dict[str, np.ndarray]]
    dissection: Dissection | None
    filters: FilterAnalysis | None
    notes: list[str] = field(default_factory=list)
    layer_info: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def osi(self) -> dict[str, np.ndarray]:
        return {n: self.gratings[n]["osi"] for n in self.layers}

    @property
    def preferred_orientation(self) -> dict[str, np.ndarray]:
        return {n: self.gratings[n]["preferred_orientation"] for n in self.layers}

    def save(self, path: Path) -> None:
        """Arrays to ``path`` (.npz), the rest to ``path`` with .meta.json (both atomic)."""
        arrays: dict[str, np.ndarray] = {}
        for name in self.layers:
            for key, value in self.gratings[name].items():
                arrays[f"{name}/gratings/{key}"] = value
            for key, value in self.erf.get(name, {}).items():
                arrays[f"{name}/erf/{key}"] = value
        if self.dissection is not None:
            arrays |= self.dissection.arrays()
        if self.filters is not None:
            arrays["filters/gabor_r2"] = self.filters.gabor_r2
            arrays["filters/colour_fraction"] = self.filters.colour_fraction
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        meta: dict[str, Any] = {
            "role": self.role,
            "seed": self.seed,
            "layers": self.layers,
            "notes": self.notes,
            "layer_info": self.layer_info,
            "erf_layers": [n for n in self.layers if self.erf.get(n)],
            "filters": None
            if self.filters is None
            else {
                "layer": self.filters.layer,
                "kernel": self.filters.kernel,
                "in_channels": self.filters.in_channels,
                "note": self.filters.note,
            },
            "dissection": None,
        }
        if self.dissection is not None:
            meta["dissection"] = self.dissection.meta()
        atomic_write_text(path.with_suffix(".meta.json"), json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path) -> NetworkProbes:
        path = Path(path)
        meta = json.loads(path.with_suffix(".meta.json").read_text())
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        layers = meta["layers"]
        dis = None
        if meta["dissection"] is not None:
            dis = Dissection.from_arrays(arrays, meta["dissection"], layers)
        filters = None
        if meta["filters"] is not None:
            f = meta["filters"]
            filters = FilterAnalysis(
                f["layer"],
                f["kernel"],
                f["in_channels"],
                arrays["filters/gabor_r2"],
                arrays["filters/colour_fraction"],
                f["note"],
            )

        def group(name: str, kind: str) -> dict[str, np.ndarray]:
            prefix = f"{name}/{kind}/"
            return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}

        return cls(
            role=meta["role"],
            seed=meta["seed"],
            layers=layers,
            gratings={n: group(n, "gratings") for n in layers},
            erf={n: group(n, "erf") for n in meta["erf_layers"]},
            dissection=dis,
            filters=filters,
            notes=meta["notes"],
            layer_info=meta["layer_info"],
        )


def edge_instruments(
    net: Model,
    layers: Sequence[str],
    *,
    size: int,
    reference: torch.Tensor,
    progress: bool = False,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """The grating probe and the ERF Gabor fits of ``layers``: per-layer arrays of each, and
    per-layer JSON facts (clipping by contrast, RF centre, why the ERF skipped a layer)."""
    grat = edge_probe(
        net,
        list(layers),
        reference=reference,
        reference_images=len(reference),
        size=size,
        progress=progress,
    )
    erf = erf_probe(net, list(layers), size=size, progress=progress)
    g_arrays, e_arrays, info = {}, {}, {}
    for name in layers:
        if name not in grat:
            continue
        r = grat[name]
        g_arrays[name] = {k: np.asarray(getattr(r, k)) for k in _GRATING_KEYS}
        rows = np.arange(r.units)
        f_idx = np.searchsorted(np.asarray(r.frequencies), r.preferred_frequency)
        g_arrays[name]["tuning"] = r.tuning[rows, :, f_idx].astype(np.float32)
        info[name] = {
            "clipped_by_contrast": [round(float(v), 4) for v in r.clipped],
            "contrasts": r.contrasts,
            "rf_centre": r.info["rf_centre"],
            "rf_size": r.info["rf_size"],
            "orientations": r.orientations,
        }
        er = erf.get(name)
        if er is None or er.skipped is not None:
            info[name]["erf_skipped"] = (
                er.skipped if er is not None else "no 4-D output for the ERF instrument"
            )
            continue
        e_arrays[name] = {k: np.asarray(getattr(er, k)) for k in _ERF_KEYS}
        e_arrays[name]["edge"] = erf_edge_units(er, absolute=True)  # + control, later
    return g_arrays, e_arrays, info


def edge_control_thresholds(
    model: Model | nn.Module,
    layers: str | Sequence[str],
    *,
    data: ConceptData | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3),
    quantile: float = HIERARCHY.control_quantile,
    reference_images: int = 64,
    bn_images: int = 128,
    progress: bool = False,
) -> dict[str, dict[str, float]]:
    """The random-init control thresholds of the edge instruments with one (``{"gratings":
    {layer: OSI}, "erf": {layer: orientedness}}``): random-init copies of ``model``'s
    architecture (``seeds``; BatchNorm statistics re-estimated on ``bn_images`` images of
    ``data``, default PartsWorld at the model's input size) are probed like the model, and
    each threshold is the ``quantile`` of the gated control units' values (the hierarchy
    check's rule, :func:`control_thresholds`). Pass them to
    :func:`~interp.probes.edges.edge_units` (``osi_threshold``) and
    :func:`~interp.probes.erf.erf_edge_units` (``threshold``). ``nan`` where no control unit
    passed the gate."""
    model = as_model(model)
    names = [layers] if isinstance(layers, str) else list(layers)
    size = int(model.input_size[0])
    if data is None:
        data = PartsWorldConcepts(n=bn_images, size=size)
    crops = PhotoCrops(n=reference_images, size=size, seed=0)
    reference = torch.stack([crops[i][0] for i in range(reference_images)])
    controls = []
    for seed in seeds:
        net, notes = random_control(model, int(seed), data, bn_images=bn_images, upto=names[-1])
        grat, erf, info = edge_instruments(
            net, names, size=size, reference=reference, progress=progress
        )
        probes = NetworkProbes("control-edges", int(seed), list(grat), grat, erf, None, None)
        controls.append(probes)
    found = control_thresholds(controls, names, quantile)
    return {
        inst: {n: float(found.get(inst, {}).get(n, {}).get("value", float("nan"))) for n in names}
        for inst in found
    }


@keeps_freed_memory
def probe_network(
    net: Model,
    data: ConceptData,
    layers: Sequence[str],
    *,
    role: str,
    seed: int | None,
    notes: list[str],
    dissect_kwargs: dict[str, Any] | None,
    reference: torch.Tensor,
    progress: bool,
) -> NetworkProbes:
    """Edge instruments, dissection (with selectivity) and filter analysis of one network;
    ``dissect_kwargs=None`` measures the edge instruments only (an edge-only control)."""
    dis = None
    kept = list(layers)
    if dissect_kwargs is not None:
        dis = dissect(net, data, layers, progress=progress, **dissect_kwargs)
        kept = [name for name in layers if name in dis]
    gratings, erf, info = edge_instruments(
        net, kept, size=data.image_size, reference=reference, progress=progress
    )
    kept = [n for n in kept if n in gratings]
    filters: FilterAnalysis | None = None
    if dissect_kwargs is not None:  # an edge-only control needs no first-conv analysis
        try:
            filters = analyse_filters(net)
        except ValueError:
            filters = None
    return NetworkProbes(
        role=role,
        seed=seed,
        layers=kept,
        gratings=gratings,
        erf=erf,
        dissection=dis,
        filters=filters,
        notes=notes,
        layer_info=info,
    )


# ---------------------------------------------------------------------- the edge instruments
@dataclass(frozen=True)
class EdgeInstrument:
    """One edge instrument of the hierarchy check (the probe protocol): the hierarchy, its
    control thresholds, profile and verdict loop over :data:`EDGE_INSTRUMENTS`.

    Attributes:
        name: the key of its statuses, thresholds and verdict (``gratings``...).
        units: ``units(probes, layer, threshold)`` -> bool per unit (edge units given the
            control ``threshold``, ``nan`` when there is none), or ``None`` where the
            instrument did not measure the layer.
        gated: ``gated(probes, layer)`` -> (the control values that set its threshold, units
            behind them), or ``None``; ``None`` itself for an instrument without a threshold.
        needs: a concept category the data must have (``None``: any data).
        dissected_controls_only: its controls are the dissected ones only (not the edge-only
            seeds pooled for the thresholds).
    """

    name: str
    units: Callable[[NetworkProbes, str, float], np.ndarray | None]
    gated: Callable[[NetworkProbes, str], tuple[np.ndarray, int] | None] | None = None
    needs: str | None = None
    dissected_controls_only: bool = False


def _grating_units(probes: NetworkProbes, layer: str, threshold: float) -> np.ndarray:
    g = probes.gratings[layer]  # driven, OSI above the absolute cut and the threshold
    return edge_mask(g["osi"], g["drive_ratio"], osi_threshold=threshold)


def _grating_gated(probes: NetworkProbes, layer: str) -> tuple[np.ndarray, int] | None:
    if layer not in probes.gratings:
        return None
    g = probes.gratings[layer]
    return g["osi"][driven(g["drive_ratio"])], len(g["osi"])


def _erf_units(probes: NetworkProbes, layer: str, threshold: float) -> np.ndarray | None:
    e = probes.erf.get(layer)  # a good oriented Gabor fit, orientedness above the threshold
    if not e:
        return None
    edge = e["edge"].astype(bool).copy()
    if np.isfinite(threshold):
        edge &= e["orientedness"] > threshold
    return edge


def _erf_gated(probes: NetworkProbes, layer: str) -> tuple[np.ndarray, int] | None:
    e = probes.erf.get(layer)
    if not e:
        return None
    return e["orientedness"][e["r2"] >= R2_MIN], len(e["r2"])


def _dissection_units(probes: NetworkProbes, layer: str, threshold: float) -> np.ndarray | None:
    if probes.dissection is None or layer not in probes.dissection:
        return None
    d = probes.dissection[layer]  # an edge-concept detector
    return d.unit_category == d.categories.index("edge") if "edge" in d.categories else None


#: the edge instruments, each validated on planted units (module docstring)
EDGE_INSTRUMENTS = (
    EdgeInstrument("gratings", _grating_units, _grating_gated),
    EdgeInstrument("erf", _erf_units, _erf_gated),
    EdgeInstrument("dissection", _dissection_units, needs="edge", dissected_controls_only=True),
)


# ---------------------------------------------------------------------------- the profile
def _edge_statuses(
    probes: NetworkProbes, thresholds: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, dict[str, np.ndarray | None]]:
    """Per edge instrument and layer, bool per unit (``None`` where it measured nothing)."""
    out: dict[str, dict[str, np.ndarray | None]] = {}
    for inst in EDGE_INSTRUMENTS:
        cut = thresholds.get(inst.name, {})
        out[inst.name] = {
            name: inst.units(probes, name, cut.get(name, {}).get("value", float("nan")))
            for name in probes.layers
        }
    return out


def _category_units(probes: NetworkProbes, category: str) -> dict[str, np.ndarray | None]:
    out: dict[str, np.ndarray | None] = {}
    for name in probes.layers:
        d = probes.dissection[name] if probes.dissection is not None else None
        if d is None or category not in d.categories:
            out[name] = None
            continue
        out[name] = d.unit_category == d.categories.index(category)
    return out


def _wilson(k: int, n: int, z: float = 1.645) -> list[float]:
    """90% Wilson interval of a fraction ``k / n``."""
    if n == 0:
        return [0.0, 1.0]
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4)]


def control_thresholds(
    controls: Sequence[NetworkProbes], layers: Sequence[str], quantile: float
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per instrument with a threshold and per layer, the control threshold from every pooled
    control unit that passes the instrument's gate (:attr:`EdgeInstrument.gated`: OSI of
    driven units for the gratings, orientedness of good Gabor fits for the ERF); with its 90%
    bootstrap interval and the number of units behind it."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for inst in EDGE_INSTRUMENTS:
        if inst.gated is None:
            continue
        out[inst.name] = {}
        for name in layers:
            found = [g for g in (inst.gated(c, name) for c in controls) if g is not None]
            n = sum(units for _, units in found)
            if not n:
                continue
            vals = [v for v, _ in found]
            t = control_threshold(np.concatenate(vals) if vals else np.zeros(0), quantile)
            t["control_units"] = n
            out[inst.name][name] = t
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


@dataclass
class Hierarchy:
    """The profile of a model and its control(s), the verdict, and how they were measured.

    ``controls`` are the dissected controls; ``edge_controls`` the extra edge-only seeds
    pooled with them for the edge instruments' thresholds and control fractions.
    """

    model_name: str
    data_name: str
    layers: list[str]
    categories: list[str]
    model: NetworkProbes
    controls: list[NetworkProbes]
    edge_controls: list[NetworkProbes]
    thresholds: dict[str, dict[str, dict[str, Any]]]
    verdict: Verdict
    settings: dict[str, Any]

    JSON = "hierarchy.json"

    @property
    def edge_thresholds(self) -> dict[str, float]:
        """The OSI an edge unit must exceed by the gratings, per layer (absolute cut or the
        control's threshold, whichever is higher)."""
        return {
            n: float(np.nanmax([OSI_MIN, self.thresholds["gratings"][n]["value"]]))
            for n in self.layers
        }

    def statuses(self, probes: NetworkProbes) -> dict[str, dict[str, np.ndarray | None]]:
        return _edge_statuses(probes, self.thresholds)

    def edge_units(
        self, layer: str, statuses: dict[str, dict[str, np.ndarray | None]] | None = None
    ) -> dict[str, list[int]]:
        """The model's edge units of ``layer`` by each edge instrument (``statuses``: the
        model's :meth:`statuses`, when the caller has them already)."""
        st = self.statuses(self.model) if statuses is None else statuses
        return {
            k: [] if v.get(layer) is None else np.flatnonzero(v[layer]).tolist()
            for k, v in st.items()
        }

    def profile(self) -> list[dict[str, Any]]:
        """Per layer: every instrument's fraction with its interval (model; controls pooled),
        drive and clipping statistics, control thresholds, counts and summaries."""
        every = [*self.controls, *self.edge_controls]
        ms = self.statuses(self.model)
        cs_all = [self.statuses(c) for c in every]
        rows = []
        for depth, name in enumerate(self.layers):
            d = self.model.dissection[name]
            fr: dict[str, float] = {}
            cfr: dict[str, float] = {}
            intervals: dict[str, Any] = {}
            for inst in (i.name for i in EDGE_INSTRUMENTS if i.gated is not None):
                m = ms[inst].get(name)
                if m is None:
                    continue
                c = [s[inst][name] for s in cs_all if s[inst].get(name) is not None]
                pooled = np.concatenate(c) if c else np.zeros(0, bool)
                fr[f"edge_{inst}"] = round(float(m.mean()), 4)
                cfr[f"edge_{inst}"] = round(float(pooled.mean()), 4) if len(pooled) else 0.0
                intervals[f"edge_{inst}"] = {
                    "model": _wilson(int(m.sum()), len(m)),
                    "control": _wilson(int(pooled.sum()), len(pooled)),
                    "control_units": int(len(pooled)),
                    "control_seeds": len(c),
                }
            for i, cat in enumerate(self.categories):
                hits = d.unit_category == i
                fr[cat] = round(float(hits.mean()), 4)
                ch = [c.dissection[name].unit_category == i for c in self.controls]
                pooled = np.concatenate(ch)
                cfr[cat] = round(float(pooled.mean()), 4)
                intervals[cat] = {
                    "model": _wilson(int(hits.sum()), len(hits)),
                    "control": _wilson(int(pooled.sum()), len(pooled)),
                }
            g = self.model.gratings[name]
            cg = [c.gratings[name] for c in every if name in c.gratings]
            ratio = g["drive_ratio"][np.isfinite(g["drive_ratio"])]
            cratio = np.concatenate([x["drive_ratio"] for x in cg])
            cratio = cratio[np.isfinite(cratio)]
            si = d.selectivity
            csi = [c.dissection[name].selectivity for c in self.controls]
            csi = (
                np.concatenate([x for x in csi if x is not None])
                if any(x is not None for x in csi)
                else np.zeros(0)
            )
            info = self.model.layer_info.get(name, {})
            rows.append(
                {
                    "layer": name,
                    "depth": depth,
                    "units": d.units,
                    "fractions": fr,
                    "control_fractions": cfr,
                    "intervals_90": intervals,
                    "counts": {
                        **{
                            k: int(np.sum(v[name]))
                            for k, v in ms.items()
                            if v.get(name) is not None
                        },
                        **d.counts(),
                    },
                    "gratings": {
                        "osi": _quantiles(g["osi"]),
                        "control_osi": _quantiles(np.concatenate([x["osi"] for x in cg])),
                        "drive_ratio": _quantiles(ratio) if len(ratio) else None,
                        "control_drive_ratio": _quantiles(cratio) if len(cratio) else None,
                        "driven_fraction": round(
                            float((ratio >= DRIVE_MIN).sum() / len(g["osi"])), 4
                        ),
                        "control_driven_fraction": round(
                            float(
                                (cratio >= DRIVE_MIN).sum() / max(1, sum(len(x["osi"]) for x in cg))
                            ),
                            4,
                        ),
                        "simple_fraction": round(float(g["simple"].mean()), 4),
                        "contrast_read_median": float(np.median(g["contrast"])),
                        "clipped_by_contrast": info.get("clipped_by_contrast"),
                        "contrasts": info.get("contrasts"),
                        "clipped_at_contrast_read_median": round(
                            float(np.median(g["unit_clipped"])), 4
                        ),
                        "rf_centre": info.get("rf_centre"),
                        "control_threshold": self.thresholds["gratings"].get(name),
                    },
                    "erf": None
                    if name not in self.model.erf
                    else {
                        "r2": _quantiles(self.model.erf[name]["r2"]),
                        "orientedness": _quantiles(self.model.erf[name]["orientedness"]),
                        "good_fits": round(float((self.model.erf[name]["r2"] >= R2_MIN).mean()), 4),
                        "control_threshold": self.thresholds.get("erf", {}).get(name),
                    },
                    "erf_skipped": info.get("erf_skipped"),
                    "edge_threshold_osi": round(self.edge_thresholds[name], 4),
                    "edge_units": self.edge_units(name, ms),
                    "selectivity": None if si is None else _quantiles(si),
                    "control_selectivity": None if not len(csi) else _quantiles(csi),
                    "top_detectors": d.summary()["top_units"],
                }
            )
        return rows

    def _kept(self, layer: str) -> int:
        d = self.model.dissection[layer]
        return int(d.info.get("values_kept_per_unit", 0))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``hierarchy.json``: settings, rules, control, verdict and the
        per-layer profile."""
        s = self.settings
        seeds = [c.seed for c in self.controls]
        extra = [c.seed for c in self.edge_controls]
        return {
            "model": self.model_name,
            "data": self.data_name,
            "settings": s,
            "rules": {
                "edge_unit_gratings": (
                    f"driven (drive ratio >= {DRIVE_MIN}: the best evoked grating response over "
                    "the unit's evoked top-0.5% response on natural photo crops) and OSI of the "
                    f"evoked tuning >= {OSI_MIN} and above the {s['control_quantile']:.0%} "
                    "quantile of the pooled random-init controls' driven units (at least "
                    f"{s['min_control_units']} control units per layer)"
                ),
                "edge_unit_erf": (
                    f"Gabor fit of the effective receptive field with R^2 >= {R2_MIN} and "
                    f"orientedness >= {ORIENTED_MIN}, and orientedness above the "
                    f"{s['control_quantile']:.0%} quantile of the pooled controls' good fits; "
                    "layers with receptive fields under 5 px are not measured"
                ),
                "edge_unit_dissection": "an edge-concept detector of Network Dissection",
                "detector": (
                    f"best concept's IoU > {s['iou_threshold']} with the unit's region cut at "
                    f"its top {s['quantile']:.1%} activation quantile (Network Dissection)"
                ),
                "selectivity": "class selectivity index (Morcos et al. 2018) of the rectified, "
                "spatially averaged activation",
            },
            "control": {
                "seeds": seeds,
                "edge_only_seeds": extra,
                "notes": sorted(
                    {
                        re.sub(r",? seed \d+", "", n)
                        for c in [*self.controls, *self.edge_controls]
                        for n in c.notes
                    }
                ),
            },
            "memory": {
                "threshold_buffers_mib": round(
                    sum(self.model.dissection[n].units * self._kept(n) * 4 for n in self.layers)
                    / 2**20,
                    2,
                ),
                "bound": "units x 2k float32 values per layer for the thresholds (k = quantile "
                "x images x positions, at most 2 x 1.2 x 100,000 with subsampling), units x "
                "concepts counters, and 2**22 upsampled values at a time",
            },
            "skipped_layers": self.model.dissection.skipped,
            "verdict": self.verdict.to_dict(),
            "networks": [_network_file(c) for c in self._networks()],
            "first_conv": None
            if self.model.filters is None
            else {
                "model": self.model.filters.summary(),
                "control": [c.filters.summary() for c in self.controls if c.filters],
            },
            "layers": self.profile(),
        }

    to_json = to_dict  # the name before results had one shape

    def figures(
        self, model: Model | None = None, data: ConceptData | None = None
    ) -> dict[str, plt.Figure]:
        """The figures (matplotlib): ``profile`` and ``osi``; with the model, ``tuning``
        (grating tuning next to feature visualizations); with the model and the concept
        data, ``detectors`` (top images, masks and regions) and ``first_conv``."""
        doc = self.to_dict()
        every = [*self.controls, *self.edge_controls]
        pooled = {
            n: np.concatenate([c.gratings[n]["osi"] for c in every if n in c.gratings])
            for n in self.layers
        }
        figs = {
            "profile": hfigs.plot_profile(doc),
            "osi": hfigs.plot_osi(
                self.layers, self.model.osi, [pooled], self.edge_thresholds, self.model_name
            ),
        }
        if model is not None:
            figs["tuning"] = hfigs.plot_tuning(tuning_examples(self, model), self.model_name)
        if model is not None and data is not None:
            examples = {
                c: detector_examples(model, data, self.model.dissection, c) for c in self.categories
            }
            figs["detectors"] = hfigs.plot_detectors(examples, self.model_name)
            _, conv = _first_conv_weights(model)
            if conv is not None and self.model.filters is not None:
                figs["first_conv"] = hfigs.plot_filters(conv, self.model.filters, self.model_name)
        return figs

    def _networks(self) -> list[NetworkProbes]:
        return [self.model, *self.controls, *self.edge_controls]

    def save(
        self, folder: str | Path, *, model: Model | None = None, data: ConceptData | None = None
    ) -> dict[str, Path]:
        """Write ``hierarchy.json``, every network's probes (``networks/``, so that
        :meth:`load` restores the whole result) and the figures (PNG, see :meth:`figures`);
        returns the paths written."""
        folder = make_dir(folder)
        nets = make_dir(folder / "networks")
        for probes in self._networks():
            probes.save(nets / _network_file(probes))
        doc = json.dumps(self.to_dict(), indent=1)
        paths = {"json": atomic_write_text(folder / self.JSON, doc)}
        for name, fig in self.figures(model, data).items():
            paths[name] = save_figure(fig, folder / f"{name}.png")
        return paths

    @classmethod
    def load(cls, folder: str | Path) -> Hierarchy:
        """The result saved by :meth:`save` (or by ``interp hierarchy --out``)."""
        folder = Path(folder)
        doc = json.loads((folder / cls.JSON).read_text())
        nets = [NetworkProbes.load(folder / "networks" / f) for f in doc["networks"]]
        model = nets[0]
        controls = [n for n in nets[1:] if n.role == "control"]
        edge_controls = [n for n in nets[1:] if n.role == "control-edges"]
        model.layers = [row["layer"] for row in doc["layers"]]
        quantile = doc["settings"].get("control_quantile", HIERARCHY.control_quantile)
        return cls(
            model_name=doc["model"],
            data_name=doc["data"],
            layers=list(model.layers),
            categories=list(model.dissection[model.layers[0]].categories),
            model=model,
            controls=controls,
            edge_controls=edge_controls,
            thresholds=control_thresholds([*controls, *edge_controls], model.layers, quantile),
            verdict=Verdict.from_dict(doc["verdict"]),
            settings=doc["settings"],
        )


HierarchyResult = Hierarchy  # the name before results had one shape


def _network_file(probes: NetworkProbes) -> str:
    return f"{probes.role}{'' if probes.seed is None else f'-seed{probes.seed}'}.npz"


def _quantiles(x: np.ndarray) -> dict[str, Any]:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    q = np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9]) if len(x) else [np.nan] * 5
    mean = float(x.mean()) if len(x) else float("nan")
    return {"mean": round(mean, 4), "q10_25_50_75_90": np.round(q, 4).tolist()}


#: how a stage hook computes one network's probes: ``compute(checkpoint)`` with the folder
#: where the dissection may keep its resumable checkpoint (``None``: none)
Compute = Callable[[Stream | None], "NetworkProbes"]
#: the pipeline's cache around each network: ``stage(role, seed, layers, compute)``
StageHook = Callable[[str, int | None, list[str], Compute], "NetworkProbes"]


def _no_stage(role: str, seed: int | None, layers: list[str], compute: Compute) -> NetworkProbes:
    return compute(None)


def measure_hierarchy(
    model: Model,
    data: ConceptData,
    layers: Sequence[str],
    *,
    control_seeds: Sequence[int] = HIERARCHY.control_seeds,
    min_control_units: int = HIERARCHY.min_control_units,
    max_control_seeds: int = HIERARCHY.max_control_seeds,
    control_quantile: float = HIERARCHY.control_quantile,
    reference_images: int = HIERARCHY.reference_images,
    quantile: float = HIERARCHY.quantile,
    iou_threshold: float = HIERARCHY.iou_threshold,
    bootstrap: int = HIERARCHY.bootstrap,
    batch_size: int = 32,
    bn_images: int = HIERARCHY.bn_images,
    precision: str = HIERARCHY.precision,
    settings: dict[str, Any] | None = None,
    stage: StageHook | None = None,
    progress: bool = False,
) -> Hierarchy:
    """The hierarchy of ``model`` on ``data`` against random-init controls (the module
    docstring): the instrument behind :func:`interp.hierarchy`, which adds argument checks,
    loading, the stage cache (``stage``) and writing.

    ``stage(role, seed, layers, compute)`` wraps the probing of each network (``role``:
    ``model``, ``control`` or ``control-edges``); the default computes every one.
    """
    stage = stage or _no_stage
    names = list(layers)
    kwargs = {"quantile": quantile, "iou_threshold": iou_threshold, "batch_size": batch_size}
    kwargs["precision"] = precision
    crops = PhotoCrops(n=reference_images, size=data.image_size, seed=0)
    reference = torch.stack([crops[i][0] for i in range(reference_images)])

    def run(role: str, seed: int | None, upto: list[str] | None = None) -> NetworkProbes:
        probe_layers = names if upto is None else upto

        def compute(stream: Stream | None) -> NetworkProbes:
            if role == "model":
                net, notes = model, ["the model as loaded"]
            else:
                net, notes = random_control(
                    model,
                    int(seed or 0),
                    data,
                    # an edge-only control is probed in its first layers, whose BatchNorm
                    # statistics settle on fewer images
                    bn_images=bn_images if upto is None else min(bn_images, 128),
                    batch_size=batch_size,
                    upto=None if upto is None else upto[-1],
                )
            dissect_kwargs = None if role == "control-edges" else dict(kwargs)
            if dissect_kwargs is not None and stream is not None:
                # sharded, and an interrupted network resumes mid-dissection (the stage's)
                dissect_kwargs["stream"] = stream
            return probe_network(
                net,
                data,
                probe_layers,
                role=role,
                seed=seed,
                notes=notes,
                dissect_kwargs=dissect_kwargs,
                reference=reference,
                progress=progress,
            )

        return stage(role, seed, probe_layers, compute)

    model_probes = run("model", None)
    controls = [run("control", int(s)) for s in control_seeds]
    kept = [n for n in model_probes.layers if all(n in c.layers for c in controls)]
    model_probes.layers = kept
    # pool further control seeds, each probed only in the layers still short of units
    units = {n: len(model_probes.gratings[n]["osi"]) for n in kept}
    pooled = {n: units[n] * len(controls) for n in kept}
    edge_controls: list[NetworkProbes] = []
    seed = max(int(s) for s in control_seeds) + 1
    while len(controls) + len(edge_controls) < max_control_seeds:
        short = [n for n in kept if pooled[n] < min_control_units]
        if not short:
            break
        extra = run("control-edges", seed, short)
        edge_controls.append(extra)
        for n in extra.layers:
            pooled[n] += units[n]
        seed += 1
    return compare(
        model_probes,
        controls,
        edge_controls,
        model_name=model.name,
        data_name=data.name,
        control_quantile=control_quantile,
        bootstrap=bootstrap,
        settings=settings or {},
    )


def compare(
    model_probes: NetworkProbes,
    controls: Sequence[NetworkProbes],
    edge_controls: Sequence[NetworkProbes] = (),
    *,
    model_name: str,
    data_name: str,
    control_quantile: float = HIERARCHY.control_quantile,
    bootstrap: int = HIERARCHY.bootstrap,
    settings: dict[str, Any] | None = None,
) -> Hierarchy:
    """The model's probes against its controls': control thresholds, profile and verdict."""
    controls, edge_controls = list(controls), list(edge_controls)
    kept = list(model_probes.layers)
    thresholds = control_thresholds([*controls, *edge_controls], kept, control_quantile)
    categories = model_probes.dissection[kept[0]].categories
    result = Hierarchy(
        model_name=model_name,
        data_name=data_name,
        layers=kept,
        categories=list(categories),
        model=model_probes,
        controls=controls,
        edge_controls=edge_controls,
        thresholds=thresholds,
        verdict=Verdict("not measured"),
        settings=dict(settings or {}),
    )
    ms = result.statuses(model_probes)
    cs = [result.statuses(c) for c in [*controls, *edge_controls]]
    dis_cs = cs[: len(controls)]
    edges = {
        inst.name: (
            ms[inst.name],
            [c[inst.name] for c in (dis_cs if inst.dissected_controls_only else cs)],
        )
        for inst in EDGE_INSTRUMENTS
        if inst.needs is None or inst.needs in categories
    }
    if "part" not in categories:
        result.verdict = Verdict("not measured", reason="the data have no part category")
    else:
        result.verdict = Verdict.from_dict(
            centroid_verdict(
                edges,
                (
                    _category_units(model_probes, "part"),
                    [_category_units(c, "part") for c in controls],
                ),
                kept,
                objects=None
                if "object" not in categories
                else (
                    _category_units(model_probes, "object"),
                    [_category_units(c, "object") for c in controls],
                ),
                bootstrap=bootstrap,
            )
        )
    return result


def detector_examples(
    model: Model,
    data: ConceptData,
    dissection: Dissection,
    category: str,
    *,
    units: int = 2,
    images: int = 3,
) -> list[dict[str, Any]]:
    """The ``units`` best detectors of ``category`` (all layers), each with its top images,
    the concept's mask and the unit's thresholded region (for figures)."""
    cands = []
    for name, d in dissection.items():
        if category not in d.categories:
            continue
        ci = d.categories.index(category)
        for u in np.flatnonzero(d.unit_category == ci):
            cands.append((float(d.best_iou[u]), name, int(u)))
    cands.sort(reverse=True)
    out = []
    for iou, name, u in cands[:units]:
        d = dissection[name]
        concept = int(d.best_concept[u])
        idx = [int(i) for i in d.top_images[u][:images]]
        items = [data.item(i) for i in idx]
        x = model.normalize(torch.stack([it.image for it in items])).to(model.device)
        act = capture(model, x, [name])[name].float()[:, u : u + 1]
        up = upsample(act, data.mask_size)[:, 0].cpu()
        region = d.region(up, u).numpy()
        masks = []
        for it in items:
            hit = (it.concepts == concept).nonzero()
            masks.append(it.masks[int(hit[0, 0])].numpy() if len(hit) else np.zeros_like(region[0]))
        out.append(
            {
                "layer": name,
                "unit": u,
                "concept": d.concepts[concept],
                "iou": iou,
                "images": [it.image.permute(1, 2, 0).numpy() for it in items],
                "masks": masks,
                "regions": list(region),
            }
        )
    return out


def tuning_examples(
    result: HierarchyResult, model: Model, *, layers: int = 3, steps: int = 96
) -> list[dict[str, Any]]:
    """Example units for the tuning figure: in an early, a middle and a late layer, the
    grating edge unit with the highest OSI and the highest-OSI unit that is not one (often
    an undriven unit whose tuning curve is sharp but tiny); each with a feature
    visualization (``steps`` steps at 64 px)."""
    picks = sorted({0, len(result.layers) // 2, len(result.layers) - 1})[:layers]
    statuses = result.statuses(result.model)
    out = []
    for i in picks:
        name = result.layers[i]
        g = result.model.gratings[name]
        edge = statuses["gratings"][name]
        order = np.argsort(-g["osi"], kind="stable")
        chosen = [u for u in order if edge[u]][:1] + [u for u in order if not edge[u]][:1]
        if not chosen:
            continue
        images = render_channels(
            model, name, [int(u) for u in chosen], steps=steps, size=64, progress=False
        ).images
        for u, img in zip(chosen, images, strict=True):
            out.append(
                {
                    "layer": name,
                    "unit": int(u),
                    "image": img.permute(1, 2, 0).cpu().numpy(),
                    "orientations": result.model.layer_info[name]["orientations"],
                    "tuning": g["tuning"][u],
                    "osi": float(g["osi"][u]),
                    "drive_ratio": float(g["drive_ratio"][u]),
                    "contrast": float(g["contrast"][u]),
                    "status": {
                        k: bool(v[name][u]) for k, v in statuses.items() if v.get(name) is not None
                    },
                }
            )
    return out


def _first_conv_weights(model: Model) -> tuple[str | None, np.ndarray | None]:
    try:
        name, conv = first_conv(model)
    except ValueError:
        return None, None
    return name, conv.weight.detach().float().cpu().numpy()
