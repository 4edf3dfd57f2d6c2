"""The measuring loop: every registered edge instrument, the dissection (with class
selectivity) and the first-conv filter analysis of the model and of its random-init
controls, then the comparison (control thresholds, profile, verdict)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data.concepts import ConceptData, PartsWorldConcepts
from ...data.photos import PhotoCrops
from ...device import keeps_freed_memory
from ...layer_geometry import LayerGeometry
from ...models.base import Model
from ...models.registry import as_model
from ...settings import HIERARCHY, HierarchySettings
from ...streaming import Stream
from ..dissect import dissect
from ..filters import FilterAnalysis, analyse_filters
from ..instruments import EDGE_INSTRUMENTS, EdgeInstrument, ProbeContext
from ..verdict import centroid_verdict
from .control import random_control, with_settled_batchnorm
from .network import NetworkProbes
from .result import Hierarchy, Verdict, category_units
from .thresholds import control_thresholds

__all__ = [
    "Compute",
    "StageHook",
    "compare",
    "dissect_settings",
    "edge_control_thresholds",
    "measure_hierarchy",
    "probe_network",
    "reference_crops",
]

#: how a stage hook computes one network's probes: ``compute(checkpoint)`` with the folder
#: where the dissection may keep its resumable checkpoint (``None``: none)
Compute = Callable[[Stream | None], NetworkProbes]
#: the pipeline's cache around each network: ``stage(role, seed, layers, compute)``
StageHook = Callable[[str, int | None, list[str], Compute], NetworkProbes]


def _no_stage(role: str, seed: int | None, layers: list[str], compute: Compute) -> NetworkProbes:
    return compute(None)


def reference_crops(n: int, size: int) -> torch.Tensor:
    """The natural photo crops behind the drive ratios (seed 0)."""
    crops = PhotoCrops(n=n, size=size, seed=0)
    return torch.stack([crops[i][0] for i in range(n)])


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
    instruments: Iterable[EdgeInstrument] | None = None,
) -> NetworkProbes:
    """Every edge instrument, the dissection (with selectivity) and the filter analysis of
    one network; ``dissect_kwargs=None`` measures the edge instruments only (an edge-only
    control: no dissection, so no instrument that needs one). The instruments share one
    :class:`~interp.layer_geometry.LayerGeometry` of the network (``ProbeContext.geometry``):
    its layers' inventory and smallest canvases are traced once, not once per instrument."""
    insts = list(EDGE_INSTRUMENTS if instruments is None else instruments)
    dis = None
    kept = list(layers)
    if dissect_kwargs is not None:
        dis = dissect(net, data, layers, progress=progress, **dissect_kwargs)
        kept = [name for name in layers if name in dis]
    # the instruments share one trace of the layers' inventory and smallest canvases
    ctx = ProbeContext(
        size=data.image_size,
        reference=reference,
        dissection=dis,
        progress=progress,
        geometry=LayerGeometry(net),
    )
    edges: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    info: dict[str, dict[str, Any]] = {}
    for inst in insts:
        if inst.needs_dissection and dis is None:
            edges[inst.name] = {}
            continue
        found = inst.probe(net, kept, ctx)
        edges[inst.name] = found.arrays
        if not inst.skips_layers:  # a layer it cannot measure is no layer of the check
            kept = [n for n in kept if n in found.arrays]
        for name, facts in found.info.items():
            info.setdefault(name, {}).update(facts)
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
        edges={k: {n: v for n, v in a.items() if n in kept} for k, a in edges.items()},
        dissection=dis,
        filters=filters,
        notes=notes,
        layer_info={n: v for n, v in info.items() if n in kept},
        instruments=[i.name for i in insts],
    )


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
    reference = reference_crops(reference_images, size)
    controls = []
    for seed in seeds:
        net, notes = random_control(model, int(seed), data, bn_images=bn_images, upto=names[-1])
        controls.append(
            probe_network(
                net,
                data,
                names,
                role="control-edges",
                seed=int(seed),
                notes=notes,
                dissect_kwargs=None,
                reference=reference,
                progress=progress,
            )
        )
    found = control_thresholds(controls, names, quantile)
    return {
        inst: {n: float(found.get(inst, {}).get(n, {}).get("value", float("nan"))) for n in names}
        for inst in found
    }


def dissect_settings(s: HierarchySettings, batch_size: int) -> dict[str, Any]:
    """The keyword arguments of :func:`~interp.probes.dissect.dissect` in a hierarchy check
    under ``s`` (the model and the dissected controls are all dissected so)."""
    return {
        "quantile": s.quantile,
        "iou_threshold": s.iou_threshold,
        "batch_size": batch_size,
        "precision": s.precision,
    }


def _settings(settings: HierarchySettings | None, overrides: dict[str, Any]) -> HierarchySettings:
    """``settings`` (default :data:`~interp.settings.HIERARCHY`) with keyword overrides."""
    base = HIERARCHY if settings is None else settings
    unknown = sorted(set(overrides) - set(HierarchySettings.__dataclass_fields__))
    if unknown:
        raise TypeError(
            f"unknown hierarchy settings {unknown}: the fields of HierarchySettings are "
            f"{sorted(HierarchySettings.__dataclass_fields__)}"
        )
    return replace(base, **overrides) if overrides else base


def measure_hierarchy(
    model: Model,
    data: ConceptData,
    layers: Sequence[str],
    settings: HierarchySettings | None = None,
    *,
    batch_size: int = 32,
    record: dict[str, Any] | None = None,
    stage: StageHook | None = None,
    progress: bool = False,
    **overrides: Any,
) -> Hierarchy:
    """The hierarchy of ``model`` on ``data`` against random-init controls (the package
    docstring): the instrument behind :func:`interp.hierarchy`, which adds argument checks,
    loading, the stage cache (``stage``) and writing.

    ``settings``: a :class:`~interp.settings.HierarchySettings` (default ``HIERARCHY``),
    with keyword ``overrides`` of its fields; ``record``: the settings as ``hierarchy.json``
    keeps them. ``stage(role, seed, layers, compute)`` wraps the probing of each network
    (``role``: ``model``, ``control`` or ``control-edges``); the default computes every one.
    """
    s = _settings(settings, overrides)
    stage = stage or _no_stage
    names = list(layers)
    kwargs = dissect_settings(s, batch_size)
    reference = reference_crops(s.reference_images, data.image_size)

    def run(role: str, seed: int | None, upto: list[str] | None = None) -> NetworkProbes:
        probe_layers = names if upto is None else upto

        def compute(stream: Stream | None) -> NetworkProbes:
            if role == "model":
                # an initialization (BatchNorm never saw a batch) is probed as its controls
                net, notes = with_settled_batchnorm(
                    model, data, bn_images=s.bn_images, batch_size=batch_size
                )
            else:
                net, notes = random_control(
                    model,
                    int(seed or 0),
                    data,
                    # an edge-only control is probed in its first layers, whose BatchNorm
                    # statistics settle on fewer images
                    bn_images=s.bn_images if upto is None else min(s.bn_images, 128),
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
    controls = [run("control", int(c)) for c in s.control_seeds]
    kept = [n for n in model_probes.layers if all(n in c.layers for c in controls)]
    model_probes.layers = kept
    # pool further control seeds, each probed only in the layers still short of units
    units = {n: model_probes.dissection[n].units for n in kept}
    pooled = {n: units[n] * len(controls) for n in kept}
    edge_controls: list[NetworkProbes] = []
    seed = max(int(c) for c in s.control_seeds) + 1
    while len(controls) + len(edge_controls) < s.max_control_seeds:
        short = [n for n in kept if pooled[n] < s.min_control_units]
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
        control_quantile=s.control_quantile,
        bootstrap=s.bootstrap,
        settings=record or {},
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
    instruments: Sequence[EdgeInstrument] | None = None,
) -> Hierarchy:
    """The model's probes against its controls': control thresholds, profile and verdict
    (``instruments``: default, the registered ones the model was probed with)."""
    controls, edge_controls = list(controls), list(edge_controls)
    insts = (
        tuple(instruments)
        if instruments is not None
        else EDGE_INSTRUMENTS.resolve(model_probes.instruments)
    )
    kept = list(model_probes.layers)
    thresholds = control_thresholds([*controls, *edge_controls], kept, control_quantile, insts)
    categories = list(model_probes.dissection[kept[0]].categories)
    result = Hierarchy(
        model_name=model_name,
        data_name=data_name,
        layers=kept,
        categories=categories,
        model=model_probes,
        controls=controls,
        edge_controls=edge_controls,
        thresholds=thresholds,
        verdict=Verdict("not measured"),
        settings=dict(settings or {}),
        instruments=insts,
    )
    if "part" not in categories:
        result.verdict = Verdict("not measured", reason="the data have no part category")
        return result
    ms = result.statuses(model_probes)
    cs = [result.statuses(c) for c in [*controls, *edge_controls]]
    edges = {
        inst.name: (
            ms[inst.name],
            [c[inst.name] for c in (cs[: len(controls)] if inst.needs_dissection else cs)],
        )
        for inst in insts
        if inst.needs is None or inst.needs in categories
    }

    def both(category: str) -> tuple[Any, list[Any]]:
        return category_units(model_probes, category), [
            category_units(c, category) for c in controls
        ]

    objects = both("object") if "object" in categories else None
    result.verdict = Verdict.from_dict(
        centroid_verdict(edges, both("part"), kept, objects=objects, bootstrap=bootstrap)
    )
    return result
