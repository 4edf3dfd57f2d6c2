"""``redundancy``: do units of a layer duplicate each other?

Within each conv layer of the PartsWorld CNN, over probe images (every spatial position a
sample):

* the correlation of every pair of units **after ReLU** (what the next layer sees): mean |r|
  and the share of **near-duplicate** pairs (r > 0.9);
* the correlation **before the nonlinearity** (BatchNorm output) and the cosine similarity of
  the **filters**: **negative-reciprocal** pairs (r or cosine < -0.9), a unit and its
  sign-flipped twin, as seen among Gabor filters in early vision;
* how these change **during training** (the run's snapshots, from the random init to the end)
  and **with width** (0.25x, 0.5x, 1x channels).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..activations import ActivationCapture
from ..data.partsworld import partsworld_tensors
from ..models.registry import load_model
from ..similarity import CorrelationAccumulator
from ._common import RunSpec, ensure_run, runs_folder
from .registry import OWN_NICHE, Experiment, register
from .results import ExperimentResult

__all__ = ["RedundancyResult", "layer_redundancy", "redundancy"]

CONVS = [f"features.conv{i}" for i in range(1, 6)]


def _pairs(c: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(c.shape[0], k=1)
    return c[iu]


def layer_redundancy(model: Any, images: torch.Tensor, batch: int = 50) -> dict[str, Any]:
    """Redundancy measures of every conv layer of a SimpleCNN over ``images``."""
    post = [n.replace("conv", "relu") for n in CONVS]
    named = dict(model.module.named_modules())
    pre = [n.replace("conv", "bn") if n.replace("conv", "bn") in named else n for n in CONVS]
    accs = {n: CorrelationAccumulator() for n in post + pre}
    with torch.no_grad(), ActivationCapture(model.module, post + pre) as cap:
        for s in range(0, len(images), batch):
            acts = cap.run(model.normalize(images[s : s + batch]))
            for n, a in acts.items():
                flat = a.float().permute(0, 2, 3, 1).reshape(-1, a.shape[1])
                accs[n].update(flat, flat)
    out = {}
    for conv, p_name, q_name in zip(CONVS, post, pre, strict=True):
        r_post = _pairs(accs[p_name].result())
        r_pre = _pairs(accs[q_name].result())
        w = named[conv].weight.detach().double().flatten(1)
        w = w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = _pairs((w @ w.T).numpy())
        units = int(named[conv].weight.shape[0])
        out[conv] = {
            "units": units,
            "pairs": int(len(r_post)),
            "mean_abs_r": round(float(np.abs(r_post).mean()), 4),
            "near_duplicates_r_above_0.9": round(float((r_post > 0.9).mean()), 5),
            "near_duplicate_pairs": int((r_post > 0.9).sum()),
            "pre_activation_mean_abs_r": round(float(np.abs(r_pre).mean()), 4),
            "negative_reciprocal_r_below_-0.9": int((r_pre < -0.9).sum()),
            "filter_cosine_below_-0.9": int((cos < -0.9).sum()),
            "filter_cosine_above_0.9": int((cos > 0.9).sum()),
            "pre_activation_r_min": round(float(r_pre.min()), 4),
        }
    return out


def redundancy(
    out: str | Path | None = None,
    *,
    spec: RunSpec | None = None,
    widths: tuple[float, ...] = (0.25, 0.5, 1.0),
    seed: int = 0,
    probe_images: int = 200,
    runs: str | Path | None = None,
    progress: bool = True,
) -> RedundancyResult:
    """Redundancy within layers over training and width (module docstring); writes
    ``redundancy.json`` to ``out`` (``interp experiment redundancy`` draws
    ``redundancy.png`` too)."""
    spec = spec or RunSpec()
    runs_dir = runs_folder("redundancy", out, runs)
    images, _ = partsworld_tensors(probe_images, spec.size, 777_002)

    by_width = {}
    for w in tqdm(widths, desc="widths", disable=not progress):
        folder = spec.folder(runs_dir, seed, w)
        metrics = ensure_run(folder, spec.config(seed, width=w))
        model = load_model(str(folder), device="cpu")
        by_width[str(w)] = {
            "test_acc": round(metrics["test_acc"], 4),
            "layers": layer_redundancy(model, images),
        }

    folder = spec.folder(runs_dir, seed, spec.width)
    config = spec.config(seed)
    init = load_model(
        "simplecnn",
        device="cpu",
        weights="none",
        seed=seed,
        num_classes=6,
        width=spec.width,
        input_size=spec.size,
    )
    init.preprocessing = load_model(str(folder), device="cpu").preprocessing
    stages: list[tuple[int, Any]] = [(0, init)]
    for snap in sorted((folder / "snapshots").glob("step_*.pt")):
        stages.append((int(snap.stem.split("_")[1]), load_model(str(snap), device="cpu")))
    final_step = config.epochs * int(np.ceil(spec.n / config.batch_size))
    stages.append((final_step, load_model(str(folder), device="cpu")))
    over_training = []
    for step, model in tqdm(stages, desc="snapshots", disable=not progress):
        over_training.append({"step": step, "layers": layer_redundancy(model, images)})

    summary: dict[str, Any] = {
        "run": {"size": spec.size, "n": spec.n, "epochs": spec.epochs, "seed": seed},
        "probe_images": probe_images,
        "widths": by_width,
        "training": over_training,
        "rules": {
            "near_duplicate": "post-ReLU correlation over all positions > 0.9",
            "negative_reciprocal": "pre-activation (BatchNorm output) correlation < -0.9",
        },
    }
    start, end = over_training[0]["layers"], over_training[-1]["layers"]
    dup_end = {c: end[c]["near_duplicate_pairs"] for c in CONVS}
    neg_end = {c: end[c]["negative_reciprocal_r_below_-0.9"] for c in CONVS}
    wide = by_width[str(widths[-1])]["layers"]
    narrow = by_width[str(widths[0])]["layers"]
    summary["findings"] = [
        "After training, near-duplicate unit pairs (post-ReLU r > 0.9) per layer: "
        + ", ".join(f"{c.split('.')[-1]} {dup_end[c]}/{end[c]['pairs']}" for c in CONVS)
        + "; the mean |r| between units goes from "
        + ", ".join(f"{start[c]['mean_abs_r']:.2f}" for c in CONVS)
        + " at random init to "
        + ", ".join(f"{end[c]['mean_abs_r']:.2f}" for c in CONVS)
        + " (conv1..conv5).",
        "Negative-reciprocal pairs (pre-activation r < -0.9) after training: "
        + ", ".join(f"{c.split('.')[-1]} {neg_end[c]}" for c in CONVS)
        + "; filters with cosine < -0.9: "
        + ", ".join(f"{end[c]['filter_cosine_below_-0.9']}" for c in CONVS)
        + ".",
        f"With width {widths[-1]} instead of {widths[0]}, the share of near-duplicate pairs in "
        f"conv3 is {wide['features.conv3']['near_duplicates_r_above_0.9']:.2%} vs "
        f"{narrow['features.conv3']['near_duplicates_r_above_0.9']:.2%}, and mean |r| "
        f"{wide['features.conv3']['mean_abs_r']:.2f} vs "
        f"{narrow['features.conv3']['mean_abs_r']:.2f}.",
    ]
    result = RedundancyResult(summary)
    if out is not None:
        result.save(out)
    return result


@dataclass(eq=False)
class RedundancyResult(ExperimentResult):
    """The redundancy experiment's document: per width and per training snapshot, each conv
    layer's correlations between units and between filters; findings."""

    json_name: ClassVar[str] = "redundancy.json"


register(
    Experiment(
        "redundancy",
        redundancy,
        RedundancyResult,
        questions={OWN_NICHE: 2},
        figures=("redundancy",),
    )
)
