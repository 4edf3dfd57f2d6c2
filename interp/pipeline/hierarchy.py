"""The hierarchy job: :func:`hierarchy` checks its arguments, loads the model and the concept
data, measures (:func:`interp.probes.hierarchy.measure_hierarchy`) with every network's probes
in the stage cache, and writes :class:`~interp.probes.hierarchy.Hierarchy` with its figures
(the examples behind the tuning and detector figures are prepared here).

An interrupted run reuses every finished network (``OUT/stages/<role>-<key>.npz``) and resumes
the one in flight from its dissection's rank checkpoints. Under torchrun every rank runs the
dissection of its share of the images; rank 0 writes::

    interp hierarchy efficientnet_lite0 --out out/hierarchy                      # one GPU
    torchrun --standalone --nproc_per_node=8 -m interp hierarchy efficientnet_lite0 \
        --out out/hierarchy                                                       # 8 GPUs
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed as dist
from ..activations import capture, resolve_layers
from ..checks import check_fraction, check_int
from ..data.concepts import ConceptData, load_concepts
from ..device import default_batch
from ..errors import InterpError, RangeError
from ..featvis.render import render_channels
from ..models.base import Model
from ..models.registry import as_model, load_model
from ..probes.dissect import Dissection, upsample
from ..probes.filters import first_conv
from ..probes.hierarchy import (
    EDGE_INSTRUMENTS,
    Compute,
    Hierarchy,
    NetworkProbes,
    compare,
    default_hierarchy_layers,
    dissect_settings,
    measure_hierarchy,
    probe_network,
    reference_crops,
    untouched_batchnorm,
)
from ..settings import HIERARCHY, HierarchySettings, with_overrides
from ..streaming import Stream
from ..utils import prepare_output
from ..views.hierarchy_figures import save_figures
from .cache import StageCache, architecture_digest, stage_key, weights_digest
from .sharding import RankStream
from .user_cache import ControlCache, control_recipe, user_cache_dir

__all__ = [
    "against_controls",
    "detector_examples",
    "hierarchy",
    "settings_record",
    "tuning_examples",
    "write",
]

#: settings that change the comparison, not what a network's probes measure (not in the
#: stage keys: another bootstrap or control quantile reuses every network)
_NOT_IN_STAGE_KEYS = (
    "bootstrap",
    "control_seeds",
    "min_control_units",
    "max_control_seeds",
    "control_quantile",
)


def settings_record(
    s: HierarchySettings, layers: Sequence[str], data: ConceptData, control: str
) -> dict[str, Any]:
    """The settings as ``hierarchy.json`` keeps them (and as the stage keys read them)."""
    fields = {
        k: v for k, v in dataclasses.asdict(s).items() if k not in ("data", "reference_images")
    }
    return {
        **fields,
        "layers": list(layers),
        "data": data.name,
        "images": len(data),
        "size": data.image_size,
        "mask_size": data.mask_size,
        "control": control,
        "control_seeds": list(s.control_seeds),
        "reference": f"{s.reference_images} photo crops (skimage.data), seed 0",
        "edge_instruments": ", ".join(i.described for i in EDGE_INSTRUMENTS),
    }


def _check(s: HierarchySettings, control: str) -> None:
    if control != "random-init":
        raise InterpError(f"unknown control {control!r}: only 'random-init' is implemented")
    if not s.control_seeds:
        raise RangeError("give at least one control seed")
    for seed in s.control_seeds:
        check_int("control seed", seed, low=0)
    check_fraction("control_quantile", s.control_quantile)
    check_fraction("quantile", s.quantile)
    check_fraction("iou_threshold", s.iou_threshold)
    check_int("min_control_units", s.min_control_units)
    check_int("max_control_seeds", s.max_control_seeds, low=len(s.control_seeds))
    check_int("reference_images", s.reference_images)
    check_int("bootstrap", s.bootstrap)
    check_int("bn_images", s.bn_images)


def hierarchy(
    model: Model | nn.Module | str,
    data: ConceptData | str | None = None,
    layers: str | Sequence[str] | None = None,
    *,
    settings: HierarchySettings = HIERARCHY,
    control: str = "random-init",
    n: int | None = None,
    size: int | None = None,
    batch_size: int | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    user_cache: bool = True,
    **overrides: Any,
) -> Hierarchy:
    """Measure the hierarchy of ``model`` against its random-init control (module docstring).

    Args:
        model: a model, module or spec.
        data: ``partsworld``, ``broden:PATH`` or a :class:`~interp.data.concepts.ConceptData`
            (default: ``settings.data``).
        layers: layers to probe (default: the first conv's activation, then every block).
        settings: a :class:`~interp.settings.HierarchySettings` (control seeds, control
            quantile, dissection's quantile and IoU, bootstrap, ...; default ``HIERARCHY``).
        control: ``"random-init"`` (the only control so far).
        n: number of probe images (PartsWorld default 1,000).
        size: image size (default: the model's input size, at most 128).
        batch_size: images per forward pass (default 32 on CPU, 128 on CUDA; halved on
            out-of-memory in the dissection).
        out: folder for stage files (a rerun reuses finished networks), hierarchy.json and
            figures; ``None`` keeps everything in memory.
        device: used when ``model`` is a spec.
        progress: progress bars.
        user_cache: keep and reuse the random-init controls in the user-level cache
            (:mod:`interp.pipeline.user_cache`: ``$INTERP_CACHE``, ``~/.cache/interp``), where
            every model of the same architecture finds them; ``INTERP_CACHE=off`` also turns
            it off. Not used under torchrun.
        **overrides: fields of ``settings`` to replace (``control_seeds=(0,)``,
            ``bootstrap=100``...).
    """
    s = with_overrides(settings, job="hierarchy", **overrides)
    _check(s, control)
    check_int("n", n, optional=True)
    check_int("size", size, low=8, optional=True)
    check_int("batch_size", batch_size, optional=True)
    if isinstance(model, str):
        model = load_model(model, device=device)
    model = as_model(model)
    batch_size = batch_size or default_batch(model.device, 32, 128)
    size = size or min(model.input_size[0], 128)
    data = s.data if data is None else data
    concept_data = load_concepts(data, size=size, n=n) if isinstance(data, str) else data
    names = resolve_layers(model, layers) if layers is not None else default_hierarchy_layers(model)
    record = settings_record(s, names, concept_data, control)
    if out is not None:
        prepare_output(out)  # writable; no temp files of a killed run
    controls = ControlCache(
        user_cache_dir() if user_cache and dist.world() == 1 else None, progress=progress
    )
    stage, stage_paths = _stage_hook(model, concept_data, record, out, progress, controls)
    result = measure_hierarchy(
        model,
        concept_data,
        names,
        s,
        batch_size=batch_size,
        record=record,
        stage=stage,
        progress=progress,
    )
    result.settings["stages"] = stage_paths
    if out is not None and dist.is_main():
        write(result, Path(out), model=model, data=concept_data)
    dist.barrier()
    return result


def against_controls(
    model: Model,
    result: Hierarchy,
    data: ConceptData,
    settings: HierarchySettings = HIERARCHY,
    *,
    batch_size: int | None = None,
    bootstrap: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
) -> Hierarchy:
    """``model`` (another network of ``result``'s architecture: a checkpoint of the same
    training, another seed) probed in ``result``'s layers as ``result``'s model was
    (``data`` and ``settings``: the ones ``result`` was measured with, which is checked) and
    compared with ``result``'s own random-init controls: the same thresholds, so profiles of
    many checkpoints share one baseline. ``out``: a folder whose stage cache keeps each
    network's probes by its weights, as :func:`hierarchy` keeps them (a rerun reuses them);
    ``bootstrap``: default ``settings.bootstrap``."""
    record = settings_record(settings, result.layers, data, "random-init")
    differ = sorted(
        k
        for k, v in record.items()
        if k not in _NOT_IN_STAGE_KEYS and k in result.settings and result.settings[k] != v
    )
    if differ:
        raise InterpError(
            f"the controls were measured with other settings ({', '.join(differ)}): give the "
            "concept data and settings the hierarchy used"
        )
    kwargs = dissect_settings(settings, batch_size or default_batch(model.device, 32, 128))
    reference = reference_crops(settings.reference_images, data.image_size)

    def compute(stream: Stream | None) -> NetworkProbes:
        return probe_network(
            model,
            data,
            result.layers,
            role="model",
            seed=None,
            notes=["a network of the hierarchy's architecture, against its controls"],
            dissect_kwargs=kwargs if stream is None else {**kwargs, "stream": stream},
            reference=reference,
            progress=progress,
        )

    if out is not None:
        prepare_output(out)
    stage, _ = _stage_hook(model, data, record, out, progress)
    probes = stage("model", None, list(result.layers), compute)
    return compare(
        probes,
        result.controls,
        result.edge_controls,
        model_name=model.name,
        data_name=data.name,
        control_quantile=float(result.settings.get("control_quantile", settings.control_quantile)),
        bootstrap=bootstrap if bootstrap is not None else settings.bootstrap,
        settings=dict(result.settings),
        instruments=result.instruments,
    )


def _stage_hook(
    model: Model,
    data: ConceptData,
    record: dict[str, Any],
    out: str | Path | None,
    progress: bool,
    controls: ControlCache | None = None,
) -> tuple[Any, dict[str, str]]:
    """The stage cache around each network, and the stage files it used (filled as it goes).

    A network's stage is keyed by the weights it was measured on: the model's own, or, for
    a control, the architecture (its weights come from the seed, not from the model). A
    control missing from the output folder is looked up in the user-level cache
    (``controls``) before it is measured, and kept there once measured."""
    identity = {k: v for k, v in record.items() if k not in _NOT_IN_STAGE_KEYS}
    cache = StageCache(out, progress=progress)
    model_weights = weights_digest(model)
    architecture = architecture_digest(model)
    recipe = control_recipe(model)
    controls = controls or ControlCache(None)
    stage_paths: dict[str, str] = {}

    # an initialization is probed with its BatchNorm statistics re-estimated as its controls'
    settled = {"batchnorm": "re-estimated"} if untouched_batchnorm(model) else {}

    def stage(role: str, seed: int | None, layers: list[str], compute: Compute) -> NetworkProbes:
        weights = model_weights if role == "model" else architecture
        extra = settled if role == "model" else {}
        key = stage_key(
            model=weights,
            settings={**identity, "role": role, "seed": seed, "layers": layers, **extra},
            data=data.name,
        )
        tag = f"{role}{'' if seed is None else f'-seed{seed}'}"
        path = cache.path(tag, key, ".npz")
        if path is None:
            return compute(RankStream())
        stage_paths[tag] = path.name

        shared = ControlCache.key(key, recipe) if role != "model" else None

        def run() -> dict[str, Any]:
            if shared is not None and controls.fetch(tag, shared, path, NetworkProbes.load):
                return {"probes": path.name, "role": role, "seed": seed, "from": "user cache"}
            partial = path.with_suffix(".partial")  # the dissection's rank checkpoints
            edges_only = role == "control-edges"  # no dissection, nothing to checkpoint
            stream = RankStream(None if edges_only else partial, "dissect", keep_finished=True)
            probes = compute(stream)
            if dist.is_main():  # every rank reads stages, rank 0 writes
                probes.save(path)
                if shared is not None:
                    controls.store(tag, shared, path)
            dist.barrier()  # the stage is saved and no rank reads its checkpoint any more
            if dist.is_main():
                shutil.rmtree(path.with_suffix(".partial"), ignore_errors=True)
            return {"probes": path.name, "role": role, "seed": seed}

        if not (path.is_file() and path.with_suffix(".meta.json").is_file()):
            cache.forget(tag, key)  # a marker whose probes were deleted is not a stage
        dist.barrier()
        cache.run(tag, key, run)
        return NetworkProbes.load(path)

    return stage, stage_paths


def write(
    result: Hierarchy, folder: Path, *, model: Model | None = None, data: ConceptData | None = None
) -> dict[str, Path]:
    """``result`` (:meth:`Hierarchy.save`) and its figures in ``folder``: ``profile`` and
    ``osi``; with the model, ``tuning`` (grating tuning next to feature visualizations) and
    ``first_conv``; with the model and the concept data, ``detectors``."""
    paths = result.save(folder)
    prepared: dict[str, Any] = {}
    if model is not None:
        prepared["tuning"] = tuning_examples(result, model)
    if model is not None and data is not None:
        prepared["detectors"] = {
            c: detector_examples(model, data, result.model.dissection, c) for c in result.categories
        }
        prepared["first_conv"] = _first_conv_weights(model)
    return paths | save_figures(result, folder, **prepared)


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
    result: Hierarchy, model: Model, *, layers: int = 3, steps: int = 96
) -> list[dict[str, Any]]:
    """Example units for the tuning figure: in an early, a middle and a late layer, the
    grating edge unit with the highest OSI and the highest-OSI unit that is not one (often
    an undriven unit whose tuning curve is sharp but tiny); each with a feature
    visualization (``steps`` steps at 64 px) and its statuses by every instrument."""
    if not all(n in result.model.gratings for n in result.layers):
        return []
    picks = sorted({0, len(result.layers) // 2, len(result.layers) - 1})[:layers]
    out = []
    for i in picks:
        name = result.layers[i]
        g = result.model.gratings[name]
        scores = result.unit_scores(name)
        edge = [bool(s.statuses.get("gratings")) for s in scores]
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
                    "status": {k: v for k, v in scores[u].statuses.items() if v is not None},
                }
            )
    return out


def _first_conv_weights(model: Model) -> np.ndarray | None:
    try:
        _, conv = first_conv(model)
    except ValueError:
        return None
    return conv.weight.detach().float().cpu().numpy()
