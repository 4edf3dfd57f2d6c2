"""Fine-tuning sweeps: a pretrained initialization against random init, by labelled data and
by frozen depth, over seeds, with paired intervals.

The question "does initializing a network for digits with the weights of an object
recognizer help, and through which layers?" is asked of any pair of initializations that
build a :class:`~interp.experiments.finetune.StageNet` (``build(seed)``, a fresh network per
call). :func:`sweep` trains one network per *cell*:

* **data size**: every initialization fine-tuned whole (nothing frozen) on ``per_class``
  labelled images of each class (nested subsets: a seed's 10 images of a class are among
  its 30);
* **frozen depth**: every initialization with its first ``d`` stages frozen, trained on
  ``depth_per_class`` images per class; the frozen stages of the initializations in
  ``settle`` (random init) first get their BatchNorm statistics re-estimated on the cell's
  training images, so that a frozen random stage is not handicapped by the default
  statistics.

Every cell trains for the same number of optimizer steps (a fixed budget whatever the data
size), with the same batch order and classifier initialization for every initialization of
one seed: cells are paired. Each cell is one atomic JSON file when ``cells`` is given
(:func:`~interp.experiments._common.cached_cell`): an interrupted sweep resumes with the
missing cells only. :func:`analyse` turns the cells into what the question asks: the gain of
the pretrained initialization at each data size, and at each frozen depth the cost of
freezing it (against fine-tuning it whole) and its help (against frozen random stages), with
95% intervals of a paired bootstrap over seeds and test images (:func:`paired_interval`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._common import cached_cell
from .finetune import StageNet, correct, finetune, reestimate_bn

__all__ = [
    "CELL_VERSION",
    "SPECIFICITY_MARGIN",
    "analyse",
    "decode",
    "encode",
    "fmt_interval",
    "paired_interval",
    "plural",
    "scores",
    "per_class_indices",
    "sweep",
]

#: the version of the transfer experiment's cells: bumped when a cell's computation changes,
#: so that older cells are recomputed (2: trained in channels_last)
CELL_VERSION = 2

#: a frozen depth costs when fine-tuning it whole beats freezing it by more than this and the
#: 95% paired interval is above 0 (the same margin as the AnB rule)
SPECIFICITY_MARGIN = 0.03


def per_class_indices(y: torch.Tensor, per_class: int | None, seed: int) -> torch.Tensor:
    """Indices of ``per_class`` images of every class of ``y`` (all with ``None``), drawn by
    a permutation seeded with ``seed``: nested, a smaller draw is a prefix of a larger one."""
    g = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(y), generator=g)
    picked = []
    for c in torch.unique(y).tolist():
        own = order[y[order] == c]
        picked.append(own if per_class is None else own[: int(per_class)])
    return torch.sort(torch.cat(picked)).values


def encode(ok: np.ndarray) -> str:
    """Per-test-image correctness as a string of 0s and 1s (a cell's compact record)."""
    return "".join("1" if v else "0" for v in ok)


def decode(bits: str) -> np.ndarray:
    """A cell's per-test-image correctness (stored as a string of 0s and 1s) as booleans."""
    return np.frombuffer(bits.encode(), dtype=np.uint8) == ord("1")


def sweep(
    inits: Mapping[str, Callable[[int], StageNet]],
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    per_class: Sequence[int | None] = (10, 30, 100, None),
    depths: Sequence[int] = (0,),
    depth_per_class: int | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    settle: Collection[str] = ("random",),
    steps: int = 100,
    batch_size: int = 32,
    lr: float = 3e-3,
    bn_momentum: float | None = 0.1,
    cells: Path | None = None,
    key: Mapping[str, Any] | None = None,
    progress: bool = True,
    desc: str = "fine-tuning",
) -> dict[str, Any]:
    """Train and score every cell (module docstring); returns the raw cells.

    Args:
        inits: ``{name: build}``; ``build(seed)`` returns a fresh network.
        data: model inputs and labels ``(x_train, y_train, x_test, y_test)``.
        per_class: the data sizes (labelled images per class; ``None``: all).
        depths: the frozen depths (numbers of frozen stages) of the depth sweep; 0 is the
            whole network fine-tuned.
        depth_per_class: the data size of the depth sweep.
        seeds: one network per initialization and seed in every cell.
        settle: the initializations whose frozen stages get re-estimated BatchNorm statistics.
        steps, batch_size, lr, bn_momentum: :func:`~interp.experiments.finetune.finetune`.
        cells: folder of the cells' JSON files (``None``: nothing cached).
        key: what identifies the data and the initializations in the cells' keys (the
            caller's settings; the sweep adds the cell's own).

    Returns:
        ``{"per_class": {init: {size: cell}}, "frozen": {init: {depth: cell}}}`` with sizes
        as ``str(n)`` (``"all"`` for ``None``) and depths as ``str(d)``; a cell is
        ``{"acc": [per seed], "correct": [per seed: "0101..."], "train": images}``.
    """
    from tqdm.auto import tqdm

    x_train, y_train, x_test, y_test = data
    sizes = list(per_class) + ([depth_per_class] if depth_per_class not in per_class else [])
    plan = [("per_class", name, n, 0) for n in sizes for name in inits]
    plan += [("frozen", name, depth_per_class, d) for d in depths if d for name in inits]
    base_key = dict(key or {}) | {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "bn_momentum": bn_momentum,
        "settle": sorted(settle),
    }
    done: dict[tuple[str, int | None, int, int], dict[str, Any]] = {}
    bar = tqdm(total=len(plan) * len(seeds), desc=desc, disable=not progress)
    out: dict[str, Any] = {
        "per_class": {},
        "frozen": {},
        "frozen_per_class": _label(depth_per_class, 0, "per_class"),
    }
    try:
        for part, name, n, depth in plan:
            runs = []
            for seed in seeds:
                bar.set_postfix_str(f"{name} n={n or 'all'} frozen={depth} seed={seed}")
                cell_key = base_key | {"init": name, "per_class": n, "frozen": depth, "seed": seed}
                memo = (name, n, depth, seed)
                if memo not in done:

                    def compute(name: str = name, n: Any = n, depth: int = depth, seed: int = seed):
                        return _cell(
                            inits[name], seed, n, depth, name in settle,
                            (x_train, y_train, x_test, y_test),
                            steps=steps, batch_size=batch_size, lr=lr, bn_momentum=bn_momentum,
                        )  # fmt: skip

                    done[memo], _ = cached_cell(cells, "cell", cell_key, compute)
                runs.append(done[memo])
                bar.update()
            slot = out[part].setdefault(name, {})
            slot[_label(n, depth, part)] = {
                "acc": [r["acc"] for r in runs],
                "correct": [r["correct"] for r in runs],
                "train": runs[0]["train"],
                "seconds": [r["seconds"] for r in runs],
            }
    finally:
        bar.close()
    return out


def _label(n: int | None, depth: int, part: str) -> str:
    if part == "frozen":
        return str(depth)
    return "all" if n is None else str(n)


def _cell(
    build: Callable[[int], StageNet],
    seed: int,
    per_class: int | None,
    depth: int,
    settle: bool,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    **recipe: Any,
) -> dict[str, Any]:
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = data
    idx = per_class_indices(y_train, per_class, seed)
    x, y = x_train[idx], y_train[idx]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))  # dropout and stochastic depth
        net = build(seed)
        if depth and settle:
            reestimate_bn(nn.Sequential(*net.stages[:depth]), x)
        recipe["batch_size"] = min(int(recipe["batch_size"]), len(y))
        finetune(net, x, y, frozen=depth, seed=seed, **recipe)
        ok = correct(net, x_test, y_test)
    return {
        "acc": float(ok.mean()),
        "correct": encode(ok),
        "train": len(y),
        "seconds": round(time.perf_counter() - start, 2),
    }


# --------------------------------------------------------------------------- analysis


def paired_interval(
    a: np.ndarray, b: np.ndarray | None = None, *, resamples: int = 1000, seed: int = 0
) -> dict[str, float]:
    """Mean of ``a - b`` (or of ``a``) with a 95% percentile bootstrap interval.

    ``a`` and ``b`` are per-seed, per-test-image scores ``(seeds, images)`` of two
    conditions paired by seed and image. Each resample draws seeds and test images with
    replacement (the same draw for both conditions), so the interval carries both the
    training noise (between seeds) and the test-set noise.
    """
    d = np.asarray(a, dtype=np.float64)
    if b is not None:
        d = d - np.asarray(b, dtype=np.float64)
    if d.ndim == 1:
        d = d[None]
    s, n = d.shape
    rng = np.random.default_rng(seed)
    boots = np.empty(resamples)
    for r in range(resamples):
        rows = d[:, rng.integers(0, n, n)].mean(axis=1)
        boots[r] = rows[rng.integers(0, s, s)].mean()
    lo, hi = np.quantile(boots, [0.025, 0.975])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi)}


def scores(bits: Sequence[str]) -> np.ndarray:
    """Per-seed records of per-test-image correctness (:func:`encode`) as a ``(seeds,
    images)`` boolean array, what :func:`paired_interval` takes."""
    return np.stack([decode(b) for b in bits])


def _scores(cell: Mapping[str, Any]) -> np.ndarray:
    return scores(cell["correct"])


def analyse(
    raw: Mapping[str, Any],
    *,
    pretrained: str,
    control: str = "random",
    depth_names: Mapping[int, str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """What the cells say about ``pretrained`` against ``control`` (module docstring).

    Returns ``{"per_class": rows, "frozen": rows, "specific_from": ..., "rule": ...}``:
    per data size the accuracy of both and the gain; per frozen depth the accuracy of both,
    the **cost** (``pretrained`` fine-tuned whole at the depth sweep's data size minus
    ``pretrained`` frozen to that depth) and the **help** (``pretrained`` frozen minus
    ``control`` frozen at that depth); ``specific_from``: the first depth whose cost is
    above :data:`SPECIFICITY_MARGIN` with its interval above 0 (``None``: none), where the
    pretrained stages stop serving the new task as well as retraining them does.
    """
    names = dict(depth_names or {})
    rows = []
    for k, size in enumerate(raw["per_class"].get(pretrained, {})):
        p, c = raw["per_class"][pretrained][size], raw["per_class"][control][size]
        sp, sc = _scores(p), _scores(c)
        rows.append(
            {
                "per_class": size,
                "train": p["train"],
                pretrained: paired_interval(sp, resamples=resamples, seed=seed + k),
                control: paired_interval(sc, resamples=resamples, seed=seed + k),
                "gain": paired_interval(sp, sc, resamples=resamples, seed=seed + k),
            }
        )
    frozen_rows = []
    specific = None
    frozen = raw.get("frozen", {})
    if frozen.get(pretrained):
        size = raw["frozen_per_class"]  # fine-tuned whole on the depth sweep's data size
        s_ref = _scores(raw["per_class"][pretrained][size])
        c_ref = _scores(raw["per_class"][control][size])
        depths = [0, *sorted(int(d) for d in frozen[pretrained])]
        for k, d in enumerate(depths):
            if d == 0:
                sp, sc = s_ref, c_ref
            else:
                sp, sc = _scores(frozen[pretrained][str(d)]), _scores(frozen[control][str(d)])
            cost = paired_interval(s_ref, sp, resamples=resamples, seed=seed + 100 + k)
            row = {
                "depth": d,
                "through": names.get(d, "nothing" if d == 0 else f"stage {d - 1}"),
                pretrained: paired_interval(sp, resamples=resamples, seed=seed + 100 + k),
                control: paired_interval(sc, resamples=resamples, seed=seed + 100 + k),
                "cost": cost,
                "help": paired_interval(sp, sc, resamples=resamples, seed=seed + 100 + k),
                "costs": cost["mean"] > SPECIFICITY_MARGIN and cost["lo"] > 0,
            }
            if row["costs"] and specific is None:
                specific = row
            frozen_rows.append(row)
    return {
        "pretrained": pretrained,
        "control": control,
        "per_class": rows,
        "frozen": frozen_rows,
        "specific_from": None
        if specific is None
        else {"depth": specific["depth"], "through": specific["through"]},
        "rule": f"the first frozen depth whose cost (fine-tuned whole minus frozen) is above "
        f"{SPECIFICITY_MARGIN} with its 95% paired interval (over seeds and test images, "
        f"{resamples} resamples) above 0",
    }


def fmt_interval(row: dict[str, float], sign: bool = False) -> str:
    """``mean [lo, hi]`` of a :func:`paired_interval` (signed with ``sign``)."""
    fmt = "+.3f" if sign else ".3f"
    return f"{row['mean']:{fmt}} [{row['lo']:{fmt}}, {row['hi']:{fmt}}]"


def plural(count: int, noun: str) -> str:
    """``"1 seed"``, ``"3 seeds"``."""
    return f"{count} {noun}" + ("" if count == 1 else "s")
