"""Multiclass lab: how two ReLU units share out four classes, over many random seeds.

The course lab: four Gaussian blobs in 2-D, one class each, at the corners of a square, and a
network ``Linear(2, H) -> ReLU -> Linear(H, 4)`` trained with a 4-way softmax. Layout of the
classes (:data:`CENTRES`)::

    class 1 (-1, +1)    class 3 (+1, +1)
    class 0 (-1, -1)    class 2 (+1, -1)

so ``{0,1}|{2,3}`` is the split by ``x`` (:data:`AXIS_X`) and ``{0,2}|{1,3}`` the split by
``y`` (:data:`AXIS_Y`). The diagonal pairs ``{0,3}|{1,2}`` cannot be split by a line; every
other split a line can make is one corner against the other three ("diagonal").

A hidden unit ``relu(w.x + b)`` is described by its decision line ``w.x + b = 0``, the class
centres on its active side (``w.c + b > 0``) and the bipartition of the four centres that
line induces (canonical form: the side holding class 0 first). A unit is *dead* when it is
inactive (``w.x + b <= 0``) on every training point: it then never gets a gradient again.

With two hidden units, every seed falls into exactly one category (:data:`CATEGORIES`, in
order of precedence): ``dead unit`` (at least one unit dead), ``axis split`` (the two units
induce the two different axis bipartitions), ``duplicate`` (both units induce the same
bipartition, whichever side is active) and ``other`` (anything else, e.g. an axis split plus
a diagonal one-vs-three split). With two units, only an axis split maps the four classes to
four separable points, so only axis splits are expected to reach ~100% accuracy.

With more hidden units every unit gets a role (:data:`ROLES`): ``axis`` (the first unit of
the seed inducing that axis bipartition), ``axis duplicate`` (a later one), ``diagonal``,
``no split`` (live, but all four centres on the same side) or ``dead``.

Every network seed trains on the same data (drawn from ``seed``) with PyTorch's default init
under ``torch.manual_seed(network seed)``; all network seeds of one hidden size train at
once as one batched model (full-batch Adam on the sum of the per-seed mean cross-entropies:
the seeds do not interact, Adam works elementwise). Everything runs on the CPU with one
thread, so results are deterministic (a network seed trains to the same network whatever the
number of seeds) and the caller's RNG state is left as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..data.toy import CENTRES, corner_blobs
from ..errors import InterpError
from ..train import fit
from ._common import limited_threads
from .registry import OWN_NICHE, RANDOM_WEIGHTS, Experiment, register
from .results import ExperimentResult

__all__ = [
    "AXIS_SPLITS",
    "AXIS_X",
    "AXIS_Y",
    "CATEGORIES",
    "CENTRES",
    "ROLES",
    "SOLVED_ACC",
    "Bipartition",
    "MulticlassResult",
    "Unit",
    "active_classes",
    "bipartition_of",
    "bipartition_to_json",
    "categorize",
    "multiclass_lab",
    "stacked_logits",
    "unit_roles",
    "units_of",
]

N_CLASSES = len(CENTRES)

#: a bipartition of the class centres: ``(side holding class 0, the other side)``
Bipartition = tuple[frozenset[int], frozenset[int]]
AXIS_X: Bipartition = (frozenset({0, 1}), frozenset({2, 3}))  # split by x
AXIS_Y: Bipartition = (frozenset({0, 2}), frozenset({1, 3}))  # split by y
AXIS_SPLITS: tuple[Bipartition, Bipartition] = (AXIS_X, AXIS_Y)

#: two-unit outcomes, in order of precedence
CATEGORIES: tuple[str, ...] = ("dead unit", "axis split", "duplicate", "other")
#: what a unit does (any number of units)
ROLES: tuple[str, ...] = ("axis", "axis duplicate", "diagonal", "no split", "dead")
#: test accuracy from which a seed counts as solved
SOLVED_ACC = 0.95


# --------------------------------------------------------------------------- unit analysis


@dataclass(frozen=True)
class Unit:
    """One hidden unit ``relu(w.x + b)`` as the lab sees it."""

    w: tuple[float, float]
    b: float
    active: frozenset[int]  # class centres c with w.c + b > 0
    bipartition: Bipartition
    dead: bool  # inactive on every training point

    @property
    def trivial(self) -> bool:
        """True when all four centres lie on the same side of the line (no split)."""
        return not self.bipartition[1]

    def to_json(self, role: str | None = None) -> dict[str, Any]:
        """A JSON-ready record (bipartition as sorted lists, e.g. ``[[0, 1], [2, 3]]``)."""
        doc: dict[str, Any] = {
            "w": [_r(v) for v in self.w],
            "b": _r(self.b),
            "active": sorted(self.active),
            "bipartition": bipartition_to_json(self.bipartition),
            "dead": self.dead,
        }
        if role is not None:
            doc["role"] = role
        return doc


def active_classes(
    w: Sequence[float], b: float, centres: Sequence[Sequence[float]] = CENTRES
) -> frozenset[int]:
    """The classes whose centre lies on the active side of ``w.x + b = 0`` (``w.c + b > 0``)."""
    return frozenset(i for i, c in enumerate(centres) if w[0] * c[0] + w[1] * c[1] + b > 0)


def bipartition_of(active: Iterable[int], n_classes: int = N_CLASSES) -> Bipartition:
    """The bipartition ``active | rest`` in canonical form: the side holding class 0 first."""
    side = frozenset(active)
    rest = frozenset(range(n_classes)) - side
    return (side, rest) if 0 in side else (rest, side)


def bipartition_to_json(bp: Bipartition) -> list[list[int]]:
    """``({0, 1}, {2, 3})`` -> ``[[0, 1], [2, 3]]``."""
    return [sorted(bp[0]), sorted(bp[1])]


def units_of(weight: torch.Tensor, bias: torch.Tensor, x_train: torch.Tensor) -> list[Unit]:
    """The hidden units of ``Linear(2, H)`` with ``weight (H, 2)`` and ``bias (H,)``; a unit is
    dead when it is inactive on every row of ``x_train (N, 2)``."""
    weight = torch.as_tensor(weight, dtype=torch.float32).detach().cpu()
    bias = torch.as_tensor(bias, dtype=torch.float32).detach().cpu().reshape(-1)
    if weight.ndim != 2 or weight.shape[1] != 2 or bias.shape[0] != weight.shape[0]:
        raise InterpError(f"expected weight (H, 2) and bias (H,), got {tuple(weight.shape)}")
    x = torch.as_tensor(x_train, dtype=torch.float32).detach().cpu()
    dead = ((x @ weight.T + bias) <= 0).all(dim=0).tolist()
    units = []
    for (w0, w1), b, is_dead in zip(weight.tolist(), bias.tolist(), dead, strict=True):
        active = active_classes((w0, w1), b)
        units.append(Unit((w0, w1), b, active, bipartition_of(active), bool(is_dead)))
    return units


def categorize(units: Sequence[Unit]) -> str:
    """The outcome of a seed (one of :data:`CATEGORIES`), precedence ``dead unit`` >
    ``axis split`` > ``duplicate`` > ``other``.

    Meant for two units: ``axis split`` means both axis bipartitions are induced,
    ``duplicate`` that two units induce the same bipartition.
    """
    if any(u.dead for u in units):
        return "dead unit"
    splits = [u.bipartition for u in units]
    if all(axis in splits for axis in AXIS_SPLITS):
        return "axis split"
    if len(set(splits)) < len(splits):
        return "duplicate"
    return "other"


def unit_roles(units: Sequence[Unit]) -> list[str]:
    """The role (:data:`ROLES`) of each unit, in order: a live unit inducing an axis
    bipartition that an earlier live unit already induces is an ``axis duplicate``."""
    seen: set[Bipartition] = set()
    roles = []
    for u in units:
        if u.dead:
            roles.append("dead")
        elif u.trivial:
            roles.append("no split")
        elif u.bipartition in AXIS_SPLITS:
            roles.append("axis duplicate" if u.bipartition in seen else "axis")
            seen.add(u.bipartition)
        else:
            roles.append("diagonal")
    return roles


# --------------------------------------------------------------------------- data and training


def _init_params(hidden: int, seeds: Sequence[int]) -> list[torch.Tensor]:
    """PyTorch's default init of ``Linear(2, H)``, ``Linear(H, 4)`` per seed, stacked:
    ``[W1 (S, H, 2), b1 (S, H, 1), W2 (S, 4, H), b2 (S, 4, 1)]``."""
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    with torch.random.fork_rng(devices=[]):
        for s in seeds:
            # the CPU half of torch.manual_seed(s) (the networks live on the CPU), without
            # seeding, hence disturbing, the CUDA generators
            torch.default_generator.manual_seed(int(s))
            first, second = nn.Linear(2, hidden), nn.Linear(hidden, N_CLASSES)
            parts[0].append(first.weight.detach())
            parts[1].append(first.bias.detach()[:, None])
            parts[2].append(second.weight.detach())
            parts[3].append(second.bias.detach()[:, None])
    return [torch.stack(p).clone() for p in parts]


def stacked_logits(params: Sequence[torch.Tensor], xt: torch.Tensor) -> torch.Tensor:
    """Logits ``(S, 4, N)`` of the stacked networks ``[W1 (S, H, 2), b1 (S, H, 1),
    W2 (S, 4, H), b2 (S, 4, 1)]`` on ``xt (2, N)``."""
    w1, b1, w2, b2 = params
    hidden = torch.relu(torch.matmul(w1, xt) + b1)  # (S, H, N)
    return torch.baddbmm(b2, w2, hidden)


def _train(
    params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor, steps: int, lr: float
) -> list[torch.Tensor]:
    """Full-batch Adam on ``sum over seeds of mean cross-entropy``; the seeds are independent."""
    params = [p.clone().requires_grad_(True) for p in params]
    targets = y.expand(params[0].shape[0], -1)

    def loss(logits: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction="sum") / len(yb)

    fit(
        None,
        (x, y),
        epochs=steps,  # one full batch per epoch, in order
        lr=lr,
        params=params,
        shuffle=False,
        forward=lambda xb: stacked_logits(params, xb.T.contiguous()),
        loss_fn=loss,
    )
    return [p.detach() for p in params]


def _r(v: float) -> float:
    """Round for the JSON (keeps the files small; the analysis uses the full values)."""
    return round(float(v), 6)


# --------------------------------------------------------------------------- the experiment


def _seed_records(
    params: Sequence[torch.Tensor],
    seeds: Sequence[int],
    data: dict[str, torch.Tensor],
) -> list[dict[str, Any]]:
    """Per-seed records of one hidden size from the trained stacked parameters."""
    records = []
    with torch.no_grad():
        acc: dict[str, list[float]] = {}
        for split in ("train", "test"):
            logits = stacked_logits(params, data[f"x_{split}"].T.contiguous())
            target = data[f"y_{split}"]
            acc[split] = (logits.argmax(dim=1) == target).float().mean(dim=1).tolist()
        train_logits = stacked_logits(params, data["x_train"].T.contiguous())
        targets = data["y_train"].expand(len(seeds), -1)
        losses = F.cross_entropy(train_logits, targets, reduction="none").mean(dim=1).tolist()
    w1, b1, w2, b2 = params
    for i, s in enumerate(seeds):
        units = units_of(w1[i], b1[i, :, 0], data["x_train"])
        roles = unit_roles(units)
        live = {u.bipartition for u in units if not u.dead and not u.trivial}
        axes = sum(axis in live for axis in AXIS_SPLITS)
        rec: dict[str, Any] = {
            "seed": int(s),
            "train_acc": _r(acc["train"][i]),
            "test_acc": _r(acc["test"][i]),
            "train_loss": _r(losses[i]),
            "n_dead": sum(u.dead for u in units),
            "n_distinct": len(live),
            "axis_splits_present": axes,
            "both_axes": axes == len(AXIS_SPLITS),
            "roles": {r: roles.count(r) for r in ROLES},
            "units": [u.to_json(role) for u, role in zip(units, roles, strict=True)],
            "readout": {
                "w": [[_r(v) for v in row] for row in w2[i].tolist()],
                "b": [_r(v) for v in b2[i, :, 0].tolist()],
            },
        }
        if len(units) == 2:
            rec["category"] = categorize(units)
        records.append(rec)
    return records


def _mean(values: Sequence[float]) -> float | None:
    return _r(sum(values) / len(values)) if values else None


def _summarize(records: Sequence[dict[str, Any]], hidden: int) -> dict[str, Any]:
    """Over-seed summary of one hidden size."""
    n = len(records)
    test = [r["test_acc"] for r in records]
    both = [r["test_acc"] for r in records if r["both_axes"]]
    rest = [r["test_acc"] for r in records if not r["both_axes"]]
    total_units = n * hidden
    summary: dict[str, Any] = {
        "hidden": hidden,
        "n_seeds": n,
        "mean_train_acc": _mean([r["train_acc"] for r in records]),
        "mean_test_acc": _mean(test),
        "min_test_acc": _r(min(test)),
        "max_test_acc": _r(max(test)),
        "solved": sum(a >= SOLVED_ACC for a in test),
        "fraction_solved": _r(sum(a >= SOLVED_ACC for a in test) / n),
        "both_axes": len(both),
        "fraction_both_axes": _r(len(both) / n),
        "mean_test_acc_both_axes": _mean(both),
        "mean_test_acc_not_both_axes": _mean(rest),
        "fraction_any_dead": _r(sum(r["n_dead"] > 0 for r in records) / n),
        "mean_dead": _mean([r["n_dead"] for r in records]),
        "mean_distinct_bipartitions": _mean([r["n_distinct"] for r in records]),
        "roles": {
            role: {
                "mean_per_seed": _mean([r["roles"][role] for r in records]),
                "fraction_of_units": _r(sum(r["roles"][role] for r in records) / total_units),
            }
            for role in ROLES
        },
    }
    if hidden == 2:
        cats: dict[str, Any] = {}
        for cat in CATEGORIES:
            rows = [r for r in records if r["category"] == cat]
            cats[cat] = {
                "count": len(rows),
                "fraction": _r(len(rows) / n),
                "mean_test_acc": _mean([r["test_acc"] for r in rows]),
                "mean_train_acc": _mean([r["train_acc"] for r in rows]),
                "max_test_acc": _r(max(r["test_acc"] for r in rows)) if rows else None,
                "solved": sum(r["test_acc"] >= SOLVED_ACC for r in rows),
                "seeds": [r["seed"] for r in rows],
            }
        summary["categories"] = cats
    return summary


def _fmt(acc: float | None) -> str:
    return "n/a" if acc is None else f"{acc:.2f}"


def _findings(results: dict[str, dict[str, Any]]) -> list[str]:
    """Plain-English sentences, each with the numbers behind it."""
    out: list[str] = []
    if "2" in results:
        s = results["2"]["summary"]
        n, cats = s["n_seeds"], s["categories"]
        axis = cats["axis split"]
        rest_acc = _mean(
            [r["test_acc"] for r in results["2"]["records"] if r["category"] != "axis split"]
        )
        out.append(
            f"With 2 hidden units, {axis['count']} of {n} seeds split the classes along the "
            f"two axes; their mean test accuracy is {_fmt(axis['mean_test_acc'])} vs "
            f"{_fmt(rest_acc)} for the rest."
        )
        others = ", ".join(
            f"{cats[c]['count']} {c} (mean test accuracy {_fmt(cats[c]['mean_test_acc'])})"
            for c in CATEGORIES
            if c != "axis split"
        )
        out.append(f"The other 2-unit seeds: {others}.")
        non_axis = [r for r in results["2"]["records"] if r["category"] != "axis split"]
        solved = [r for r in non_axis if r["test_acc"] >= SOLVED_ACC]
        sentence = (
            f"{s['solved']} of {n} seeds reach test accuracy >= {SOLVED_ACC} with 2 units, "
            f"{axis['solved']} of them axis splits"
        )
        if solved:
            pairs = sum(r["roles"]["diagonal"] == 2 for r in solved)
            best = max(r["test_acc"] for r in solved)
            sentence += (
                f"; axis splits are not the only solution: {len(solved)} other "
                f"seed{'s' if len(solved) != 1 else ''} reach{'' if len(solved) != 1 else 'es'} "
                f"it too (best {best:.3f}), {pairs} with two diagonal (1 vs 3) units."
            )
        elif non_axis:
            best = max(r["test_acc"] for r in non_axis)
            sentence += f": only axis splits solve it (the best other seed reaches {best:.3f})."
        else:
            sentence += "."
        out.append(sentence)
    for key, res in results.items():
        if key == "2":
            continue
        s = res["summary"]
        h, roles = s["hidden"], s["roles"]
        out.append(
            f"With {h} hidden units, both axis bipartitions are present in {s['both_axes']} of "
            f"{s['n_seeds']} seeds and {s['solved']} reach test accuracy >= {SOLVED_ACC} "
            f"(mean {s['mean_test_acc']:.3f}); the {h} units of the average seed are "
            + ", ".join(
                f"{roles[r]['mean_per_seed']:.2f} {r if r != 'diagonal' else 'diagonal (1 vs 3)'}"
                for r in ROLES
            )
            + "."
        )
    return out


def multiclass_lab(
    out: str | Path | None = None,
    *,
    seeds: int = 100,
    hidden: Sequence[int] = (2, 3, 4, 8),
    n_per_class: int = 100,
    spread: float = 0.35,
    steps: int = 1500,
    lr: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> MulticlassResult:
    """Train the four-blob network from network seeds ``0 .. seeds-1`` for each hidden size.

    Args:
        out: folder for ``multiclass.json`` (created); ``None`` writes nothing. Its figures
            (``multiclass_boundaries.png``, ``multiclass_outcomes.png``) are drawn by
            ``interp experiment multiclass-lab`` (:func:`interp.pipeline.suite.run_experiment`).
        seeds: number of network seeds per hidden size (seeds ``0 .. seeds-1``).
        hidden: hidden sizes; 2 is the lab's case (categories), the others show what extra
            units do (roles).
        n_per_class: training points per class (the test set has as many, drawn after them).
        spread: standard deviation of each blob around its centre (the centres are 2 apart).
        steps: full-batch Adam steps (1500 at ``lr=0.05`` converges: the outcome of every seed
            is already fixed after ~400).
        lr: Adam learning rate.
        seed: seed of the data (the same data for every network seed).
        progress: show a progress bar over the seeds.

    Returns:
        The result; its document (``multiclass.json``) holds ``layout``, ``config``,
        ``results[str(H)]`` with ``summary`` and per-seed ``records``, and ``findings``.
    """
    from tqdm.auto import tqdm

    sizes = list(dict.fromkeys(int(h) for h in hidden))
    if seeds < 1 or not sizes or min(sizes) < 1:
        raise InterpError("give seeds >= 1 and at least one hidden size >= 1")
    if n_per_class < 1 or steps < 0 or not (spread > 0 and lr > 0):
        raise InterpError("give n_per_class >= 1, steps >= 0, spread > 0 and lr > 0")
    data = lab_data(n_per_class, spread, seed)
    x_train, y_train, y_test = data["x_train"], data["y_train"], data["y_test"]

    network_seeds = list(range(seeds))
    chunk = 50  # seeds trained together (the progress bar moves once per chunk)
    results: dict[str, dict[str, Any]] = {}
    trained: dict[int, list[torch.Tensor]] = {}
    bar = tqdm(total=seeds * len(sizes), desc="multiclass-lab", unit="seed", disable=not progress)
    # tiny tensors: one thread is as fast as several and does not suffer on a busy CPU
    with limited_threads(1), bar:
        for h in sizes:
            bar.set_postfix(hidden=h)
            parts = []
            for start in range(0, seeds, chunk):
                block = network_seeds[start : start + chunk]
                parts.append(_train(_init_params(h, block), x_train, y_train, steps, lr))
                bar.update(len(block))
            params = [torch.cat(p) for p in zip(*parts, strict=True)]
            trained[h] = params
            records = _seed_records(params, network_seeds, data)
            results[str(h)] = {"summary": _summarize(records, h), "records": records}

    doc: dict[str, Any] = {
        "experiment": "multiclass-lab",
        "layout": {
            "centres": {str(i): list(c) for i, c in enumerate(CENTRES)},
            "axis_x": bipartition_to_json(AXIS_X),
            "axis_y": bipartition_to_json(AXIS_Y),
            "note": "class i centred at centres[i]; axis_x = split by x, axis_y = split by y; "
            "bipartitions list the side holding class 0 first",
        },
        "config": {
            "seeds": seeds,
            "network_seeds": [0, seeds - 1],
            "hidden": sizes,
            "n_per_class": n_per_class,
            "n_train": len(y_train),
            "n_test": len(y_test),
            "spread": spread,
            "steps": steps,
            "lr": lr,
            "optimizer": "Adam, full batch",
            "data_seed": seed,
            "init": "PyTorch default, torch.manual_seed(network seed)",
            "solved_acc": SOLVED_ACC,
        },
        "definitions": {
            "dead": "inactive (w.x + b <= 0) on every training point",
            "categories": "2 units only, precedence " + " > ".join(CATEGORIES),
            "roles": "axis: first unit inducing an axis bipartition; axis duplicate: a later "
            "one; diagonal: one class vs three; no split: all centres on one side; dead",
        },
        "results": results,
    }
    doc["findings"] = _findings(results)
    result = MulticlassResult(doc, x_train=x_train, y_train=y_train, params=trained)
    if out is not None:
        result.save(out)
    return result


def lab_data(n_per_class: int, spread: float, seed: int) -> dict[str, torch.Tensor]:
    """The lab's training and test points (``x_train``, ``y_train``, ``x_test``, ``y_test``):
    ``n_per_class`` of each class each, drawn one after the other from ``seed``."""
    gen = torch.Generator().manual_seed(int(seed))
    x_train, y_train = corner_blobs(N_CLASSES * n_per_class, gen, spread=spread)
    x_test, y_test = corner_blobs(N_CLASSES * n_per_class, gen, spread=spread)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


@dataclass(eq=False)
class MulticlassResult(ExperimentResult):
    """The lab's document, its training points and (after a run, not saved) the trained
    stacked parameters per hidden size (:func:`stacked_logits`). A loaded result has the
    points (drawn again from the config) but no parameters: the figures then take each
    unit's from the records."""

    json_name: ClassVar[str] = "multiclass.json"

    x_train: torch.Tensor | None = field(default=None, repr=False)
    y_train: torch.Tensor | None = field(default=None, repr=False)
    params: dict[int, list[torch.Tensor]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> MulticlassResult:
        c = doc["config"]
        data = lab_data(c["n_per_class"], c["spread"], c["data_seed"])
        return cls(doc, x_train=data["x_train"], y_train=data["y_train"])


register(
    Experiment(
        "multiclass-lab",
        multiclass_lab,
        MulticlassResult,
        questions={RANDOM_WEIGHTS: 2, OWN_NICHE: 1},
        figures=("multiclass_boundaries", "multiclass_outcomes"),
        seeds=("seeds", "network seeds [100]"),
    )
)
