"""AnB / BnB (Yosinski et al. 2014) on PartsWorld, over seeds: the transfer experiment's
part (b).

PartsWorld's classes are split into A and B; base A and base B are trained on their halves of
the training images. For ``n = 1..5`` (the five conv blocks of SimpleCNN; the classifier is
the sixth layer) a target network for B copies the first ``n`` blocks of base A (``AnB``) or
base B (``BnB``), keeps them frozen and trains the re-initialized rest on B; ``AnB+`` /
``BnB+`` fine-tune the copied blocks as well; ``random-frozen`` freezes the target's own
random first ``n`` blocks (BatchNorm statistics re-estimated on B's training images). Every
network of one seed trains with the same recipe and batch order; every trained network is a
cell (:func:`~interp.experiments._common.cached_cell`), a base with its weights beside it.
Specificity starts at the first ``n`` where AnB falls clearly below BnB
(:data:`~interp.experiments.transfer_sweep.SPECIFICITY_MARGIN`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.partsworld import CLASSES, partsworld_tensors
from ..models.small import SimpleCNN
from ..utils import atomic_path, settings_digest
from ._common import cached_cell, simplecnn_input
from .finetune import correct, finetune, reestimate_bn, simplecnn_stages
from .transfer_sweep import (
    CELL_VERSION,
    SPECIFICITY_MARGIN,
    encode,
    fmt_interval,
    paired_interval,
    plural,
    scores,
)

__all__ = [
    "ANB_CONDITIONS",
    "N_BLOCKS",
    "anb_findings",
    "anb_runs",
    "block_names",
    "check_split",
    "copy_layers",
    "subset",
    "train_classifier",
]
#: the AnB conditions, in plotting order, with their descriptions
ANB_CONDITIONS: dict[str, str] = {
    "AnB": "first n blocks copied from base A, frozen; rest re-initialized and trained on B",
    "AnB+": "first n blocks copied from base A and fine-tuned with the rest on B",
    "BnB": "first n blocks copied from base B, frozen; rest re-initialized and trained on B",
    "BnB+": "first n blocks copied from base B and fine-tuned with the rest on B",
    "random-frozen": "first n blocks at random init (BN statistics re-estimated), frozen",
}

N_BLOCKS = 5


# --------------------------------------------------------------------------- layer surgery


def block_names(n: int, model: SimpleCNN | None = None) -> list[str]:
    """Module names (inside ``features``) of conv block ``n``: ``convN`` and ``bnN`` if any."""
    names = [f"conv{n}", f"bn{n}"]
    if model is None:
        return names
    return [k for k in names if k in model.features._modules]


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
    """Train a SimpleCNN on inputs ``x`` and labels ``y`` in place with its first ``frozen``
    conv blocks frozen (:func:`~interp.experiments.finetune.finetune` on its five blocks);
    returns it in eval mode."""
    finetune(
        simplecnn_stages(model),
        x,
        y,
        frozen=frozen,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        cache_frozen=cache_frozen,
        on_step=on_step,
    )
    return model


def subset(
    x: torch.Tensor, y: torch.Tensor, classes: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of ``classes``, relabelled ``0..len(classes)-1`` in the given order."""
    lookup = torch.full((int(y.max()) + 1,), -1, dtype=torch.long)
    for k, c in enumerate(classes):
        if c < len(lookup):
            lookup[c] = k
    keep = lookup[y] >= 0
    return x[keep], lookup[y[keep]]


def check_split(split: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    a, b = (tuple(int(c) for c in s) for s in split)
    every = a + b
    if not a or not b or len(set(every)) != len(every) or not set(every) <= set(range(6)):
        raise ValueError(
            f"split must be two disjoint, non-empty sets of classes 0..{len(CLASSES) - 1}, "
            f"got {split}"
        )
    return a, b


# --------------------------------------------------------------------------- (b) AnB / BnB


def anb_runs(
    settings: dict[str, Any],
    split: tuple[tuple[int, ...], tuple[int, ...]],
    cells: Path | None,
    progress: bool,
    info: dict[str, Any],
) -> tuple[dict[str, Any], Callable[[], SimpleCNN]]:
    """Bases A and B and every AnB condition for n = 1..5, over seeds (module docstring).
    Returns the document part and a function that gives base A of the first seed (trained
    or loaded only when asked for: the probes need it when their cell is missing)."""
    from tqdm.auto import tqdm

    a_cls, b_cls = split
    base_seed = 1_000_003 * int(settings["seed"])
    x_tr, y_tr = partsworld_tensors(settings["n"], settings["size"], base_seed + 1)
    x_te, y_te = partsworld_tensors(settings["n_test"], settings["size"], base_seed + 3)
    sets = {}
    for name, cls in (("A", a_cls), ("B", b_cls)):
        xa, ya = subset(x_tr, y_tr, cls)
        xt, yt = subset(x_te, y_te, cls)
        if min(len(xa), len(xt)) == 0:
            raise ValueError("n / n_test too small: a class split has no images")
        sets[name] = (simplecnn_input(xa), ya, simplecnn_input(xt), yt)
        info[name] = {"train": len(ya), "test": len(yt)}
    info["_pw_b_pixels"] = (*subset(x_tr, y_tr, b_cls), *subset(x_te, y_te, b_cls))
    recipe = {
        "epochs": settings["epochs"],
        "lr": settings["lr"],
        "batch_size": settings["batch_size"],
    }
    key = {
        "part": "anb",
        "size": settings["size"],
        "n": settings["n"],
        "n_test": settings["n_test"],
        "width": settings["width"],
        "world": settings["seed"],
        "split": settings["split"],
        "version": CELL_VERSION,
        **recipe,
    }
    classes = {"A": len(a_cls), "B": len(b_cls)}

    def make(k: int, init_seed: int) -> SimpleCNN:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return SimpleCNN(k, 3, settings["width"], batchnorm=True)

    def seeds_of(s: int) -> dict[str, int]:
        off = base_seed + 100 * s
        return {"A": off + 11, "B": off + 12, "target": off + 13, "order": off + 21}

    bases: dict[tuple[str, int], SimpleCNN] = {}

    def base(which: str, s: int) -> tuple[dict[str, Any], Callable[[], Any], Path | None]:
        """Base ``which`` of seed ``s``: its cell (trained when missing; the network is then
        kept), the function that trains it, and its weights file."""
        cell_key = key | {"base": which, "seed": s}
        weights = None if cells is None else cells / f"anb-base-{settings_digest(cell_key)}.pt"

        def train() -> dict[str, Any]:
            sd = seeds_of(s)
            net = make(classes[which], sd[which])
            x, y, xt, yt = sets[which]
            train_classifier(net, x, y, seed=sd["order"], **recipe)
            bases[(which, s)] = net
            if weights is not None:
                weights.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(weights, suffix=".pt") as tmp:
                    torch.save(net.state_dict(), tmp)
            ok = correct(net, xt, yt)
            return {"acc": float(ok.mean()), "correct": encode(ok)}

        cell, _ = cached_cell(cells, "anb-base", cell_key, train)
        return cell, train, weights

    def base_net(which: str, s: int) -> SimpleCNN:
        if (which, s) not in bases:
            _, train, weights = base(which, s)
            net = make(classes[which], seeds_of(s)[which])
            try:
                net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
                bases[(which, s)] = net.eval()
            except (OSError, RuntimeError, TypeError, ValueError, EOFError):
                train()  # the weights file is missing or unreadable: the same training again
        return bases[(which, s)]

    n_seeds = settings["seeds"]
    ns = list(range(1, N_BLOCKS + 1))
    total = n_seeds * (2 + len(ns) * len(ANB_CONDITIONS))
    bar = tqdm(total=total, desc="transfer: AnB/BnB", disable=not progress)
    runs: dict[str, Any] = {
        "base_a": [],
        "base_b": [],
        **{c: {k: [] for k in ns} for c in ANB_CONDITIONS},
    }
    try:
        for s in range(n_seeds):
            for which in ("A", "B"):
                bar.set_postfix_str(f"base {which} seed {s}")
                runs[f"base_{which.lower()}"].append(base(which, s)[0])
                bar.update()
            for k in ns:
                for name in ANB_CONDITIONS:
                    bar.set_postfix_str(f"{name} n={k} seed {s}")

                    def compute(name: str = name, k: int = k, s: int = s) -> dict[str, Any]:
                        sd = seeds_of(s)
                        x, y, xt, yt = sets["B"]
                        net = make(classes["B"], sd["target"])
                        if name == "random-frozen":
                            reestimate_bn(nn.Sequential(*simplecnn_stages(net).stages[:k]), x)
                        else:
                            copy_layers(base_net("A" if name.startswith("A") else "B", s), net, k)
                        frozen = 0 if name.endswith("+") else k
                        train_classifier(net, x, y, frozen=frozen, seed=sd["order"], **recipe)
                        ok = correct(net, xt, yt)
                        return {"acc": float(ok.mean()), "correct": encode(ok)}

                    cell_key = key | {"condition": name, "n": k, "seed": s}
                    runs[name][k].append(cached_cell(cells, "anb", cell_key, compute)[0])
                    bar.update()
    finally:
        bar.close()
    return _anb_doc(runs, ns, settings), lambda: base_net("A", 0)


def _scores(cells: list[dict[str, Any]]) -> np.ndarray:
    return scores([c["correct"] for c in cells])


def _anb_doc(runs: dict[str, Any], ns: list[int], settings: dict[str, Any]) -> dict[str, Any]:
    """Means and paired intervals over seeds and B's test images; the specificity rule."""
    boot = {"resamples": settings["bootstrap"]}
    base_b = _scores(runs["base_b"])
    doc: dict[str, Any] = {
        "n": ns,
        "seeds": settings["seeds"],
        "base_a": paired_interval(_scores(runs["base_a"]), **boot),
        "base_b": paired_interval(base_b, **boot),
        "base_acc": {
            "A": [c["acc"] for c in runs["base_a"]],
            "B": [c["acc"] for c in runs["base_b"]],
        },
    }
    for name in ANB_CONDITIONS:
        doc[name] = [paired_interval(_scores(runs[name][k]), seed=k, **boot) for k in ns]
        doc[f"{name} per seed"] = [[c["acc"] for c in runs[name][k]] for k in ns]
    rows, first = [], None
    for k in ns:
        gap = paired_interval(_scores(runs["BnB"][k]), _scores(runs["AnB"][k]), seed=k, **boot)
        specific = gap["mean"] > SPECIFICITY_MARGIN and gap["lo"] > 0
        rows.append({"n": k, "bnb_minus_anb": gap, "specific": specific})
        if specific and first is None:
            first = k
    doc["specificity"] = {
        "rule": f"first n with BnB - AnB > {SPECIFICITY_MARGIN} and the 95% paired bootstrap "
        f"interval (over seeds and B's test images, {settings['bootstrap']} resamples) above 0",
        "n": first,
        "layer": f"conv{first}" if first is not None else None,
        "per_n": rows,
    }
    doc["plus_vs_base"] = {
        name: [paired_interval(_scores(runs[name][k]), base_b, seed=k, **boot) for k in ns]
        for name in ("AnB+", "BnB+")
    }
    return doc


def anb_findings(anb: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    ns = anb["n"]
    k_a, k_b = len(settings["split"][0]), len(settings["split"][1])
    base_b = anb["base_b"]["mean"]

    def seq(name: str) -> str:
        return ", ".join(f"{r['mean']:.3f}" for r in anb[name])

    out = [
        f"Base A reaches {fmt_interval(anb['base_a'])} test accuracy on its {k_a} classes "
        f"({', '.join(settings['class_names'][0])}; chance {1 / k_a:.2f}) and base B "
        f"{fmt_interval(anb['base_b'])} on its {k_b} ({', '.join(settings['class_names'][1])}); "
        f"{plural(anb['seeds'], 'seed')} (lowest A {min(anb['base_acc']['A']):.3f}, B "
        f"{min(anb['base_acc']['B']):.3f}), {settings['epochs']} epochs each.",
    ]
    drop = [r["bnb_minus_anb"]["mean"] for r in anb["specificity"]["per_n"]]
    out.append(
        f"Frozen transfer from A (AnB) for n = {ns[0]}..{ns[-1]}: {seq('AnB')} vs BnB "
        f"{seq('BnB')} (means over seeds); BnB - AnB is "
        + ", ".join(fmt_interval(r["bnb_minus_anb"], True) for r in anb["specificity"]["per_n"])
        + f", largest at n = {ns[int(np.argmax(drop))]}. Yosinski et al. (2014) found frozen "
        "transfer of the first n of 7 layers costs little up to n = 3 and then drops."
    )
    spec = anb["specificity"]
    if spec["n"] is not None:
        out.append(
            f"Specificity starts at n = {spec['n']} ({spec['layer']}); rule: {spec['rule']}."
        )
    else:
        out.append(
            f"No n meets the specificity rule ({spec['rule']}): the frozen features of base A "
            "serve task B about as well as base B's own."
        )
    bnb = [r["mean"] for r in anb["BnB"]]
    out.append(
        f"BnB (self-transfer, frozen) is lowest at n = {ns[int(np.argmin(bnb))]} with "
        f"{min(bnb):.3f} vs base B {base_b:.3f}; Yosinski et al. saw a dip at middle layers "
        f"(fragile co-adaptation) that fine-tuning (BnB+) removes; here BnB+ is {seq('BnB+')}."
    )
    plus = anb["plus_vs_base"]["AnB+"]
    above = sum(r["lo"] > 0 for r in plus)
    below = sum(r["hi"] < 0 for r in plus)
    out.append(
        "Fine-tuned transfer (AnB+) minus base B: "
        + ", ".join(fmt_interval(r, True) for r in plus)
        + f"; above the base with an interval above 0 at {above} of {len(ns)} n, below it at "
        f"{below}. Yosinski et al. found fine-tuned transfer beats the base network at every n."
    )
    rf = [r["mean"] for r in anb["random-frozen"]]
    out.append(
        f"Frozen random blocks (random-frozen) give {seq('random-frozen')}: {rf[0] - base_b:+.3f} "
        f"vs base B at n = {ns[0]} and {rf[-1] - base_b:+.3f} at n = {ns[-1]}; Yosinski et al. "
        "found frozen random layers lose accuracy fast (already at n = 1-2)."
    )
    return out
