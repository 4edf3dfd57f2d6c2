"""The hierarchy job: :func:`hierarchy` checks its arguments, loads the model and the concept
data, measures (:func:`interp.probes.hierarchy.measure_hierarchy`) with every network's probes
in the stage cache, and writes :class:`~interp.probes.hierarchy.Hierarchy` with its figures.

An interrupted run reuses every finished network (``OUT/stages/<role>-<key>.npz``) and resumes
the one in flight from its dissection's rank checkpoints. Under torchrun every rank runs the
dissection of its share of the images; rank 0 writes::

    interp hierarchy efficientnet_lite0 --out out/hierarchy                      # one GPU
    torchrun --standalone --nproc_per_node=8 -m interp hierarchy efficientnet_lite0 \
        --out out/hierarchy                                                       # 8 GPUs
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .. import distributed as dist
from ..activations import resolve_layers
from ..checks import check_fraction, check_int
from ..data.concepts import ConceptData, load_concepts
from ..device import default_batch
from ..errors import InterpError, RangeError
from ..models.base import Model
from ..models.registry import as_model, load_model
from ..probes.edges import GRATINGS_VERSION
from ..probes.hierarchy import (
    Compute,
    Hierarchy,
    NetworkProbes,
    default_hierarchy_layers,
    measure_hierarchy,
)
from ..settings import HIERARCHY
from ..utils import prepare_output
from .cache import StageCache, architecture_digest, stage_key, weights_digest
from .sharding import RankStream

__all__ = ["hierarchy"]


def hierarchy(
    model: Model | nn.Module | str,
    data: ConceptData | str = HIERARCHY.data,
    layers: str | Sequence[str] | None = None,
    *,
    control: str = "random-init",
    control_seeds: Sequence[int] = HIERARCHY.control_seeds,
    min_control_units: int = HIERARCHY.min_control_units,
    max_control_seeds: int = HIERARCHY.max_control_seeds,
    control_quantile: float = HIERARCHY.control_quantile,
    reference_images: int = HIERARCHY.reference_images,
    n: int | None = None,
    size: int | None = None,
    quantile: float = HIERARCHY.quantile,
    iou_threshold: float = HIERARCHY.iou_threshold,
    bootstrap: int = HIERARCHY.bootstrap,
    batch_size: int | None = None,
    bn_images: int = HIERARCHY.bn_images,
    precision: str = HIERARCHY.precision,
    out: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
) -> Hierarchy:
    """Measure the hierarchy of ``model`` against its random-init control (module docstring).

    Args:
        model: a model, module or spec.
        data: ``partsworld``, ``broden:PATH`` or a :class:`~interp.data.concepts.ConceptData`.
        layers: layers to probe (default: the first conv's activation, then every block).
        control: ``"random-init"`` (the only control so far).
        control_seeds: seeds of the dissected control networks.
        min_control_units: the edge instruments pool further control seeds (edge-only, in the
            layers that need them) until every layer has this many control units.
        max_control_seeds: at most this many control networks in all.
        control_quantile: quantile of the pooled control units an edge unit must exceed.
        reference_images: natural photo crops for the drive ratio.
        n: number of probe images (PartsWorld default 1,000).
        size: image size (default: the model's input size, at most 128).
        quantile, iou_threshold: Network Dissection's settings.
        bootstrap: resamples of units and control seeds for the verdict's confidence.
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
        raise InterpError(f"unknown control {control!r}: only 'random-init' is implemented")
    if not control_seeds:
        raise RangeError("give at least one control seed")
    for seed in control_seeds:
        check_int("control seed", seed, low=0)
    check_fraction("control_quantile", control_quantile)
    check_fraction("quantile", quantile)
    check_fraction("iou_threshold", iou_threshold)
    check_int("min_control_units", min_control_units)
    check_int("max_control_seeds", max_control_seeds, low=len(control_seeds))
    check_int("reference_images", reference_images)
    check_int("bootstrap", bootstrap)
    check_int("bn_images", bn_images)
    check_int("n", n, optional=True)
    check_int("size", size, low=8, optional=True)
    check_int("batch_size", batch_size, optional=True)
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
        "bootstrap": bootstrap,
        "bn_images": bn_images,
        "precision": precision,
        "control": control,
        "control_seeds": list(control_seeds),
        "min_control_units": min_control_units,
        "max_control_seeds": max_control_seeds,
        "control_quantile": control_quantile,
        "reference": f"{reference_images} photo crops (skimage.data), seed 0",
        "edge_instruments": f"gratings v{GRATINGS_VERSION} (evoked, contrast series, read per "
        "unit), erf v1, dissection",
    }
    if out is not None:
        prepare_output(out)  # writable; no temp files of a killed run
    # a network's stage is keyed by the weights it was measured on: the model's own, or, for
    # a control, the architecture (its weights come from the seed, not from the model)
    identity = {
        k: v
        for k, v in settings.items()
        if k
        not in (
            "bootstrap",
            "control_seeds",
            "min_control_units",
            "max_control_seeds",
            "control_quantile",
        )
    }
    cache = StageCache(out, progress=progress)
    model_weights = weights_digest(model)
    architecture = architecture_digest(model)
    stage_paths: dict[str, str] = {}

    def stage(role: str, seed: int | None, layers: list[str], compute: Compute) -> NetworkProbes:
        weights = model_weights if role == "model" else architecture
        key = stage_key(
            model=weights,
            settings={**identity, "role": role, "seed": seed, "layers": layers},
            data=concept_data.name,
        )
        tag = f"{role}{'' if seed is None else f'-seed{seed}'}"
        path = cache.path(tag, key, ".npz")
        if path is None:
            return compute(RankStream())
        stage_paths[tag] = path.name

        def run() -> dict[str, Any]:
            partial = path.with_suffix(".partial")  # the dissection's rank checkpoints
            edges_only = role == "control-edges"  # no dissection, nothing to checkpoint
            stream = RankStream(None if edges_only else partial, "dissect", keep_finished=True)
            probes = compute(stream)
            if dist.is_main():  # every rank reads stages, rank 0 writes
                probes.save(path)
            dist.barrier()  # the stage is saved and no rank reads its checkpoint any more
            if dist.is_main():
                shutil.rmtree(path.with_suffix(".partial"), ignore_errors=True)
            return {"probes": path.name, "role": role, "seed": seed}

        if not (path.is_file() and path.with_suffix(".meta.json").is_file()):
            cache.forget(tag, key)  # a marker whose probes were deleted is not a stage
        dist.barrier()
        cache.run(tag, key, run)
        return NetworkProbes.load(path)

    result = measure_hierarchy(
        model,
        concept_data,
        names,
        control_seeds=control_seeds,
        min_control_units=min_control_units,
        max_control_seeds=max_control_seeds,
        control_quantile=control_quantile,
        reference_images=reference_images,
        quantile=quantile,
        iou_threshold=iou_threshold,
        bootstrap=bootstrap,
        batch_size=batch_size,
        bn_images=bn_images,
        precision=precision,
        settings=settings,
        stage=stage,
        progress=progress,
    )
    result.settings["stages"] = stage_paths
    if out is not None and dist.is_main():
        result.save(Path(out), model=model, data=concept_data)
    dist.barrier()
    return result
