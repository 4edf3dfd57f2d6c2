"""Transfer: do features learned on objects help a network for handwritten digits, and
through which layers? How general, how specific are the features of each layer?

Three measurements, all on CPU-sized data:

**(a) Fine-tuning ImageNet features on digits** (the question as the course asks it).
EfficientNet-Lite0 initialized from its ImageNet weights, or at random init, gets a new
10-way classifier and is fine-tuned on scikit-learn's handwritten digits (8x8, bilinearly
upsampled to ``digits_size`` px, grey repeated to RGB): whole, on 10, 30, 100 and all
labelled images per class; and with its stem and first blocks frozen, at the block
boundaries where a stage ends, on all images (:mod:`~interp.experiments.transfer_sweep`).
Every network trains for the same number of steps; test accuracy is on the digits' val and
test splits together (539 images; nothing is tuned on them). The answer: the gain of the
ImageNet initialization at each data size, and the depth from which freezing ImageNet
blocks costs accuracy (where the features become ImageNet-specific), against frozen random
blocks at the same depth.

**(b) AnB / BnB (Yosinski et al. 2014)** on PartsWorld. Its classes are split into A and B;
base A and base B are trained on their halves of the training images. For ``n = 1..5`` (the
five conv blocks of SimpleCNN; the classifier is the sixth layer) a target network for B
copies the first ``n`` blocks of base A (``AnB``) or base B (``BnB``), keeps them frozen and
trains the re-initialized rest on B; ``AnB+`` / ``BnB+`` fine-tune the copied blocks as well;
``random-frozen`` freezes the target's own random first ``n`` blocks (BatchNorm statistics
re-estimated on B's training images). Every network trains with the same recipe and batch
order; every condition is repeated for ``seeds`` seeds (bases included). Specificity starts
at the first ``n`` where AnB falls clearly below BnB (:data:`SPECIFICITY_MARGIN`).

**(c) Linear probes** on frozen features (:mod:`~interp.experiments.transfer_probes`).

Every trained network is a *cell*, one atomic JSON file under ``runs/transfer/`` keyed by
everything that makes it: an interrupted run resumes with the missing cells only, and a
changed setting retrains only the cells it changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..data.partsworld import CLASSES
from ..data.specs import load_data
from ..models.registry import load_model
from ..models.small import SimpleCNN
from ..utils import remove_stale_temps
from ._common import cached_cell, limited_threads
from .finetune import (
    lite_stages,
    reestimate_bn,
    set_train_mode,
)
from .registry import DOMAIN_SPECIFICITY, Experiment, register
from .results import ExperimentResult
from .transfer_anb import (
    ANB_CONDITIONS,
    anb_findings,
    anb_runs,
    block_names,
    check_split,
    copy_layers,
    train_classifier,
)
from .transfer_probes import (
    CNN_PROBE_LAYERS,
    LITE0_PROBE_LAYERS,
    LITE0_STAGE_ENDS,
    PRETTY,
    gap_features,
    linear_probe,
    probe_findings,
    run_probes,
    stack,
    to_size,
)
from .transfer_sweep import (
    CELL_VERSION,
    SPECIFICITY_MARGIN,
    analyse,
    fmt_interval,
    plural,
    sweep,
)

__all__ = [
    "ANB_CONDITIONS",
    "CELL_VERSION",
    "CNN_PROBE_LAYERS",
    "LITE0_FROZEN",
    "LITE0_PROBE_LAYERS",
    "SPECIFICITY_MARGIN",
    "TransferResult",
    "block_names",
    "copy_layers",
    "gap_features",
    "linear_probe",
    "reestimate_bn",
    "set_train_mode",
    "train_classifier",
    "transfer",
]

#: where the digits experiment may freeze EfficientNet-Lite0: its stage ends (with the stem),
#: then its 1x1 head convolution (everything but the new classifier)
LITE0_FROZEN = (*LITE0_STAGE_ENDS, "head")


# --------------------------------------------------------------------------- data


def digits_tensors(size: int) -> tuple[torch.Tensor, ...]:
    """scikit-learn's digits at ``size`` px as ``[0, 1]`` RGB: ``(x_train, y_train, x_test,
    y_test)``, the test images being the val and test splits together."""
    d = load_data("digits", size=size)
    x_tr, y_tr = stack(d.train)
    x_va, y_va = stack(d.val)
    x_te, y_te = stack(d.test)
    x_te, y_te = torch.cat([x_va, x_te]), torch.cat([y_va, y_te])
    return to_size(x_tr, size), y_tr, to_size(x_te, size), y_te


# --------------------------------------------------------------------------- experiment


def transfer(
    out: str | Path | None = None,
    *,
    runs: str | Path | None = None,
    seeds: int = 3,
    digits: bool = True,
    anb: bool = True,
    digits_size: int = 32,
    per_class: tuple = (10, 30, 100, None),
    frozen: tuple = LITE0_FROZEN,
    frozen_per_class: int | None = None,
    steps: int = 100,
    digits_batch: int = 32,
    digits_lr: float = 3e-3,
    size: int = 32,
    n: int = 5000,
    epochs: int = 8,
    width: float = 0.5,
    split: tuple = ((0, 1, 3), (2, 4, 5)),
    seed: int = 0,
    n_test: int | None = None,
    lr: float = 3e-3,
    batch_size: int = 64,
    lite0: bool = True,
    lite0_size: int = 64,
    bootstrap: int = 1000,
    threads: int | None = 1,
    progress: bool = True,
) -> TransferResult:
    """Run the transfer experiment (module docstring): (a) fine-tuning Lite0 on digits,
    (b) AnB / BnB, (c) linear probes.

    Args:
        out: folder for ``transfer.json`` (``interp experiment transfer`` draws the figures).
        runs: the cells' folder is ``runs/transfer`` (default ``out/runs``; with neither,
            nothing is cached).
        seeds: training seeds of every cell of (a) and (b).
        digits: run (a).
        anb: run (b) and (c) (the PartsWorld probes' source is (b)'s base A).
        digits_size: the digits' size for Lite0 (8 px upsampled; 32 px leaves Lite0's last
            stage a 1x1 map).
        per_class: (a)'s data sizes, labelled images per class (``None``: all).
        frozen: (a)'s frozen depths: the last frozen stage of Lite0 (its stem and blocks up
            to that one are frozen; ``head``: everything but the new classifier).
        frozen_per_class: the data size of (a)'s frozen depths.
        steps: optimizer steps of every network of (a), whatever its data size.
        digits_batch: (a)'s mini-batch size.
        digits_lr: (a)'s peak Adam learning rate, the same for both initializations.
        size: PartsWorld (and probe digits) image size in pixels.
        n: PartsWorld training images (all six classes; A and B get their own classes' share).
        epochs: training epochs of every network of (b).
        width: SimpleCNN width multiplier.
        split: the class indices of A and of B (PartsWorld classes 0..5).
        seed: the PartsWorld world (its images) and the first training seed.
        n_test: PartsWorld test images (another world; default ``n // 2``).
        lr: (b)'s peak Adam learning rate.
        batch_size: (b)'s mini-batch size.
        lite0: also probe efficientnet_lite0 (ImageNet vs random init) in (c).
        lite0_size: input size of Lite0 in (c).
        bootstrap: resamples of the paired bootstraps behind every interval.
        threads: torch (and BLAS) threads during (b) and (c), restored afterwards; ``None``
            leaves them as they are. (a) runs with the caller's threads.
        progress: tqdm progress bars.

    Returns:
        The summary; ``"findings"`` are sentences with this run's numbers. The caller's torch
        RNG state is left untouched.
    """
    a_cls, b_cls = check_split(split)
    if int(seeds) < 1:
        raise ValueError(f"seeds must be at least 1, got {seeds}")
    unknown = [name for name in frozen if name not in LITE0_FROZEN]
    if unknown:
        raise ValueError(f"frozen: unknown stage end(s) {unknown}: use {', '.join(LITE0_FROZEN)}")
    n_test = n_test if n_test is not None else max(60, n // 2)
    cells = None
    if runs is not None or out is not None:
        cells = (Path(runs) if runs is not None else Path(out) / "runs") / "transfer"  # type: ignore[arg-type]
        remove_stale_temps(cells)  # of a killed run's cell writes
    settings: dict[str, Any] = {
        "seeds": int(seeds),
        "digits": digits,
        "anb": anb,
        "digits_size": digits_size,
        "per_class": list(per_class),
        "frozen": list(frozen),
        "frozen_per_class": frozen_per_class,
        "steps": steps,
        "digits_batch": digits_batch,
        "digits_lr": digits_lr,
        "size": size,
        "n": n,
        "n_test": n_test,
        "epochs": epochs,
        "width": width,
        "seed": seed,
        "split": [list(a_cls), list(b_cls)],
        "class_names": [[CLASSES[c] for c in a_cls], [CLASSES[c] for c in b_cls]],
        "lr": lr,
        "batch_size": batch_size,
        "lite0": lite0,
        "lite0_size": lite0_size,
        "optimizer": "Adam, linear warm-up (10% of steps) then cosine decay",
        "bootstrap": bootstrap,
        "specificity_margin": SPECIFICITY_MARGIN,
        "threads": threads,
    }
    data_info: dict[str, Any] = {}
    doc: dict[str, Any] = {"experiment": "transfer", "settings": settings, "data": data_info}
    with torch.random.fork_rng(devices=[]):
        if digits:
            doc["digits"] = _digits(settings, cells, progress, data_info)
        if anb:
            with limited_threads(threads, blas=True):
                split = (a_cls, b_cls)
                doc["anb"], base_a = anb_runs(settings, split, cells, progress, data_info)
                doc["conditions"] = dict(ANB_CONDITIONS)
                doc["probes"] = _probes(settings, base_a, split, cells, progress, data_info)
    findings = []
    if digits:
        findings += _digits_findings(doc["digits"], settings)
    if anb:
        findings += anb_findings(doc["anb"], settings)
        findings += probe_findings(doc["probes"])
    doc["findings"] = findings
    doc["notes"] = _notes(settings)
    result = TransferResult(doc)
    if out is not None:
        result.save(out)
    return result


# --------------------------------------------------------------------------- (a) digits


def _digits(
    settings: dict[str, Any], cells: Path | None, progress: bool, info: dict[str, Any]
) -> dict[str, Any]:
    """Lite0 fine-tuned on digits from ImageNet and from random init (module docstring)."""
    pre = load_model("efficientnet_lite0", device="cpu", quiet=True)
    x_tr, y_tr, x_te, y_te = digits_tensors(settings["digits_size"])
    data = (pre.normalize(x_tr), y_tr, pre.normalize(x_te), y_te)
    info["digits_finetune"] = {
        "train": len(y_tr),
        "test": len(y_te),
        "train_per_class": np.bincount(y_tr.numpy()).tolist(),
    }
    base = 1_000_003 * int(settings["seed"])
    seeds = [base + 31 + 100 * s for s in range(settings["seeds"])]

    def imagenet(s: int):
        return lite_stages(pre.module, 10, seed=s)

    def random(s: int):
        net = load_model("efficientnet_lite0", device="cpu", weights="none", seed=s + 1)
        return lite_stages(net.module, 10, seed=s)

    names = imagenet(0).names
    depths = [names.index(name) + 1 for name in settings["frozen"]]
    raw = sweep(
        {"imagenet": imagenet, "random": random},
        data,
        per_class=settings["per_class"],
        depths=depths,
        depth_per_class=settings["frozen_per_class"],
        seeds=seeds,
        settle=("random",),
        steps=settings["steps"],
        batch_size=settings["digits_batch"],
        lr=settings["digits_lr"],
        bn_momentum=0.1,
        cells=None if cells is None else cells / "digits",
        key={
            "model": "efficientnet_lite0",
            "data": "digits",
            "size": settings["digits_size"],
            "version": CELL_VERSION,
        },
        progress=progress,
        desc="transfer: Lite0 on digits",
    )
    analysis = analyse(
        raw,
        pretrained="imagenet",
        control="random",
        depth_names={d: names[d - 1] for d in depths},
        resamples=settings["bootstrap"],
        seed=int(settings["seed"]),
    )
    accs = {
        part: {init: {k: cell["acc"] for k, cell in per.items()} for init, per in raw[part].items()}
        for part in ("per_class", "frozen")
    }
    seconds = sum(
        sum(c["seconds"])
        for p in ("per_class", "frozen")
        for i in raw[p].values()
        for c in i.values()
    )
    return {
        "accuracy": accs,
        "frozen_per_class": raw["frozen_per_class"],
        "seeds": seeds,
        "test_images": len(y_te),
        "seconds": round(seconds, 1),
        **analysis,
    }


# --------------------------------------------------------------------------- (c) probes


def _probes(
    settings: dict[str, Any],
    base_a: Callable[[], SimpleCNN],
    split: tuple[tuple[int, ...], tuple[int, ...]],
    cells: Path | None,
    progress: bool,
    info: dict[str, Any],
) -> dict[str, Any]:
    pw_b = info.pop("_pw_b_pixels")
    base_seed = 1_000_003 * int(settings["seed"])
    key = {
        "part": "probes",
        **{k: settings[k] for k in ("size", "n", "n_test", "width", "seed", "split", "epochs")},
        **{k: settings[k] for k in ("lr", "batch_size", "lite0", "lite0_size")},
        "version": CELL_VERSION,
    }
    digits = load_data("digits")
    info["digits"] = {"train": len(digits.train), "test": len(digits.test)}
    info["partsworld_b_probe"] = {"train": len(pw_b[1]), "test": len(pw_b[3])}

    def compute() -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(base_seed + 14)
            random_net = SimpleCNN(len(split[0]), 3, settings["width"], batchnorm=True)
        return run_probes(
            base_a(),
            random_net,
            pw_b,
            size=settings["size"],
            lite0=settings["lite0"],
            lite0_size=settings["lite0_size"],
            lite0_seed=int(settings["seed"]) + 1,
            progress=progress,
        )

    return cached_cell(cells, "probes", key, compute)[0]


# --------------------------------------------------------------------------- findings


def _digits_findings(d: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    seeds = len(d["seeds"])
    rows = d["per_class"]
    sizes = ", ".join(r["per_class"] for r in rows)
    out = [
        f"Fine-tuning EfficientNet-Lite0 on digits ({settings['digits_size']} px, "
        f"{settings['steps']} steps of {settings['digits_batch']} images whatever the data "
        f"size, {plural(seeds, 'seed')}, {d['test_images']} "
        f"test images) with {sizes} labelled images per class: from "
        "ImageNet weights it reaches "
        + ", ".join(f"{r['imagenet']['mean']:.3f}" for r in rows)
        + ", from random init "
        + ", ".join(f"{r['random']['mean']:.3f}" for r in rows)
        + "; the ImageNet initialization gains "
        + ", ".join(fmt_interval(r["gain"], True) for r in rows)
        + " (95% intervals over seeds and test images)."
    ]
    frozen = d["frozen"][1:]
    if frozen:
        size = d["frozen_per_class"]
        whole = d["frozen"][0]["imagenet"]["mean"]
        costs = "; ".join(f"{r['through']} {fmt_interval(r['cost'], True)}" for r in frozen)
        spec = d["specific_from"]
        where = (
            f"freezing costs more than {SPECIFICITY_MARGIN} (interval above 0) from "
            f"{spec['through']} on: the ImageNet features are ImageNet-specific from there"
            if spec
            else f"no frozen depth costs more than {SPECIFICITY_MARGIN} with an interval above "
            "0: even the deepest ImageNet features serve the digits as well as fine-tuning them"
        )
        out.append(
            f"Freezing Lite0's ImageNet stem and blocks (trained on {size} images per class; "
            f"fine-tuned whole it reaches {whole:.3f}) costs, frozen through: {costs}; "
            f"{where}."
        )
        helps = "; ".join(f"{r['through']} {fmt_interval(r['help'], True)}" for r in frozen)
        worst = min(frozen, key=lambda r: r["help"]["mean"])
        out.append(
            "Against random blocks frozen at the same depth (their BatchNorm statistics "
            f"re-estimated on the digits), frozen ImageNet blocks give: {helps}; the least at "
            f"{worst['through']} ({worst['random']['mean']:.3f} random-frozen vs "
            f"{worst['imagenet']['mean']:.3f})."
        )
    return out


def _notes(settings: dict[str, Any]) -> list[str]:
    return [
        "(a) EfficientNet-Lite0 is cut into its stem, its 16 MBConv blocks and its 1x1 head "
        "convolution; a new linear classifier (10 digits) replaces its ImageNet one. Frozen "
        "depths are stage ends; frozen stages keep BatchNorm in eval mode (ImageNet: the "
        "stored statistics; random init: statistics re-estimated on the cell's training "
        "images). Trained BatchNorm layers use momentum 0.1 (the weights' TensorFlow 0.01 "
        "would leave the running statistics far behind a short fine-tuning). Adam at "
        f"{settings['digits_lr']} for both initializations, {settings['steps']} steps of "
        f"{settings['digits_batch']}, no augmentation; a seed fixes the data subset, the "
        "classifier's init, the random init and the batch order, the same for both "
        "initializations. Test images: the digits' val and test splits (539).",
        "Intervals: 95% percentile bootstrap, each resample drawing seeds and test images with "
        f"replacement, paired between conditions ({settings['bootstrap']} resamples).",
        "(b) AnB/BnB layers: the five conv blocks (conv + BatchNorm) of SimpleCNN; the "
        "classifier is the sixth. Frozen copied blocks keep BatchNorm in eval mode with the "
        "stored statistics and requires_grad False; in random-frozen the frozen random "
        "blocks' BatchNorm statistics are re-estimated on B's training images first. Every "
        "network of one seed: the same epochs, learning-rate schedule and batch order, and "
        "the same init of the layers that are not copied.",
        "(c) Probe features: each layer's activation averaged over space, standardized; "
        "logistic regression trained on the target's training images. Random-init sources "
        "have their BatchNorm statistics re-estimated on the target's training images. The "
        "PartsWorld CNN source is base A of the first seed; PartsWorld-B was held out of its "
        f"training. Lite0 sees {settings['lite0_size']} px inputs in the probes.",
    ]


@dataclass(eq=False)
class TransferResult(ExperimentResult):
    """The transfer experiment's document: settings, data sizes, (a) the digits fine-tuning
    cells' analysis, (b) AnB / BnB with intervals and the specificity rule, (c) the linear
    probes, findings."""

    json_name: ClassVar[str] = "transfer.json"
    #: the names the findings and figures give sources and targets
    pretty_names: ClassVar[dict[str, str]] = PRETTY


register(
    Experiment(
        "transfer",
        transfer,
        TransferResult,
        questions={DOMAIN_SPECIFICITY: 1},
        figures=("transfer_digits", "transfer_anb", "transfer_probes"),
        seeds=("seeds", "training seeds of every fine-tuned network (default 3)"),
        presets={
            "light": {"seeds": 1, "per_class": (10, None), "frozen": (), "anb": False},
            "quick": {
                "seeds": 1,
                "per_class": (10, None),
                "frozen": ("_blocks.4", "head"),
                "steps": 8,
                "n": 240,
                "n_test": 120,
                "size": 16,
                "epochs": 1,
                "width": 0.25,
                "lite0": False,
                "bootstrap": 200,
            },
        },
    )
)
