"""Transfer: how general, how specific are the features of each layer?

Two measurements, both on CPU-sized data:

**(a) Linear probes on frozen features.** A source network is frozen; each probed layer's
activation is global-average-pooled over space (one number per channel) and a logistic
regression (standardized features) is trained on a *target* task's training images and
scored on its test images. Targets: scikit-learn's handwritten ``digits`` (10 classes) and
``PartsWorld-B`` (the PartsWorld classes held out of the source's training). Sources:

* the PartsWorld CNN (:class:`~interp.models.small.SimpleCNN`) trained on classes A (the
  "base A" network of part (b)) versus the same architecture at a random init (another
  seed, no training);
* ``efficientnet_lite0`` with its ImageNet weights versus a random-init lite0.

Random-init controls have their BatchNorm running statistics re-estimated on a few batches
of the target's training images, so they are not handicapped by the default (0, 1)
statistics; trained sources keep their stored statistics.

**(b) AnB / BnB (Yosinski et al. 2014).** PartsWorld's classes are split into A and B; base
A and base B are trained on their halves of the training images. For ``n = 1..5`` (the five
conv blocks, conv + BatchNorm, of SimpleCNN; the classifier is the sixth layer) a target
network for B copies the first ``n`` blocks of base A (``AnB``) or base B (``BnB``), keeps
them frozen (``requires_grad`` off, BatchNorm in eval mode with the stored statistics) and
trains the re-initialized rest on B; ``AnB+`` / ``BnB+`` fine-tune the copied blocks as
well; ``random-frozen`` freezes the target network's own random first ``n`` blocks (their
BatchNorm statistics re-estimated on B's training images). Every network trains with the
same recipe, epochs and batch order, and is scored on B's test images. Specificity starts at
the first ``n`` where AnB falls clearly below BnB (see :data:`SPECIFICITY_MARGIN`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..activations import ActivationCapture
from ..data.partsworld import CLASSES, partsworld_tensors
from ..data.specs import load_data
from ..models.base import reestimate_batchnorm
from ..models.registry import load_model
from ..models.small import SimpleCNN
from ..train import fit
from ._common import limited_threads, simplecnn_input
from .registry import DOMAIN_SPECIFICITY, Experiment, register
from .results import ExperimentResult

__all__ = [
    "ANB_CONDITIONS",
    "CNN_PROBE_LAYERS",
    "LITE0_PROBE_LAYERS",
    "SPECIFICITY_MARGIN",
    "TransferResult",
    "block_names",
    "copy_layers",
    "freeze_layers",
    "gap_features",
    "linear_probe",
    "reestimate_bn",
    "set_train_mode",
    "train_classifier",
    "transfer",
]

#: the AnB conditions, in plotting order, with their descriptions
ANB_CONDITIONS: dict[str, str] = {
    "AnB": "first n blocks copied from base A, frozen; rest re-initialized and trained on B",
    "AnB+": "first n blocks copied from base A and fine-tuned with the rest on B",
    "BnB": "first n blocks copied from base B, frozen; rest re-initialized and trained on B",
    "BnB+": "first n blocks copied from base B and fine-tuned with the rest on B",
    "random-frozen": "first n blocks at random init (BN statistics re-estimated), frozen",
}
CNN_PROBE_LAYERS = [f"features.relu{i}" for i in range(1, 6)]
LITE0_PROBE_LAYERS = [
    "_act_stem",
    "_blocks.0",
    "_blocks.2",
    "_blocks.4",
    "_blocks.7",
    "_blocks.10",
    "_blocks.14",
    "_blocks.15",
]
#: AnB must be below BnB by more than this (and the bootstrap CI must exclude 0)
SPECIFICITY_MARGIN = 0.03
N_BLOCKS = 5


# --------------------------------------------------------------------------- layer surgery


def block_names(n: int, model: SimpleCNN | None = None) -> list[str]:
    """Module names (inside ``features``) of conv block ``n``: ``convN`` and ``bnN`` if any."""
    names = [f"conv{n}", f"bn{n}"]
    if model is None:
        return names
    return [k for k in names if k in model.features._modules]


def _prefix_end(model: SimpleCNN, n: int) -> int:
    """Index in ``model.features`` just after block ``n`` (its ReLU and pooling, if any)."""
    if n <= 0:
        return 0
    keys = list(model.features._modules)
    end = keys.index(f"relu{n}") + 1
    if end < len(keys) and keys[end] == f"pool{n}":
        end += 1
    return end


def copy_layers(src: SimpleCNN, dst: SimpleCNN, n: int) -> SimpleCNN:
    """Copy conv blocks ``1..n`` (conv weights/biases, BatchNorm parameters and running
    statistics) from ``src`` into ``dst`` in place; every other tensor of ``dst`` is left as
    it was. Returns ``dst``."""
    if not 0 <= n <= N_BLOCKS:
        raise ValueError(f"n must be in 0..{N_BLOCKS}, got {n}")
    with torch.no_grad():
        for i in range(1, n + 1):
            for name in block_names(i, dst):
                s_mod = src.features.get_submodule(name)
                d_mod = dst.features.get_submodule(name)
                d_state = d_mod.state_dict()
                for key, value in s_mod.state_dict().items():
                    d_state[key].copy_(value)
    return dst


def freeze_layers(model: SimpleCNN, n: int) -> SimpleCNN:
    """``requires_grad`` off for conv blocks ``1..n`` and on for every other parameter."""
    frozen = {
        id(p)
        for i in range(1, n + 1)
        for name in block_names(i, model)
        for p in model.features.get_submodule(name).parameters()
    }
    for p in model.parameters():
        p.requires_grad_(id(p) not in frozen)
    return model


def set_train_mode(model: SimpleCNN, frozen: int) -> SimpleCNN:
    """Train mode, except conv blocks ``1..frozen`` (their BatchNorm uses stored statistics)."""
    model.train()
    for i in range(1, frozen + 1):
        for name in block_names(i, model):
            model.features.get_submodule(name).eval()
    return model


# --------------------------------------------------------------------------- training


def _forward_from(model: SimpleCNN, h: torch.Tensor, start: int) -> torch.Tensor:
    """The logits for ``h``, the output of ``model.features[:start]``."""
    for module in list(model.features)[start:]:
        h = module(h)
    return model.fc(model.dropout(model.pool(h).flatten(1)))


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bs: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + bs]) for i in range(0, len(x), bs)])


def train_classifier(
    model: SimpleCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    frozen: int = 0,
    cache_frozen: bool = True,
    on_step: Callable[[], Any] | None = None,
) -> SimpleCNN:
    """Train ``model`` on normalized images ``x`` and labels ``y`` in place; returns it.

    Adam with a short linear warm-up and cosine decay of the learning rate, cross-entropy,
    mini-batches drawn by a generator seeded with ``seed`` (the same order for every model
    trained with that seed). The first ``frozen`` conv blocks are frozen: no gradient, and
    their BatchNorm in eval mode (stored statistics). With ``cache_frozen`` their output is
    computed once (exactly what they would compute every step) and only the rest is run per
    step. The model is left in eval mode.
    """
    freeze_layers(model, frozen)
    params = [p for p in model.parameters() if p.requires_grad]
    start = _prefix_end(model, frozen) if cache_frozen else 0
    inputs = x
    if start:
        prefix = model.features[:start]
        prefix.eval()
        inputs = _batched(prefix, x, 256)
    steps = max(1, epochs * math.ceil(len(y) / batch_size))
    warm = max(1, steps // 10)
    fit(
        model,
        (inputs, y),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        params=params,
        schedule=lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / steps)),
        generator=torch.Generator().manual_seed(int(seed)),
        forward=lambda h: _forward_from(model, h, start),
        train_mode=lambda m: set_train_mode(m, frozen),
        on_step=None if on_step is None else lambda _: on_step(),
    )
    model.eval()
    return model


def _correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Per-image correctness (bool array) of ``model`` in eval mode."""
    model.eval()
    logits = _batched(model, x, 256)
    return (logits.argmax(1) == y).numpy()


# --------------------------------------------------------------------------- probes


def reestimate_bn(
    module: nn.Module, x: torch.Tensor, *, batch_size: int = 128, max_batches: int = 8
) -> nn.Module:
    """Recompute every BatchNorm's running statistics as the average over the first
    ``max_batches`` batches of ``x`` (:func:`interp.models.base.reestimate_batchnorm`: modes
    and momenta restored). Returns ``module``."""
    stop = min(len(x), batch_size * max_batches)
    reestimate_batchnorm(module, (x[i : i + batch_size] for i in range(0, stop, batch_size)))
    return module


def gap_features(
    module: nn.Module, x: torch.Tensor, layers: Sequence[str], *, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """Global-average-pooled activations ``{layer: (N, channels)}`` of ``module`` (eval mode)
    on the model input ``x``; the forward pass stops after the last requested layer."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    with torch.no_grad(), ActivationCapture(module, list(layers)) as cap:
        for i in range(0, len(x), batch_size):
            acts = cap.run(x[i : i + batch_size])
            for name, act in zip(layers, acts.values(), strict=True):
                pooled = act.mean(dim=(2, 3)) if act.ndim == 4 else act.flatten(1)
                parts[name].append(pooled.float().numpy())
    return {name: np.concatenate(v) for name, v in parts.items()}


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of a logistic regression on standardized features (scaler fitted on the
    training features)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=max_iter).fit(scaler.transform(x_train), y_train)
    return float(clf.score(scaler.transform(x_test), y_test))


# --------------------------------------------------------------------------- data


def _subset(
    x: torch.Tensor, y: torch.Tensor, classes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``classes``, relabelled ``0..len(classes)-1`` in the given order."""
    lookup = torch.full((int(y.max()) + 1,), -1, dtype=torch.long)
    for k, c in enumerate(classes):
        if c < len(lookup):
            lookup[c] = k
    keep = lookup[y] >= 0
    return x[keep], lookup[y[keep]]


def _stack(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([im for im, _ in items]), torch.tensor([int(lab) for _, lab in items])


def _resize(pixels: torch.Tensor, size: int) -> torch.Tensor:
    if pixels.shape[1] == 1:
        pixels = pixels.repeat(1, 3, 1, 1)
    if pixels.shape[-1] == size:
        return pixels
    return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp(
        0, 1
    )


# --------------------------------------------------------------------------- analysis


def _bootstrap_gap(
    better: np.ndarray, worse: np.ndarray, resamples: int, seed: int
) -> tuple[float, float, float]:
    """Paired bootstrap over test images of ``mean(better) - mean(worse)``: (gap, lo, hi)."""
    diff = better.astype(np.float64) - worse.astype(np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(resamples, len(diff)))
    boots = diff[idx].mean(axis=1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return float(diff.mean()), float(lo), float(hi)


def _specificity(anb: dict[str, Any], resamples: int, seed: int) -> dict[str, Any]:
    rows = []
    first = None
    for k, n in enumerate(anb["n"]):
        bnb, anb_ok = anb["_correct"]["BnB"][k], anb["_correct"]["AnB"][k]
        gap, lo, hi = _bootstrap_gap(bnb, anb_ok, resamples, seed + n)
        specific = gap > SPECIFICITY_MARGIN and lo > 0
        rows.append({"n": n, "bnb_minus_anb": gap, "ci95": [lo, hi], "specific": specific})
        if specific and first is None:
            first = n
    return {
        "rule": f"first n with BnB - AnB > {SPECIFICITY_MARGIN} and the 95% paired bootstrap "
        f"interval (over B's test images, {resamples} resamples) above 0",
        "n": first,
        "layer": f"conv{first}" if first is not None else None,
        "per_n": rows,
    }


_PRETTY = {
    "simplecnn": "PartsWorld CNN",
    "efficientnet_lite0": "efficientnet_lite0",
    "digits": "digits",
    "partsworld_b": "PartsWorld-B",
}


def _probe_findings(probes: dict[str, Any]) -> list[str]:
    out = []
    for family, per_target in probes.items():
        trained_name = "ImageNet" if family == "efficientnet_lite0" else "trained (base A)"
        for target, res in per_target.items():
            tr, rd = res["trained"], res["random"]
            layers = list(tr)
            best = max(layers, key=lambda name: tr[name])
            gaps = {name: tr[name] - rd[name] for name in layers}
            widest = max(layers, key=lambda name: abs(gaps[name]))
            wins = sum(g > 0 for g in gaps.values())
            best_rd = max(layers, key=lambda name: rd[name])
            out.append(
                f"On {_PRETTY[target]} ({res['classes']} classes, chance {1 / res['classes']:.2f})"
                f", the {trained_name} {_PRETTY[family]}'s best probed layer is {best} "
                f"({tr[best]:.3f}) vs {rd[best]:.3f} from random init at that layer (random "
                f"init's best: {best_rd}, {rd[best_rd]:.3f}); trained beats random at {wins} "
                f"of {len(layers)} layers, mean difference {np.mean(list(gaps.values())):+.3f}, "
                f"largest at {widest} ({gaps[widest]:+.3f})."
            )
    return out


def _anb_findings(anb: dict[str, Any], spec: dict[str, Any], settings: dict) -> list[str]:
    ns = anb["n"]
    base_b, base_a = anb["base_b"], anb["base_a"]
    k_a, k_b = len(settings["split"][0]), len(settings["split"][1])

    def seq(name: str) -> str:
        return ", ".join(f"{v:.3f}" for v in anb[name])

    out = [
        f"Base A reaches {base_a:.3f} test accuracy on its {k_a} classes (chance "
        f"{1 / k_a:.2f}) and base B {base_b:.3f} on its {k_b} (chance {1 / k_b:.2f}); one "
        f"training seed ({settings['seed']}), {settings['epochs']} epochs each.",
    ]
    drop = [b - a for a, b in zip(anb["AnB"], anb["BnB"], strict=True)]
    cheap = [n for n, d in zip(ns, drop, strict=True) if d <= SPECIFICITY_MARGIN]
    last_cheap = 0
    for n, d in zip(ns, drop, strict=True):
        if d > SPECIFICITY_MARGIN:
            break
        last_cheap = n
    out.append(
        f"Frozen transfer from A (AnB) for n = {ns[0]}..{ns[-1]}: {seq('AnB')} vs BnB "
        f"{seq('BnB')}; AnB is within {SPECIFICITY_MARGIN} of BnB for n = "
        f"{', '.join(map(str, cheap)) or 'none'} (contiguously up to n = {last_cheap}) and "
        f"{max(drop):.3f} below it at worst (n = {ns[int(np.argmax(drop))]}). Yosinski et al. "
        "(2014) found frozen transfer of the first n of 7 layers costs little up to n = 3 "
        "and then drops."
    )
    if spec["n"] is not None:
        row = spec["per_n"][spec["n"] - 1]
        out.append(
            f"Specificity starts at n = {spec['n']} ({spec['layer']}): BnB - AnB = "
            f"{row['bnb_minus_anb']:.3f} (95% CI {row['ci95'][0]:.3f}..{row['ci95'][1]:.3f}); "
            f"rule: {spec['rule']}; one training seed."
        )
    else:
        out.append(
            f"No n meets the specificity rule ({spec['rule']}): within this run, the frozen "
            "features of base A serve task B about as well as base B's own (one training seed)."
        )
    bnb_dip = base_b - min(anb["BnB"])
    where = "below" if bnb_dip >= 0 else "above"
    out.append(
        f"BnB (self-transfer, frozen) is lowest at n = {ns[int(np.argmin(anb['BnB']))]} with "
        f"{min(anb['BnB']):.3f}, {abs(bnb_dip):.3f} {where} base B ({base_b:.3f}); Yosinski et al. "
        "saw a dip at middle layers (fragile co-adaptation) that fine-tuning (BnB+) removes; "
        f"here BnB+ is {seq('BnB+')}."
    )
    plus = np.array(anb["AnB+"]) - base_b
    out.append(
        f"Fine-tuned transfer (AnB+) gives {seq('AnB+')}: {np.mean(plus):+.3f} on average vs "
        f"base B ({base_b:.3f}), above it at {int((plus > 0).sum())} of {len(ns)} n; Yosinski "
        "et al. found fine-tuned transfer beats the base network at every n."
    )
    rf = anb["random-frozen"]
    out.append(
        f"Frozen random layers (random-frozen) give {seq('random-frozen')}: {rf[0] - base_b:+.3f} "
        f"vs base B at n = {ns[0]} and {rf[-1] - base_b:+.3f} at n = {ns[-1]}, vs AnB "
        f"{anb['AnB'][0] - base_b:+.3f} and {anb['AnB'][-1] - base_b:+.3f}; Yosinski et al. "
        "found frozen random layers lose accuracy fast (already at n = 1-2)."
    )
    return out


# --------------------------------------------------------------------------- experiment


def _check_split(split: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    a, b = (tuple(int(c) for c in s) for s in split)
    every = a + b
    if not a or not b or len(set(every)) != len(every) or not set(every) <= set(range(6)):
        raise ValueError(
            f"split must be two disjoint, non-empty sets of classes 0..{len(CLASSES) - 1}, "
            f"got {split}"
        )
    return a, b


def transfer(
    out: str | Path | None = None,
    *,
    size: int = 32,
    n: int = 3000,
    epochs: int = 8,
    width: float = 0.5,
    seed: int = 0,
    split: tuple = ((0, 1, 2), (3, 4, 5)),
    lite0: bool = True,
    progress: bool = True,
    n_test: int | None = None,
    lr: float = 3e-3,
    batch_size: int = 64,
    lite0_size: int = 64,
    bootstrap: int = 1000,
    threads: int | None = 1,
) -> TransferResult:
    """Run the transfer experiment: (a) linear probes, (b) AnB / BnB (see the module doc).

    Args:
        out: folder for ``transfer.json`` (``interp experiment transfer`` draws
            ``transfer_probes.png`` and ``transfer_anb.png`` too).
        size: PartsWorld (and digits) image size in pixels.
        n: PartsWorld training images (all six classes; A and B get their own classes' share).
        epochs: training epochs of every network (base A, base B, each AnB/BnB variant).
        width: SimpleCNN width multiplier.
        seed: seeds the worlds, the inits and the batch order.
        split: the class indices of A and of B (PartsWorld classes 0..5).
        lite0: also probe efficientnet_lite0 (ImageNet vs random init).
        progress: tqdm progress bars.
        n_test: PartsWorld test images (another world; default ``n // 2``).
        lr: Adam's peak learning rate.
        batch_size: training mini-batch size.
        lite0_size: input size for lite0 (images are resized to it).
        bootstrap: resamples of the paired bootstrap behind the specificity rule.
        threads: torch (and BLAS) threads during the run, restored afterwards; ``None``
            leaves them as they are. 1 by default: these small networks gain little from
            more, and on a shared CPU several threads are many times slower than one.

    Returns:
        The summary; ``"findings"`` are sentences with this run's numbers. The caller's torch
        RNG state is left untouched.
    """

    a_cls, b_cls = _check_split(split)
    n_test = n_test if n_test is not None else max(60, n // 2)
    base_seed = 1_000_003 * int(seed)
    settings: dict[str, Any] = {
        "size": size,
        "n": n,
        "n_test": n_test,
        "epochs": epochs,
        "width": width,
        "seed": seed,
        "split": [list(a_cls), list(b_cls)],
        "lite0": lite0,
        "lite0_size": lite0_size,
        "lr": lr,
        "batch_size": batch_size,
        "optimizer": "Adam, linear warm-up (10% of steps) then cosine decay",
        "bootstrap": bootstrap,
        "specificity_margin": SPECIFICITY_MARGIN,
        "threads": threads,
    }

    settings["class_names"] = [[CLASSES[c] for c in a_cls], [CLASSES[c] for c in b_cls]]

    def make(classes: int, init_seed: int) -> SimpleCNN:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return SimpleCNN(classes, 3, width, batchnorm=True)

    seeds = {"base_a": base_seed + 11, "base_b": base_seed + 12, "target": base_seed + 13}
    seeds |= {"probe_random": base_seed + 14, "lite0_random": int(seed) + 1}
    settings["init_seeds"] = seeds

    with limited_threads(threads, blas=True), torch.random.fork_rng(devices=[]):
        torch.manual_seed(base_seed)
        x_tr, y_tr = partsworld_tensors(n, size, base_seed + 1)
        x_te, y_te = partsworld_tensors(n_test, size, base_seed + 3)
        xa, ya = _subset(x_tr, y_tr, a_cls)
        xb, yb = _subset(x_tr, y_tr, b_cls)
        xa_te, ya_te = _subset(x_te, y_te, a_cls)
        xb_te, yb_te = _subset(x_te, y_te, b_cls)
        if min(len(xa), len(xb), len(xa_te), len(xb_te)) == 0:
            raise ValueError("n / n_test too small: a class split has no images")
        data_info = {
            "A": {"train": len(ya), "test": len(ya_te)},
            "B": {"train": len(yb), "test": len(yb_te)},
        }
        ia, ib, ib_te = simplecnn_input(xa), simplecnn_input(xb), simplecnn_input(xb_te)

        recipe = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": base_seed + 21}
        base_a, anb = _anb(
            make,
            seeds,
            (ia, ya, simplecnn_input(xa_te), ya_te),
            (ib, yb, ib_te, yb_te),
            recipe,
            progress,
            (len(a_cls), len(b_cls)),
        )
        anb["specificity"] = _specificity(anb, bootstrap, int(seed))
        del anb["_correct"]

        probes = _run_probes(
            base_a,
            make(len(a_cls), seeds["probe_random"]),
            (xb, yb, xb_te, yb_te),
            size=size,
            lite0=lite0,
            lite0_size=lite0_size,
            lite0_seed=seeds["lite0_random"],
            progress=progress,
            info=data_info,
        )

    summary: dict[str, Any] = {
        "experiment": "transfer",
        "settings": settings,
        "data": data_info,
        "conditions": dict(ANB_CONDITIONS),
        "probes": probes,
        "anb": anb,
        "findings": _probe_findings(probes) + _anb_findings(anb, anb["specificity"], settings),
        "notes": _notes(settings),
    }
    result = TransferResult(summary)
    if out is not None:
        result.save(out)
    return result


def _anb(
    make: Callable[[int, int], SimpleCNN],
    seeds: dict[str, int],
    a: tuple[torch.Tensor, ...],
    b: tuple[torch.Tensor, ...],
    recipe: dict[str, Any],
    progress: bool,
    classes: tuple[int, int],
) -> tuple[SimpleCNN, dict[str, Any]]:
    """Base A, base B and every AnB condition for n = 1..5 (module docstring): base A and the
    accuracies (with each test image's correctness under ``"_correct"``, for the bootstrap).
    ``a`` and ``b``: (train inputs, labels, test inputs, labels) of A and of B."""
    from tqdm.auto import tqdm

    ia, ya, ia_te, ya_te = a
    ib, yb, ib_te, yb_te = b
    k_a, k_b = classes
    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps_full = epochs * math.ceil(len(yb) / batch_size)
    total = epochs * math.ceil(len(ya) / batch_size) + steps_full * (1 + 5 * N_BLOCKS)
    bar = tqdm(total=total, desc="transfer: AnB/BnB", disable=not progress)
    try:
        bar.set_postfix_str("base A")
        base_a = train_classifier(make(k_a, seeds["base_a"]), ia, ya, on_step=bar.update, **recipe)
        bar.set_postfix_str("base B")
        base_b = train_classifier(make(k_b, seeds["base_b"]), ib, yb, on_step=bar.update, **recipe)
        anb: dict[str, Any] = {
            "base_a": float(_correct(base_a, ia_te, ya_te).mean()),
            "base_b": float(_correct(base_b, ib_te, yb_te).mean()),
            "n": list(range(1, N_BLOCKS + 1)),
            **{name: [] for name in ANB_CONDITIONS},
            "_correct": {name: [] for name in ANB_CONDITIONS},
        }
        for k in anb["n"]:
            for name in ANB_CONDITIONS:
                bar.set_postfix_str(f"{name} n={k}")
                net = make(k_b, seeds["target"])
                if name == "random-frozen":
                    reestimate_bn(net.features[: _prefix_end(net, k)], ib)
                else:
                    copy_layers(base_a if name.startswith("A") else base_b, net, k)
                frozen = 0 if name.endswith("+") else k
                train_classifier(net, ib, yb, frozen=frozen, on_step=bar.update, **recipe)
                correct = _correct(net, ib_te, yb_te)
                anb[name].append(float(correct.mean()))
                anb["_correct"][name].append(correct)
    finally:
        bar.close()
    return base_a, anb


def _notes(settings: dict[str, Any]) -> list[str]:
    return [
        "Probe features: each layer's activation averaged over space (global average "
        "pooling), standardized; logistic regression (max_iter 1000) trained on the "
        "target's training images, accuracy on its test images.",
        "Random-init controls (SimpleCNN built under another seed, lite0 with "
        "weights='none') are untrained; their BatchNorm running statistics are "
        "re-estimated on up to 8 batches of 128 of the target's training images "
        "(BatchNorm in train mode with momentum=None, no gradients). Trained sources keep "
        "their stored statistics.",
        "The PartsWorld CNN source of the probes is base A (trained on classes "
        f"{settings['class_names'][0]}); PartsWorld-B ({settings['class_names'][1]}) was "
        "held out of its training. Digits are grey, repeated to 3 channels.",
        f"efficientnet_lite0 sees {settings['lite0_size']} px inputs (PartsWorld images "
        f"bilinearly resized from {settings['size']} px, digits loaded at "
        f"{settings['lite0_size']} px), far below its 224 px, to fit a CPU budget."
        if settings["lite0"]
        else "efficientnet_lite0 not probed (lite0=False).",
        "AnB/BnB layers: the five conv blocks (conv + BatchNorm) of SimpleCNN; the "
        "classifier is the sixth. Frozen copied blocks keep BatchNorm in eval mode with "
        "the stored statistics and requires_grad False; in random-frozen the frozen random "
        "blocks' BatchNorm statistics are re-estimated on B's training images first. "
        "Non-copied layers use the same random init in every condition.",
        "Every network: same epochs, learning-rate schedule and batch order; one training "
        "seed, so differences carry training noise as well as the test-set noise the "
        "bootstrap measures.",
    ]


def _run_probes(
    trained: SimpleCNN,
    random_net: SimpleCNN,
    pw_b: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    size: int,
    lite0: bool,
    lite0_size: int,
    lite0_seed: int,
    progress: bool,
    info: dict[str, Any],
) -> dict[str, Any]:
    """Linear-probe accuracy per source family, target, weights (trained/random) and layer."""
    from tqdm.auto import tqdm

    digits = load_data("digits", size=size)
    dg = (*_stack(digits.train), *_stack(digits.test))
    targets = {"digits": dg, "partsworld_b": pw_b}
    info["digits"] = {"train": len(dg[1]), "test": len(dg[3])}
    info["partsworld_b_probe"] = {"train": len(pw_b[1]), "test": len(pw_b[3])}
    sources: list[tuple[str, str, nn.Module, Callable, list[str]]] = [
        ("simplecnn", "trained", trained, simplecnn_input, CNN_PROBE_LAYERS),
        ("simplecnn", "random", random_net, simplecnn_input, CNN_PROBE_LAYERS),
    ]
    if lite0:
        pre = load_model("efficientnet_lite0", device="cpu", quiet=True)
        rnd = load_model("efficientnet_lite0", weights="none", seed=lite0_seed, device="cpu")
        lite_digits = load_data("digits", size=lite0_size)
        targets["digits_lite0"] = (*_stack(lite_digits.train), *_stack(lite_digits.test))

        def lite_in(pixels: torch.Tensor, model: Any = pre) -> torch.Tensor:
            return model.normalize(_resize(pixels, lite0_size))

        sources += [
            ("efficientnet_lite0", "trained", pre.module, lite_in, LITE0_PROBE_LAYERS),
            ("efficientnet_lite0", "random", rnd.module, lite_in, LITE0_PROBE_LAYERS),
        ]
    results: dict[str, Any] = {}
    bar = tqdm(total=len(sources) * 2, desc="transfer: probes", disable=not progress)
    try:
        for family, weights, module, prep, layers in sources:
            for target in ("digits", "partsworld_b"):
                bar.set_postfix_str(f"{family} {weights} -> {target}")
                key = "digits_lite0" if family != "simplecnn" and target == "digits" else target
                x_train, y_train, x_test, y_test = targets[key]
                inp_train, inp_test = prep(x_train), prep(x_test)
                state = None
                if weights == "random":  # BN statistics from this target's training images
                    state = {k: v.clone() for k, v in module.state_dict().items()}
                    reestimate_bn(module, inp_train)
                f_train = gap_features(module, inp_train, layers)
                f_test = gap_features(module, inp_test, layers)
                if state is not None:
                    module.load_state_dict(state)
                res = results.setdefault(family, {}).setdefault(
                    target, {"classes": int(y_train.max()) + 1, "trained": {}, "random": {}}
                )
                for layer in layers:
                    res[weights][layer] = linear_probe(
                        f_train[layer], y_train.numpy(), f_test[layer], y_test.numpy()
                    )
                bar.update()
    finally:
        bar.close()
    return results


@dataclass(eq=False)
class TransferResult(ExperimentResult):
    """The transfer experiment's document: settings, data sizes, the linear probes per source
    family, target and layer, AnB / BnB accuracies with the specificity rule, findings."""

    json_name: ClassVar[str] = "transfer.json"
    #: the names the findings and figures give sources and targets
    pretty_names: ClassVar[dict[str, str]] = _PRETTY


register(
    Experiment(
        "transfer",
        transfer,
        TransferResult,
        questions={DOMAIN_SPECIFICITY: 1},
        figures=("transfer_probes", "transfer_anb"),
    )
)
