"""``convergence``: do networks trained from different seeds learn the same things?

K seeds of the same PartsWorld CNN (``RunSpec``) are trained (or reused when their run folder
is finished). On probe images none of them saw:

* **CKA** between every pair of seeds and every pair of layers: linear CKA (Kornblith et al.
  2019) from full Gram matrices, and the minibatch CKA of Nguyen et al. (2021) (unbiased HSIC
  averaged over minibatches of the same images); a layer-by-layer heat map averaged over seed
  pairs; **corresponding-layer identification**: for each layer of one seed, is the most
  similar layer of another seed the same layer? (Kornblith et al. report 99.3% with linear CKA
  across CIFAR-10 CNNs trained from different seeds.)
* **Unit matching** (Li et al. 2016): every unit of seed 0 correlated with every unit of each
  other seed over all positions of the probe images, one-to-one Hungarian matching; the
  distribution of matched correlations per layer, next to the best match allowed to repeat.
* **Detectors across seeds**: Network Dissection of each seed on PartsWorld; per layer, which
  concepts are detected in every seed versus in some.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..activations import ActivationCapture
from ..data.concepts import PartsWorldConcepts
from ..data.partsworld import partsworld_tensors
from ..models.registry import load_model
from ..probes.dissect import dissect
from ..similarity import (
    CorrelationAccumulator,
    cka_from_grams,
    match_units,
    minibatch_cka_from_grams,
)
from ._common import CNN_LAYERS, RunSpec, ensure_run, runs_folder
from .registry import OWN_NICHE, Experiment, register
from .results import ExperimentResult

__all__ = ["ConvergenceResult", "convergence", "layer_identification"]

LAYERS = [*CNN_LAYERS, "fc"]


def layer_identification(cka: np.ndarray) -> float:
    """Share of (seed pair, layer) cases whose most similar layer in the other seed is the same
    layer. ``cka``: ``(seeds, seeds, layers, layers)``, ``cka[a, b, i, j]`` between layer ``i``
    of seed ``a`` and layer ``j`` of seed ``b``."""
    seeds, _, layers, _ = cka.shape
    hits, total = 0, 0
    for a, b in itertools.permutations(range(seeds), 2):
        best = cka[a, b].argmax(axis=1)
        hits += int((best == np.arange(layers)).sum())
        total += layers
    return hits / max(1, total)


def _grams(model: Any, images: torch.Tensor, batch: int) -> dict[str, np.ndarray]:
    """Uncentred linear Gram matrix of every layer over ``images`` (features kept one layer
    of all images at a time, in float32)."""
    feats: dict[str, list[torch.Tensor]] = {n: [] for n in LAYERS}
    with torch.no_grad(), ActivationCapture(model.module, LAYERS) as cap:
        for s in range(0, len(images), batch):
            acts = cap.run(model.normalize(images[s : s + batch]))
            for n, a in acts.items():
                feats[n].append(a.float().flatten(1))
    out = {}
    for n in LAYERS:
        f = torch.cat(feats[n]).double()
        feats[n] = []
        out[n] = (f @ f.T).numpy()
    return out


def convergence(
    out: str | Path | None = None,
    *,
    seeds: int = 5,
    spec: RunSpec | None = None,
    probe_images: int = 500,
    minibatch: int = 100,
    match_images: int = 100,
    dissect_images: int = 300,
    runs: str | Path | None = None,
    progress: bool = True,
) -> ConvergenceResult:
    """Train ``seeds`` PartsWorld CNNs into ``runs`` (default ``out/runs``; finished runs are
    reused, interrupted ones resumed) and compare them (module docstring). Writes
    ``convergence.json`` to ``out`` (``interp experiment convergence`` draws
    ``convergence.png`` too); returns the result."""
    if seeds < 2:
        raise ValueError("convergence needs at least two seeds")
    spec = spec or RunSpec()
    runs_dir = runs_folder("convergence", out, runs)
    accs = []
    for s in tqdm(range(seeds), desc="training seeds", disable=not progress):
        accs.append(ensure_run(spec.folder(runs_dir, s), spec.config(s))["test_acc"])
    models = [load_model(str(spec.folder(runs_dir, s)), device="cpu") for s in range(seeds)]

    images, _ = partsworld_tensors(probe_images, spec.size, 777_001)  # no run trained on it
    grams = [_grams(m, images, 100) for m in tqdm(models, desc="features", disable=not progress)]
    nl = len(LAYERS)
    lin = np.zeros((seeds, seeds, nl, nl))
    mb = np.zeros((seeds, seeds, nl, nl))
    for a, b in itertools.product(range(seeds), repeat=2):
        for i, j in itertools.product(range(nl), repeat=2):
            lin[a, b, i, j] = cka_from_grams(grams[a][LAYERS[i]], grams[b][LAYERS[j]])
        ks, ls = [grams[a][n] for n in LAYERS], [grams[b][n] for n in LAYERS]
        mb[a, b] = minibatch_cka_from_grams(ks, ls, minibatch)
    pairs = [(a, b) for a, b in itertools.permutations(range(seeds), 2)]
    cross_lin = np.mean([lin[a, b] for a, b in pairs], axis=0)
    cross_mb = np.mean([mb[a, b] for a, b in pairs], axis=0)

    matching = _unit_matching(models, images, match_images)
    detectors = _detectors(models, PartsWorldConcepts(n=dissect_images, size=spec.size), progress)

    ident_lin = layer_identification(lin)
    ident_mb = layer_identification(mb)
    diag_lin = np.diag(cross_lin)
    summary: dict[str, Any] = {
        "seeds": seeds,
        "run": {"size": spec.size, "n": spec.n, "epochs": spec.epochs, "width": spec.width},
        "test_accuracy": [round(a, 4) for a in accs],
        "layers": LAYERS,
        "probe_images": probe_images,
        "cka_linear_cross_seed": cross_lin.round(4).tolist(),
        "cka_minibatch_cross_seed": cross_mb.round(4).tolist(),
        "same_layer_cka_linear": dict(zip(LAYERS, diag_lin.round(4).tolist(), strict=True)),
        "same_layer_cka_minibatch": dict(
            zip(LAYERS, np.diag(cross_mb).round(4).tolist(), strict=True)
        ),
        "layer_identification_linear": round(ident_lin, 4),
        "layer_identification_minibatch": round(ident_mb, 4),
        "layer_identification_chance": round(1 / nl, 4),
        "kornblith_2019_linear_cka_identification": 0.993,
        "matching": matching,
        "detectors": detectors,
    }
    misses = []
    for a, b in pairs:
        for i, j in enumerate(lin[a, b].argmax(axis=1)):
            if j != i:
                misses.append(f"{LAYERS[i]}->{LAYERS[j]}")
    summary["layer_identification_misses"] = sorted(set(misses))
    first, last = CNN_LAYERS[0], CNN_LAYERS[-1]
    summary["findings"] = [
        f"Linear CKA identifies the corresponding layer across {seeds} seeds in "
        f"{ident_lin:.1%} of cases (minibatch unbiased CKA: {ident_mb:.1%}; chance "
        f"{1 / nl:.0%}; Kornblith et al. 2019: 99.3% on CIFAR-10 CNNs)"
        + (f"; the misses are {', '.join(sorted(set(misses)))}." if misses else "."),
        f"Same-layer linear CKA across seeds is highest at {LAYERS[int(diag_lin.argmax())]} "
        f"({diag_lin.max():.2f}) and lowest at {LAYERS[int(diag_lin.argmin())]} "
        f"({diag_lin.min():.2f}); by layer: "
        + ", ".join(f"{n.split('.')[-1]} {v:.2f}" for n, v in zip(LAYERS, diag_lin, strict=True))
        + ".",
        f"Unit by unit, the median one-to-one matched correlation is "
        f"{matching[first]['matched_r_quantiles_10_50_90'][1]:.2f} in {first} and "
        f"{matching[last]['matched_r_quantiles_10_50_90'][1]:.2f} in {last}; "
        f"{matching[first]['matched_r_above_0.9']:.0%} and "
        f"{matching[last]['matched_r_above_0.9']:.0%} of units have a partner above 0.9.",
        f"Detectors: of the concepts some seed's {last} detects, "
        f"{(detectors[last]['shared_fraction'] or 0):.0%} are detected by every seed "
        f"({len(detectors[last]['concepts_in_every_seed'])} of "
        f"{len(detectors[last]['concepts_in_some_seed'])}).",
    ]
    result = ConvergenceResult(summary, cka_linear=cross_lin, cka_minibatch=cross_mb)
    if out is not None:
        result.save(out)
    return result


def _unit_matching(models: list[Any], images: torch.Tensor, match_images: int) -> dict[str, Any]:
    """Unit matching of seed 0 against every other seed over the first ``match_images``."""
    seeds = len(models)
    corr = {n: [CorrelationAccumulator() for _ in range(1, seeds)] for n in CNN_LAYERS}
    with torch.no_grad():
        caps = [ActivationCapture(m.module, CNN_LAYERS) for m in models]
        for c in caps:
            c.__enter__()
        try:
            for s in range(0, match_images, 50):
                x = images[s : min(match_images, s + 50)]
                acts = [c.run(m.normalize(x)) for c, m in zip(caps, models, strict=True)]
                for n in CNN_LAYERS:
                    a0 = acts[0][n].permute(0, 2, 3, 1).reshape(-1, acts[0][n].shape[1])
                    for t in range(1, seeds):
                        at = acts[t][n].permute(0, 2, 3, 1).reshape(-1, acts[t][n].shape[1])
                        corr[n][t - 1].update(a0, at)
        finally:
            for c in caps:
                c.__exit__(None, None, None)
    matching = {}
    for n in CNN_LAYERS:
        matched, best = [], []
        for acc in corr[n]:
            c = acc.result()
            _, r = match_units(c)
            matched.append(r[~np.isnan(r)])
            best.append(c.max(axis=1))
        m, bst = np.concatenate(matched), np.concatenate(best)
        matching[n] = {
            "units": int(len(corr[n][0].sa)),
            "matched_r_quantiles_10_50_90": np.quantile(m, [0.1, 0.5, 0.9]).round(3).tolist(),
            "matched_r_above_0.9": round(float((m > 0.9).mean()), 4),
            "matched_r_above_0.5": round(float((m > 0.5).mean()), 4),
            "best_r_median": round(float(np.median(bst)), 3),
            "matched_r": m.round(4).tolist(),
        }
    return matching


def _detectors(models: list[Any], concepts: Any, progress: bool) -> dict[str, Any]:
    """Per layer, the concepts detected by every seed and by some seed."""
    found: dict[str, list[set[str]]] = {n: [] for n in CNN_LAYERS}
    counts: dict[str, list[int]] = {n: [] for n in CNN_LAYERS}
    for m in tqdm(models, desc="dissection", disable=not progress):
        dis = dissect(m, concepts, CNN_LAYERS, progress=False)
        for n in CNN_LAYERS:
            labels = [x for x in dis[n].labels() if x]
            found[n].append(set(labels))
            counts[n].append(len(labels))
    detectors = {}
    for n in CNN_LAYERS:
        union = set().union(*found[n])
        common = set.intersection(*found[n]) if found[n] else set()
        detectors[n] = {
            "detector_units_per_seed": counts[n],
            "concepts_in_every_seed": sorted(common),
            "concepts_in_some_seed": sorted(union),
            "shared_fraction": round(len(common) / len(union), 4) if union else None,
        }
    return detectors


@dataclass(eq=False)
class ConvergenceResult(ExperimentResult):
    """The convergence experiment's document (CKA across seeds, layer identification, unit
    matching, detectors across seeds, findings) and, after a run (not saved), the unrounded
    cross-seed CKA matrices the document holds rounded to 4 decimals."""

    json_name: ClassVar[str] = "convergence.json"

    cka_linear: np.ndarray | None = field(default=None, repr=False)
    cka_minibatch: np.ndarray | None = field(default=None, repr=False)


register(
    Experiment(
        "convergence",
        convergence,
        ConvergenceResult,
        questions={OWN_NICHE: 3},
        figures=("convergence",),
        seeds=("seeds", "networks trained [5]"),
    )
)
