"""The hierarchy check: how edge-, colour-, part- and object-like each layer is, against a
random-initialization control, and whether "early edges, later parts" holds.

For the model and for one or more controls (the same architecture re-initialized with fixed
seeds; BatchNorm statistics of a control are re-estimated on the probe images, so that it is
not handicapped by statistics that belong to other weights), every layer's units are
measured with

* the **edge probe** (:mod:`interp.probes.edges`): OSI per unit. A unit is an *edge unit*
  when its OSI exceeds the ``osi_percentile`` (99th) percentile of the same layer's units in
  the control(s); so about 1% of control units pass by construction;
* **Network Dissection** (:mod:`interp.probes.dissect`): each unit's best concept; it is a
  colour / edge / part / object detector when that IoU passes ``iou_threshold``;
* **class selectivity** (Morcos et al. 2018);
* and, for the first convolution, Gabor fits and the colour/luminance split
  (:mod:`interp.probes.filters`).

**Verdict rule** ("early edges, later parts"): with ``E_l`` the edge-unit fraction and
``P_l`` the part-detector fraction of layer ``l`` (layers in execution order), the story
*holds* when ``argmax E`` comes before ``argmax P``, ``E`` at its peak exceeds the control's
``E`` at that layer and ``P`` at its peak exceeds the control's ``P`` there. Units of every
layer (model and control) are resampled with replacement ``bootstrap`` times; the verdict is
*holds* when it holds in at least 95% of the resamples, *does not hold* when in at most 5%,
*inconclusive* in between. A second clause, "objects peak at or after parts", is reported
the same way.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed as dist
from ..capture import capture, resolve_layers
from ..data.concepts import ConceptData, load_concepts
from ..device import default_batch
from ..models.base import Model
from ..models.registry import as_model, build_random, list_models, load_model
from ..utils import atomic_path, atomic_write_text, settings_digest
from .dissect import Dissection, LayerDissection, dissect, upsample
from .edges import edge_probe
from .filters import FilterAnalysis, analyse_filters

__all__ = [
    "HierarchyResult",
    "NetworkProbes",
    "default_hierarchy_layers",
    "hierarchy",
    "random_control",
    "verdict",
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
    """The first convolution's activation (or the conv itself), then the network's blocks."""
    from ..featvis.jobs import default_layers
    from ..inventory import layers as inventory

    model = as_model(model)
    blocks = default_layers(model)
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


def _reestimate_batchnorm(
    model: Model, data: ConceptData, images: int, batch_size: int, progress: bool
) -> int:
    """Recompute BatchNorm running statistics on the first ``images`` of ``data``; returns
    the number of images used (0 without BatchNorm)."""
    from ..models.base import reestimate_batchnorm

    n = min(images, len(data))

    def batches():  # noqa: ANN202
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            x = torch.stack([data.item(i, masks=False).image for i in range(start, stop)])
            yield model.normalize(x).to(model.device)

    return n if reestimate_batchnorm(model.module, batches()) else 0


def random_control(
    model: Model,
    seed: int = 0,
    data: ConceptData | None = None,
    *,
    bn_images: int = 512,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[Model, list[str]]:
    """The random-init control of ``model``: same architecture, fixed ``seed``.

    With ``data``, BatchNorm statistics are re-estimated on its first ``bn_images`` images.
    Returns the control (on the model's device, eval mode) and notes saying how it was made.
    """
    control, how = _rebuild(model, seed)
    control.module.to(model.device).eval()
    notes = [how]
    if data is not None:
        n = _reestimate_batchnorm(control, data, bn_images, batch_size, progress)
        if n:
            notes.append(f"BatchNorm statistics re-estimated on {n} probe images")
    return control, notes


# ----------------------------------------------------------------------- one network's probes
@dataclass
class NetworkProbes:
    """Everything measured on one network (the model or one control)."""

    role: str  # "model" or "control"
    seed: int | None
    layers: list[str]
    osi: dict[str, np.ndarray]
    preferred_orientation: dict[str, np.ndarray]
    dissection: Dissection
    filters: FilterAnalysis | None
    notes: list[str] = field(default_factory=list)

    def save(self, path: Path) -> None:
        """Arrays to ``path`` (.npz), the rest to ``path`` with .json (both atomic)."""
        arrays: dict[str, np.ndarray] = {}
        for name in self.layers:
            d = self.dissection[name]
            arrays[f"{name}/osi"] = self.osi[name]
            arrays[f"{name}/pref"] = self.preferred_orientation[name]
            arrays[f"{name}/thresholds"] = d.thresholds
            if d.inclusive is not None:
                arrays[f"{name}/inclusive"] = d.inclusive
            arrays[f"{name}/iou"] = d.iou
            arrays[f"{name}/top_images"] = d.top_images
            if d.class_means is not None:
                arrays[f"{name}/class_means"] = d.class_means
        if self.filters is not None:
            arrays["filters/gabor_r2"] = self.filters.gabor_r2
            arrays["filters/colour_fraction"] = self.filters.colour_fraction
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        first = self.dissection[self.layers[0]]
        meta = {
            "role": self.role,
            "seed": self.seed,
            "layers": self.layers,
            "notes": self.notes,
            "concepts": first.concepts,
            "categories": first.categories,
            "concept_category": first.concept_category.tolist(),
            "iou_threshold": first.iou_threshold,
            "quantile": first.quantile,
            "skipped": self.dissection.skipped,
            "data": self.dissection.data,
            "info": {name: self.dissection[name].info for name in self.layers},
            "filters": None
            if self.filters is None
            else {
                "layer": self.filters.layer,
                "kernel": self.filters.kernel,
                "in_channels": self.filters.in_channels,
                "note": self.filters.note,
            },
        }
        atomic_write_text(path.with_suffix(".json"), json.dumps(meta))

    @classmethod
    def load(cls, path: str | Path) -> NetworkProbes:
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        dis = Dissection(skipped=meta["skipped"], data=meta["data"])
        for name in meta["layers"]:
            dis[name] = LayerDissection(
                layer=name,
                concepts=meta["concepts"],
                categories=meta["categories"],
                concept_category=np.asarray(meta["concept_category"]),
                thresholds=arrays[f"{name}/thresholds"],
                iou=arrays[f"{name}/iou"],
                iou_threshold=meta["iou_threshold"],
                quantile=meta["quantile"],
                top_images=arrays[f"{name}/top_images"],
                class_means=arrays.get(f"{name}/class_means"),
                inclusive=arrays.get(f"{name}/inclusive"),
                info=dict(meta.get("info", {}).get(name, {})),
            )
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
        return cls(
            role=meta["role"],
            seed=meta["seed"],
            layers=meta["layers"],
            osi={n: arrays[f"{n}/osi"] for n in meta["layers"]},
            preferred_orientation={n: arrays[f"{n}/pref"] for n in meta["layers"]},
            dissection=dis,
            filters=filters,
            notes=meta["notes"],
        )


def probe_network(
    net: Model,
    data: ConceptData,
    layers: Sequence[str],
    *,
    role: str,
    seed: int | None,
    notes: list[str],
    dissect_kwargs: dict[str, Any],
    progress: bool,
) -> NetworkProbes:
    """Edge probe, dissection (with selectivity) and filter analysis of one network."""
    dis = dissect(net, data, layers, progress=progress, **dissect_kwargs)
    kept = [name for name in layers if name in dis]
    edges = edge_probe(net, kept, size=data.image_size)
    try:
        filters: FilterAnalysis | None = analyse_filters(net)
    except ValueError:
        filters = None
    return NetworkProbes(
        role=role,
        seed=seed,
        layers=kept,
        osi={n: edges[n].osi for n in kept},
        preferred_orientation={n: edges[n].preferred_orientation for n in kept},
        dissection=dis,
        filters=filters,
        notes=notes,
    )


# ---------------------------------------------------------------------------- the profile
def _unit_arrays(
    probes: NetworkProbes, thresholds: dict[str, float]
) -> dict[str, dict[str, np.ndarray]]:
    """Per layer: ``edge`` (bool per unit), ``category`` (int, -1: no detector), ``si``."""
    out = {}
    for name in probes.layers:
        d = probes.dissection[name]
        si = d.selectivity
        out[name] = {
            "edge": probes.osi[name] > thresholds[name],
            "category": d.unit_category,
            "si": si if si is not None else np.full(d.units, np.nan),
        }
    return out


def _fractions(units: dict[str, np.ndarray], categories: Sequence[str]) -> dict[str, float]:
    out = {"edge_units": float(units["edge"].mean())}
    for i, c in enumerate(categories):
        out[c] = float((units["category"] == i).mean())
    return out


def verdict(
    model_units: dict[str, dict[str, np.ndarray]],
    control_units: Sequence[dict[str, dict[str, np.ndarray]]],
    layers: Sequence[str],
    categories: Sequence[str],
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The verdict on "early edges, later parts" (rule in the module docstring)."""
    rng = np.random.default_rng(seed)
    part = categories.index("part") if "part" in categories else None
    obj = categories.index("object") if "object" in categories else None
    if part is None:
        return {"verdict": "not measured", "reason": "the data have no part category"}

    def feats(units: dict[str, dict[str, np.ndarray]], draws: bool) -> dict[str, np.ndarray]:
        """(R, L) fractions of edge units, part and object detectors; R=1 without draws."""
        cols: dict[str, list[np.ndarray]] = {"E": [], "P": [], "O": []}
        for name in layers:
            u = units[name]
            c = len(u["edge"])
            idx = rng.integers(0, c, size=(bootstrap, c)) if draws else np.arange(c)[None]
            cols["E"].append(u["edge"][idx].mean(axis=1))
            cols["P"].append((u["category"][idx] == part).mean(axis=1))
            if obj is not None:
                cols["O"].append((u["category"][idx] == obj).mean(axis=1))
        return {k: np.stack(v, axis=1) for k, v in cols.items() if v}

    def judge(m: dict[str, np.ndarray], cs: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        ctl = {k: np.mean([c[k] for c in cs], axis=0) for k in m}
        rows = np.arange(m["E"].shape[0])
        le, lp = m["E"].argmax(axis=1), m["P"].argmax(axis=1)
        holds = (
            (le < lp)
            & (m["E"][rows, le] > ctl["E"][rows, le])
            & (m["P"][rows, lp] > ctl["P"][rows, lp])
        )
        out = {"holds": holds, "edge_peak": le, "part_peak": lp}
        if "O" in m:
            lo = m["O"].argmax(axis=1)
            out["object_peak"] = lo
            out["objects_after_parts"] = (
                (lo >= lp) & (m["O"][rows, lo] > ctl["O"][rows, lo]) & (m["P"][rows, lp] > 0)
            )
        out["E"], out["P"] = m["E"][rows, le], m["P"][rows, lp]
        out["E_control"], out["P_control"] = ctl["E"][rows, le], ctl["P"][rows, lp]
        return out

    point = judge(feats(model_units, False), [feats(c, False) for c in control_units])
    boot = judge(feats(model_units, True), [feats(c, True) for c in control_units])

    def call(support: float) -> str:
        return (
            "holds" if support >= 0.95 else "does not hold" if support <= 0.05 else "inconclusive"
        )

    def peak_interval(key: str) -> list[str]:
        lo, hi = np.quantile(boot[key], [0.05, 0.95]).astype(int)
        return [layers[lo], layers[hi]]

    support = float(boot["holds"].mean())
    le, lp = int(point["edge_peak"][0]), int(point["part_peak"][0])
    e, p = float(point["E"][0]), float(point["P"][0])
    ec, pc = float(point["E_control"][0]), float(point["P_control"][0])
    text = (
        f"edge units peak at {layers[le]} ({e:.1%} of units; control {ec:.1%}), part "
        f"detectors peak at {layers[lp]} ({p:.1%}; control {pc:.1%}): "
        f"{call(support)} (holds in {support:.0%} of {bootstrap} bootstrap resamples of units)"
    )
    reasons = []
    if not le < lp:
        reasons.append("edge units do not peak before part detectors")
    if not e > ec:
        reasons.append("the edge-unit fraction at its peak does not exceed the control")
    if not p > pc:
        reasons.append("the part-detector fraction at its peak does not exceed the control")
    out: dict[str, Any] = {
        "claim": "early edges, later parts",
        "rule": (
            "holds when the layer with the largest edge-unit fraction comes before the layer "
            "with the largest part-detector fraction and both peak fractions exceed the "
            "random-init control at that layer; bootstrap over units (model and control "
            "resampled per layer): holds if >= 95% of resamples satisfy it, does not hold if "
            "<= 5%, inconclusive otherwise"
        ),
        "verdict": call(support),
        "point_estimate_holds": bool(point["holds"][0]),
        "bootstrap_support": round(support, 4),
        "bootstrap_resamples": bootstrap,
        "edge_peak": layers[le],
        "edge_peak_90": peak_interval("edge_peak"),
        "edge_fraction_at_peak": round(e, 4),
        "edge_fraction_at_peak_90": np.quantile(boot["E"], [0.05, 0.95]).round(4).tolist(),
        "edge_fraction_control": round(ec, 4),
        "part_peak": layers[lp],
        "part_peak_90": peak_interval("part_peak"),
        "part_fraction_at_peak": round(p, 4),
        "part_fraction_at_peak_90": np.quantile(boot["P"], [0.05, 0.95]).round(4).tolist(),
        "part_fraction_control": round(pc, 4),
        "failed_conditions": reasons,
        "text": text,
    }
    if "objects_after_parts" in point:
        s2 = float(boot["objects_after_parts"].mean())
        lo = int(point["object_peak"][0])
        out["objects_after_parts"] = {
            "rule": "object detectors peak at or after the part peak and exceed the control there",
            "verdict": call(s2),
            "bootstrap_support": round(s2, 4),
            "object_peak": layers[lo],
        }
    return out


@dataclass
class HierarchyResult:
    """The profile of a model and its control(s), the verdict, and how they were measured."""

    model_name: str
    data_name: str
    layers: list[str]
    categories: list[str]
    model: NetworkProbes
    controls: list[NetworkProbes]
    edge_thresholds: dict[str, float]
    verdict: dict[str, Any]
    settings: dict[str, Any]

    def units(self, probes: NetworkProbes) -> dict[str, dict[str, np.ndarray]]:
        return _unit_arrays(probes, self.edge_thresholds)

    def profile(self) -> list[dict[str, Any]]:
        """Per layer: fractions (model, control mean), counts, OSI and selectivity summaries."""
        mu = self.units(self.model)
        cus = [self.units(c) for c in self.controls]
        rows = []
        for depth, name in enumerate(self.layers):
            d = self.model.dissection[name]
            frac = _fractions(mu[name], self.categories)
            cfr = [_fractions(cu[name], self.categories) for cu in cus]
            osi = self.model.osi[name]
            cosi = np.concatenate([c.osi[name] for c in self.controls])
            si, csi = mu[name]["si"], np.concatenate([cu[name]["si"] for cu in cus])
            rows.append(
                {
                    "layer": name,
                    "depth": depth,
                    "units": d.units,
                    "fractions": {k: round(v, 4) for k, v in frac.items()},
                    "control_fractions": {
                        k: round(float(np.mean([c[k] for c in cfr])), 4) for k in frac
                    },
                    "counts": {"edge_units": int(mu[name]["edge"].sum()), **d.counts()},
                    "control_counts": [
                        {"edge_units": int(cu[name]["edge"].sum()), **c.dissection[name].counts()}
                        for cu, c in zip(cus, self.controls, strict=True)
                    ],
                    "osi": _quantiles(osi),
                    "control_osi": _quantiles(cosi),
                    "edge_threshold_osi": round(self.edge_thresholds[name], 4),
                    "selectivity": None if np.isnan(si).all() else _quantiles(si),
                    "control_selectivity": None if np.isnan(csi).all() else _quantiles(csi),
                    "top_detectors": d.summary()["top_units"],
                }
            )
        return rows

    def _kept(self, layer: str) -> int:
        d = self.model.dissection[layer]
        return int(d.info.get("values_kept_per_unit", 0))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "data": self.data_name,
            "settings": self.settings,
            "rules": {
                "edge_unit": (
                    f"OSI above the {self.settings['osi_percentile']}th percentile of the same "
                    "layer's units in the random-init control(s) (so about "
                    f"{100 - self.settings['osi_percentile']:.0f}% of control units pass by "
                    "construction)"
                ),
                "detector": (
                    f"best concept's IoU > {self.settings['iou_threshold']} with the unit's "
                    f"region cut at its top {self.settings['quantile']:.1%} activation quantile "
                    "(Network Dissection)"
                ),
                "selectivity": "class selectivity index (Morcos et al. 2018) of the rectified, "
                "spatially averaged activation",
            },
            "control": {
                "seeds": [c.seed for c in self.controls],
                "notes": sorted({n for c in self.controls for n in c.notes}),
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
            "verdict": self.verdict,
            "first_conv": None
            if self.model.filters is None
            else {
                "model": self.model.filters.summary(),
                "control": [c.filters.summary() for c in self.controls if c.filters],
            },
            "layers": self.profile(),
        }


def _quantiles(x: np.ndarray) -> dict[str, Any]:
    x = x[~np.isnan(x)]
    q = np.quantile(x, [0.1, 0.25, 0.5, 0.75, 0.9]) if len(x) else [np.nan] * 5
    return {"mean": round(float(x.mean()), 4), "q10_25_50_75_90": np.round(q, 4).tolist()}


def hierarchy(
    model: Model | nn.Module | str,
    data: ConceptData | str = "partsworld",
    layers: str | Sequence[str] | None = None,
    *,
    control: str = "random-init",
    control_seeds: Sequence[int] = (0,),
    n: int | None = None,
    size: int | None = None,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    osi_percentile: float = 99.0,
    bootstrap: int = 1000,
    batch_size: int | None = None,
    bn_images: int = 512,
    precision: str = "auto",
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> HierarchyResult:
    """Measure the hierarchy of ``model`` against its random-init control (module docstring).

    Args:
        model: a model, module or spec.
        data: ``partsworld``, ``broden:PATH`` or a :class:`~interp.data.concepts.ConceptData`.
        layers: layers to probe (default: the first conv's activation, then every block).
        control: ``"random-init"`` (the only control so far).
        control_seeds: seeds of the control networks (pooled for the edge threshold).
        n: number of probe images (PartsWorld default 1,000).
        size: image size (default: the model's input size, at most 128).
        quantile, iou_threshold: Network Dissection's settings.
        osi_percentile: control percentile an edge unit's OSI must exceed.
        bootstrap: resamples of units for the verdict's confidence.
        batch_size: images per forward pass (default 32 on CPU, 128 on CUDA; halved on
            out-of-memory in the dissection).
        bn_images: probe images used to re-estimate a control's BatchNorm statistics.
        precision: ``auto``, ``bf16`` or ``fp32`` (forward passes of the dissection).
        out: folder for stage files (a rerun reuses finished networks), hierarchy.json and
            figures; ``None`` keeps everything in memory.
        device: used when ``model`` is a spec.
        progress: progress bars.
    """
    if control != "random-init":
        raise ValueError(f"unknown control {control!r}: only 'random-init' is implemented")
    if not control_seeds:
        raise ValueError("give at least one control seed")
    if isinstance(model, str):
        model = load_model(model, device=device)
    model = as_model(model)
    batch_size = batch_size or default_batch(model.device, 32, 128)
    size = size or min(model.input_size[0], 128)
    concept_data = load_concepts(data, size=size, n=n) if isinstance(data, str) else data
    names = resolve_layers(model, layers) if layers is not None else default_hierarchy_layers(model)
    settings = {
        "layers": names,
        "data": concept_data.name,
        "images": len(concept_data),
        "size": concept_data.image_size,
        "mask_size": concept_data.mask_size,
        "quantile": quantile,
        "iou_threshold": iou_threshold,
        "osi_percentile": osi_percentile,
        "bootstrap": bootstrap,
        "bn_images": bn_images,
        "precision": precision,
        "control": control,
        "control_seeds": list(control_seeds),
    }
    kwargs = {"quantile": quantile, "iou_threshold": iou_threshold, "batch_size": batch_size}
    kwargs["precision"] = precision
    stage_dir = Path(out) / "stages" if out is not None else None
    identity = {k: v for k, v in settings.items() if k not in ("bootstrap", "control_seeds")}
    identity["model"] = [model.name, model.weights_source]

    def run(role: str, seed: int | None) -> NetworkProbes:
        key = settings_digest({**identity, "role": role, "seed": seed})
        path = (
            stage_dir / f"{role}{'' if seed is None else f'-seed{seed}'}-{key}.npz"
            if stage_dir
            else None
        )
        if path is not None and path.is_file() and path.with_suffix(".json").is_file():
            return NetworkProbes.load(path)
        if role == "model":
            net, notes = model, ["the model as loaded"]
        else:
            net, notes = random_control(
                model, int(seed or 0), concept_data, bn_images=bn_images, batch_size=batch_size
            )
        probes = probe_network(
            net,
            concept_data,
            names,
            role=role,
            seed=seed,
            notes=notes,
            # an interrupted stage resumes mid-dissection from its ranks' checkpoints
            dissect_kwargs=kwargs | ({"checkpoint": path.with_suffix(".partial")} if path else {}),
            progress=progress,
        )
        if path is not None:
            dist.barrier()  # every rank's checkpoint is gone before the folder goes
            if dist.is_main():
                shutil.rmtree(path.with_suffix(".partial"), ignore_errors=True)
        if path is not None and dist.is_main():  # every rank reads stages, rank 0 writes
            path.parent.mkdir(parents=True, exist_ok=True)
            probes.save(path)
        return probes

    model_probes = run("model", None)
    controls = [run("control", int(s)) for s in control_seeds]
    kept = [n for n in model_probes.layers if all(n in c.layers for c in controls)]
    thresholds = {
        n: float(np.percentile(np.concatenate([c.osi[n] for c in controls]), osi_percentile))
        for n in kept
    }
    model_probes.layers = kept
    categories = model_probes.dissection[kept[0]].categories
    mu = _unit_arrays(model_probes, thresholds)
    cus = [_unit_arrays(c, thresholds) for c in controls]
    result = HierarchyResult(
        model_name=model.name,
        data_name=concept_data.name,
        layers=kept,
        categories=list(categories),
        model=model_probes,
        controls=controls,
        edge_thresholds=thresholds,
        verdict=verdict(mu, cus, kept, categories, bootstrap=bootstrap),
        settings=settings,
    )
    if out is not None and dist.is_main():
        save_hierarchy(result, Path(out), model=model, data=concept_data)
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


def save_hierarchy(
    result: HierarchyResult,
    out: Path,
    *,
    model: Model | None = None,
    data: ConceptData | None = None,
) -> dict[str, Path]:
    """Write hierarchy.json and the figures (profile, OSI, detectors, first-conv filters)."""
    from ..report import hierarchy_figures as figs
    from ..report.figures import save_figure

    out.mkdir(parents=True, exist_ok=True)
    doc = result.to_json()
    paths = {"json": out / "hierarchy.json"}
    atomic_write_text(paths["json"], json.dumps(doc, indent=1))
    paths["profile"] = save_figure(figs.plot_profile(doc), out / "profile.png")
    paths["osi"] = save_figure(
        figs.plot_osi(
            result.layers,
            result.model.osi,
            [c.osi for c in result.controls],
            result.edge_thresholds,
            result.model_name,
        ),
        out / "osi.png",
    )
    if model is not None and data is not None:
        examples = {
            c: detector_examples(model, data, result.model.dissection, c) for c in result.categories
        }
        paths["detectors"] = save_figure(
            figs.plot_detectors(examples, result.model_name), out / "detectors.png"
        )
        _, conv = _first_conv_weights(model)
        if conv is not None and result.model.filters is not None:
            paths["filters"] = save_figure(
                figs.plot_filters(conv, result.model.filters, result.model_name),
                out / "first_conv.png",
            )
    return paths


def _first_conv_weights(model: Model) -> tuple[str | None, np.ndarray | None]:
    from .filters import first_conv

    try:
        name, conv = first_conv(model)
    except ValueError:
        return None, None
    return name, conv.weight.detach().float().cpu().numpy()
