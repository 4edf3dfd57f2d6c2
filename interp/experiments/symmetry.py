"""Symmetry: the units of a layer specialize only if something makes them different.

If every unit of a layer starts with the same incoming weights, and the layer above treats
them all alike (every unit has the same outgoing weights), then every unit computes the same
activation and receives the same gradient, so every update keeps them identical: the layer
behaves as a single unit however wide it is. Random initialization breaks the symmetry; this
experiment measures what happens without it and whether dropout or noise alone breaks it.

Two networks are trained under five conditions:

* the course-lab MLP (2-D input, one hidden ReLU layer, 4-way softmax) on four Gaussian blobs
  at the corners of a square;
* a small :class:`~interp.models.small.SimpleCNN` on PartsWorld images. BatchNorm (on by
  default) keeps the symmetry: its per-channel scale and shift start at 1 and 0 for every
  channel, and identical channels get identical statistics and gradients, so they are
  counted as part of each unit's incoming parameters. Without BatchNorm this CNN trains
  poorly from PyTorch's default init within the experiment's budget.

Conditions (see :data:`CONDITIONS`): ``random`` (PyTorch's default init); ``constant`` (every
weight of a layer, hidden layers and output layer, is the same constant ``const / fan_in``,
every bias 0); ``constant_random_output`` (constant hidden layers, random output layer: the
output layer gives the top hidden units different gradients); ``constant_dropout`` and
``constant_noise`` (constant init, with dropout or Gaussian noise on the hidden activations
during training as the only symmetry breaker).

A random output layer gives only the last hidden layer's units different gradients: the
layer below still feeds identical units, so the weights out of it keep identical columns and
its own units keep identical gradients (in the CNN, conv1-conv4 stay identical).

Per condition and hidden layer it records, at about ten checkpoints, the largest difference
between units' incoming parameters (the rows ``[W_i, b_i]``, for a conv layer the flattened
filter, bias and BatchNorm scale/shift of an output channel: ``max_i max |row_i - row_0|``),
the number of distinct units (rows equal within ``1e-6`` grouped) and at the end the rank of
the layer's activations on test inputs (singular values above ``1e-3`` of the largest) and
train/test accuracy. Everything runs on the CPU. Identical units stay bit-identical only while
the kernels compute every unit's sums in the same order; the CPU's matrix kernels may not for
widths that are not a multiple of their block, and the rounding differences then grow until
the units have split, so a sweep over the MLP's width records where exact symmetry holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.partsworld import partsworld_tensors
from ..data.toy import CENTRES, corner_blobs
from ..models.small import SimpleCNN
from ..train import Step, fit
from ._common import limited_threads, simplecnn_input
from .registry import RANDOM_WEIGHTS, Experiment, register
from .results import ExperimentResult

__all__ = [
    "CONDITIONS",
    "CornerMLP",
    "REFERENCES",
    "activation_rank",
    "SymmetryResult",
    "build_model",
    "constant_init_",
    "distinct_units",
    "symmetry",
    "train_run",
    "unit_difference",
    "unit_layers",
]

CONDITIONS: dict[str, str] = {
    "random": "random init",
    "constant": "constant init (hidden and output layers)",
    "constant_random_output": "constant hidden layers, random output layer",
    "constant_dropout": "constant init + dropout",
    "constant_noise": "constant init + activation noise",
}
REFERENCES: dict[str, str] = {
    "random_dropout": "random init + dropout",
    "random_noise": "random init + activation noise",
}
DISTINCT_TOL = 1e-6
RANK_TOL = 1e-3
PLOT_FLOOR = 1e-12


# --------------------------------------------------------------------------- data and models


class CornerMLP(nn.Module):
    """2-D input, one hidden ReLU layer of ``hidden`` units (``fc1``), 4 logits (``fc2``).

    ``perturb`` (if set) is applied to the hidden activations in training mode only.
    """

    def __init__(self, hidden: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(2, hidden)
        self.fc2 = nn.Linear(hidden, classes)
        self.perturb: Callable[[torch.Tensor], torch.Tensor] | None = None

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden activations (no perturbation)."""
        return F.relu(self.fc1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x)
        if self.training and self.perturb is not None:
            h = self.perturb(h)
        return self.fc2(h)


class _Perturb:
    """Symmetry breaker on activations: ``dropout`` (drop probability ``amount``, per element,
    rescaled) or ``noise`` (add Gaussian noise of std ``amount``), drawn from its own
    generator so the caller's RNG is not used."""

    def __init__(self, kind: str, amount: float, seed: int) -> None:
        if kind not in ("dropout", "noise"):
            raise ValueError(f"unknown perturbation {kind!r}")
        self.kind = kind
        self.amount = float(amount)
        self.generator = torch.Generator().manual_seed(int(seed))

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if self.kind == "dropout":
            keep = torch.rand(h.shape, generator=self.generator) >= self.amount
            return h * keep.to(h.dtype) / (1.0 - self.amount)
        return h + self.amount * torch.randn(h.shape, generator=self.generator)


def _cnn(width: float, batchnorm: bool) -> nn.Module:
    """SimpleCNN for PartsWorld's six classes, without its built-in dropout."""
    return SimpleCNN(num_classes=6, in_channels=3, width=width, batchnorm=batchnorm, dropout=0.0)


def unit_layers(model: nn.Module) -> tuple[dict[str, list[nn.Module]], nn.Module]:
    """The hidden layers of an MLP or SimpleCNN (name -> the modules holding each unit's
    incoming parameters: the linear/conv layer and, if any, its BatchNorm) and the output
    layer."""
    if isinstance(model, CornerMLP):
        return {"hidden": [model.fc1]}, model.fc2
    parts = dict(model.features.named_children())
    hidden = {}
    for name, module in parts.items():
        if name.startswith("conv"):
            bn = parts.get("bn" + name[len("conv") :])
            hidden[name] = [module] if bn is None else [module, bn]
    return hidden, model.fc


@torch.no_grad()
def constant_init_(layers: list[nn.Module], const: float = 1.0, bias: float = 0.0) -> None:
    """Set every weight of each layer to ``const / fan_in`` and every bias to ``bias``.

    Within a layer all units then have the same incoming weights (and the same outgoing
    weights, as seen from the layer below); ``const / fan_in`` keeps the activation scale from
    layer to layer.
    """
    for layer in layers:
        fan_in = layer.weight[0].numel()
        layer.weight.fill_(const / fan_in)
        if layer.bias is not None:
            layer.bias.fill_(bias)


# --------------------------------------------------------------------------- measurements


def _rows(layer: nn.Module | list[nn.Module]) -> torch.Tensor:
    """Each unit's incoming parameters as one row (units x parameters): the flattened weights
    and the bias of every module of ``layer`` (a linear/conv layer, or a list such as a conv
    layer and its BatchNorm)."""
    modules = layer if isinstance(layer, list | tuple) else [layer]
    cols = []
    for module in modules:
        for p in (module.weight, module.bias):
            if p is not None:
                cols.append(p.detach().reshape(p.shape[0], -1))
    return torch.cat(cols, dim=1)


def unit_difference(layer: nn.Module | list[nn.Module]) -> float:
    """Largest difference between two units' incoming parameters: ``max |row_i - row_0|``.

    (Every pairwise difference is at most twice this; it is 0 exactly when all units are
    identical.)
    """
    rows = _rows(layer)
    return float((rows - rows[0]).abs().max())


def distinct_units(layer: nn.Module | list[nn.Module], tol: float = DISTINCT_TOL) -> int:
    """Number of groups of units whose incoming parameters agree within ``tol`` (max-abs),
    grouping each unit with the first earlier representative it matches."""
    reps: list[torch.Tensor] = []
    for row in _rows(layer):
        if not any(float((row - r).abs().max()) <= tol for r in reps):
            reps.append(row)
    return len(reps)


def activation_rank(acts: torch.Tensor, tol: float = RANK_TOL) -> int:
    """Number of singular values of ``acts`` (samples x units) above ``tol`` times the largest:
    how many units the layer behaves as (1 for identical units, 0 if all are silent)."""
    s = torch.linalg.svdvals(acts.double())
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    return int((s > tol * s[0]).sum())


@torch.no_grad()
def _hidden_activations(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each hidden layer's (post-ReLU) activations on ``x`` as (samples, units)."""
    model.eval()
    if isinstance(model, CornerMLP):
        return {"hidden": model.hidden(x)}
    acts: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in model.features.named_children():
        if name.startswith("relu"):
            key = "conv" + name[len("relu") :]

            def hook(_m: nn.Module, _i: object, o: torch.Tensor, key: str = key) -> None:
                acts[key] = o.detach().transpose(0, 1).flatten(1).T

            handles.append(module.register_forward_hook(hook))
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return acts


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    """Fraction of ``x`` classified as ``y`` (eval mode, no perturbation)."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        correct += int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
    return correct / max(1, len(x))


# --------------------------------------------------------------------------- training


def _attach_perturb(model: nn.Module, perturb: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Apply ``perturb`` to every hidden layer's activations in training mode."""
    if isinstance(model, CornerMLP):
        model.perturb = perturb
        return
    for name, module in model.features.named_children():
        if name.startswith("relu"):

            def hook(m: nn.Module, _i: object, o: torch.Tensor) -> torch.Tensor | None:
                return perturb(o) if m.training else None

            module.register_forward_hook(hook)


def build_model(
    kind: str,
    condition: str,
    *,
    seed: int = 0,
    hidden: int = 8,
    width: float = 0.25,
    batchnorm: bool = True,
    const: float = 1.0,
    dropout: float = 0.3,
    noise: float = 0.1,
) -> nn.Module:
    """The network of ``kind`` (``"mlp"``: :class:`CornerMLP` of ``hidden`` units, ``"cnn"``:
    SimpleCNN of ``width``) initialized and equipped for ``condition`` (one of
    :data:`CONDITIONS` or :data:`REFERENCES`). The random init is drawn from ``seed`` (the
    same for every condition) without touching the caller's RNG."""
    if kind not in ("mlp", "cnn"):
        raise ValueError(f"kind {kind!r}: 'mlp' or 'cnn'")
    if condition not in CONDITIONS and condition not in REFERENCES:
        names = ", ".join([*CONDITIONS, *REFERENCES])
        raise ValueError(f"condition {condition!r}: one of {names}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CornerMLP(hidden) if kind == "mlp" else _cnn(width, batchnorm)
    hidden_layers, output = unit_layers(model)
    if condition.startswith("constant"):  # BatchNorm keeps its (already constant) 1 and 0
        constant_init_([modules[0] for modules in hidden_layers.values()], const)
        if condition != "constant_random_output":
            constant_init_([output], const)
    if condition.endswith("_dropout"):
        _attach_perturb(model, _Perturb("dropout", dropout, seed + 1))
    elif condition.endswith("_noise"):
        _attach_perturb(model, _Perturb("noise", noise, seed + 1))
    return model


def train_run(
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    checkpoints: int = 10,
    rank_inputs: int = 64,
    on_step: Callable[[], None] | None = None,
) -> dict:
    """Train ``model`` with Adam on shuffled mini-batches (shuffling from its own generator)
    and record the unit differences of every hidden layer at ``checkpoints`` steps.

    ``data`` is ``(x_train, y_train, x_test, y_test)``. Returns the record of the run.
    """
    x_tr, y_tr, x_te, y_te = data
    hidden_layers, _ = unit_layers(model)
    total = epochs * math.ceil(len(x_tr) / batch_size)
    marks = {int(round(v)) for v in np.linspace(0, total, checkpoints + 1)}
    steps: list[int] = []
    max_diff: dict[str, list[float]] = {name: [] for name in hidden_layers}
    distinct: dict[str, list[int]] = {name: [] for name in hidden_layers}

    def record(step: int) -> None:
        steps.append(step)
        for name, layer in hidden_layers.items():
            max_diff[name].append(unit_difference(layer))
            distinct[name].append(distinct_units(layer))

    def after(s: Step) -> None:
        if s.global_step in marks:
            record(s.global_step)
        if on_step is not None:
            on_step()

    record(0)
    generator = torch.Generator().manual_seed(int(seed))
    fit(
        model,
        (x_tr, y_tr),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        generator=generator,
        on_step=after,
    )
    acts = _hidden_activations(model, x_te[:rank_inputs])
    final = {
        name: {
            "units": int(layer[0].weight.shape[0]),
            "max_diff": max_diff[name][-1],
            "distinct_units": distinct[name][-1],
            "activation_rank": activation_rank(acts[name]),
        }
        for name, layer in hidden_layers.items()
    }
    return {
        "steps": steps,
        "max_diff": max_diff,
        "distinct_units": distinct,
        "final": final,
        "train_accuracy": _accuracy(model, x_tr, y_tr),
        "test_accuracy": _accuracy(model, x_te, y_te),
    }


# --------------------------------------------------------------------------- findings, figure


def _fmt(v: float) -> str:
    return "0.0" if v == 0.0 else f"{v:.2g}"


def _state(f: dict) -> str:
    """Words for a layer's symmetry from its final record (``max_diff``, ``distinct_units``)."""
    if f["max_diff"] == 0.0:
        return "stayed exactly identical"
    if f["distinct_units"] == 1:
        return f"differ only by tiny amounts (all within {DISTINCT_TOL})"
    return "diverged"


def _details(f: dict) -> str:
    return (
        f"largest difference {_fmt(f['max_diff'])}, {f['distinct_units']} of {f['units']} "
        f"units distinct, activation rank {f['activation_rank']} of {f['units']}"
    )


def _verdict(broken: bool, acc: float, acc_reference: float, acc_constant: float) -> str:
    """Whether a symmetry breaker suffices: test accuracy against random init trained with the
    same breaker (``acc_reference``) and against constant init, with 2 points of slack."""
    if not broken:
        return "it does not even break the symmetry"
    if acc >= acc_reference - 0.02:
        return "it breaks the symmetry and suffices: accuracy matches random init with it"
    if acc > acc_constant + 0.02:
        return "it breaks the symmetry but helps only partly: accuracy stays below random init"
    return "it breaks the symmetry but does not suffice: accuracy is no better than constant init"


def _breaker_accuracy(res: dict, cond: str) -> str:
    """``test accuracy A vs R for random init with the same breaker, ...`` for ``cond``."""
    acc = {c: r["test_accuracy"] for c, r in res["runs"].items()}
    ref = res["references"]["random" + cond[len("constant") :]]["test_accuracy"]
    return (
        f"test accuracy {acc[cond]:.2f} vs {ref:.2f} from random init with the same breaker, "
        f"{acc['random']:.2f} from random init without it and {acc['constant']:.2f} from "
        f"constant init"
    )


def _mlp_findings(res: dict, settings: dict) -> list[str]:
    runs = res["runs"]
    steps = runs["random"]["steps"][-1]
    units = settings["mlp_hidden"]
    acc = {c: runs[c]["test_accuracy"] for c in runs}
    fin = {c: runs[c]["final"]["hidden"] for c in runs}
    one = res["references"]["random_1_unit"]["test_accuracy"]
    f = fin["constant"]
    out = [
        f"From constant initialization the {units} hidden units of the MLP {_state(f)}: the "
        f"largest difference between units after {steps} steps is {_fmt(f['max_diff'])} "
        f"({f['distinct_units']} distinct unit(s), activation rank {f['activation_rank']}); "
        f"test accuracy {acc['constant']:.2f} vs {acc['random']:.2f} from random init, and "
        f"{one:.2f} for a random-init MLP with a single hidden unit.",
        f"From random initialization the MLP's hidden units {_state(fin['random'])} "
        f"({_details(fin['random'])}); train/test accuracy "
        f"{runs['random']['train_accuracy']:.2f}/{acc['random']:.2f}.",
        f"With constant hidden weights but a random output layer the MLP's hidden units "
        f"{_state(fin['constant_random_output'])} ({_details(fin['constant_random_output'])}); "
        f"test accuracy {acc['constant_random_output']:.2f}.",
    ]
    for cond, what in (
        ("constant_dropout", f"Dropout (p={settings['dropout']}) on the hidden units"),
        ("constant_noise", f"Gaussian noise (std {settings['noise']}) on the hidden units"),
    ):
        f = fin[cond]
        ref = res["references"]["random" + cond[len("constant") :]]["test_accuracy"]
        verdict = _verdict(f["max_diff"] > 0.0, acc[cond], ref, acc["constant"])
        out.append(
            f"{what} as the only symmetry breaker of the constant-initialized MLP: the units "
            f"{_state(f)} ({_details(f)}); {_breaker_accuracy(res, cond)} - {verdict}."
        )
    sweep = res.get("constant_width_sweep")
    if sweep:
        out.append(_sweep_finding(sweep, acc["constant"]))
    return out


def _sweep_finding(sweep: dict, acc_constant: float) -> str:
    """One sentence on which widths of constant-initialized MLPs stayed bit-identical."""
    widths = sorted(sweep, key=int)
    exact = [w for w in widths if max(sweep[w]["max_diff"]["hidden"]) == 0.0]
    inexact = [w for w in widths if w not in exact]
    span = f"{widths[0]} to {widths[-1]}"
    if not inexact:
        return (
            f"Constant-initialized MLPs of every width from {span} hidden units kept them "
            f"exactly identical on this CPU (largest difference 0.0)."
        )
    first = [next(d for d in sweep[w]["max_diff"]["hidden"] if d > 0.0) for w in inexact]
    final = [sweep[w]["final"]["hidden"] for w in inexact]
    accs = [sweep[w]["test_accuracy"] for w in inexact]
    broken = max(f["distinct_units"] for f in final) > 1

    def rng(values: list[float], fmt: str) -> str:
        lo, hi = format(min(values), fmt), format(max(values), fmt)
        return lo if lo == hi else f"{lo}-{hi}"

    tail = (
        "rounding alone broke the symmetry"
        if broken
        else "the rounding differences stayed below the distinct-unit tolerance"
    )
    return (
        f"Bit-exact symmetry depends on the CPU's matrix kernels summing every unit's products "
        f"in the same order: of constant-initialized MLPs with {span} hidden units, widths "
        f"{', '.join(exact) or 'none'} stayed exactly identical, but at widths "
        f"{', '.join(inexact)} the units differed by {rng(first, '.1g')} at the first checkpoint "
        f"(rounding) and "
        f"ended {rng([f['max_diff'] for f in final], '.2g')} apart with "
        f"{rng([f['distinct_units'] for f in final], 'd')} distinct units and test accuracy "
        f"{rng(accs, '.2f')} (vs {acc_constant:.2f} for the exactly symmetric width) - {tail}."
    )


def _cnn_findings(res: dict, settings: dict) -> list[str]:
    runs = res["runs"]
    steps = runs["random"]["steps"][-1]
    acc = {c: runs[c]["test_accuracy"] for c in runs}
    chance = 1.0 / res["classes"]

    def split(cond: str) -> str:
        fin = runs[cond]["final"]
        same = [n for n, f in fin.items() if f["max_diff"] == 0.0]
        diff = [f"{n} ({_fmt(f['max_diff'])})" for n, f in fin.items() if f["max_diff"] != 0.0]
        if not diff:
            return f"channels stayed exactly identical in every conv layer ({', '.join(same)})"
        if not same:
            return f"channels differ in every conv layer (largest differences {', '.join(diff)})"
        return (
            f"channels stayed exactly identical in {', '.join(same)} and differ in "
            f"{', '.join(diff)}"
        )

    def ranks(cond: str) -> str:
        fin = runs[cond]["final"]
        return ", ".join(f"{n} {f['activation_rank']}/{f['units']}" for n, f in fin.items())

    worst = max(f["max_diff"] for f in runs["constant"]["final"].values())
    bn = " (with BatchNorm)" if settings.get("cnn_batchnorm") else " (no BatchNorm)"
    out = [
        f"From constant initialization the CNN{bn}, trained {steps} steps: "
        f"{split('constant')}; the largest difference between channels' filters over all conv "
        f"layers is {_fmt(worst)}; activation ranks {ranks('constant')}; test accuracy "
        f"{acc['constant']:.2f} vs {acc['random']:.2f} from random init (chance {chance:.2f}).",
        f"From random initialization the CNN's {split('random')}; activation ranks "
        f"{ranks('random')}; train/test accuracy {runs['random']['train_accuracy']:.2f}/"
        f"{acc['random']:.2f}.",
        "With constant conv layers but a random output layer the CNN's "
        f"{split('constant_random_output')}; activation ranks {ranks('constant_random_output')}"
        f"; test accuracy {acc['constant_random_output']:.2f}.",
    ]
    for cond, what in (
        ("constant_dropout", f"Dropout (p={settings['dropout']}) after every conv layer"),
        ("constant_noise", f"Gaussian noise (std {settings['noise']}) after every conv layer"),
    ):
        broken = any(f["max_diff"] > 0.0 for f in runs[cond]["final"].values())
        ref = res["references"]["random" + cond[len("constant") :]]["test_accuracy"]
        verdict = _verdict(broken, acc[cond], ref, acc["constant"])
        out.append(
            f"{what} as the only symmetry breaker of the constant-initialized CNN, "
            f"{steps} steps: {split(cond)}; activation ranks {ranks(cond)}; "
            f"{_breaker_accuracy(res, cond)} - {verdict}."
        )
    return out


# --------------------------------------------------------------------------- experiment


def symmetry(
    out: str | Path | None = None,
    *,
    seed: int = 0,
    mlp_hidden: int = 8,
    mlp_points: int = 512,
    mlp_epochs: int = 60,
    mlp_lr: float = 1e-2,
    cnn_width: float = 0.25,
    cnn_batchnorm: bool = True,
    cnn_epochs: int = 6,
    cnn_lr: float = 3e-3,
    n: int = 2000,
    size: int = 32,
    batch_size: int = 32,
    const: float = 1.0,
    dropout: float = 0.3,
    noise: float = 0.1,
    checkpoints: int = 10,
    mlp_sweep: bool = True,
    threads: int | None = 1,
    progress: bool = True,
) -> SymmetryResult:
    """Train the corner-blob MLP and a small CNN under every condition of :data:`CONDITIONS`.

    The MLP (``mlp_hidden`` hidden units) trains ``mlp_epochs`` epochs on ``mlp_points``
    blob points (tested on as many fresh ones); the CNN (SimpleCNN of ``cnn_width``, with
    BatchNorm if ``cnn_batchnorm``) trains ``cnn_epochs`` epochs on ``n`` PartsWorld images
    of ``size`` px, normalized as SimpleCNN's preprocessing does (tested on ``n // 4`` images
    of another world). Both use Adam, mini-batches of ``batch_size`` and the same shuffling
    for every condition. ``const`` sets the constant init (weights ``const / fan_in``, biases
    0); ``dropout`` is the drop probability and ``noise`` the std of the activation noise.
    With ``mlp_sweep``, constant-initialized MLPs of every width from 2 to ``mlp_hidden``
    are trained too: whether identical units stay bit-identical depends on the CPU's matrix
    kernels summing every unit's products in the same order, which can fail for widths that
    are not a multiple of the kernels' block (the rounding differences then grow).
    ``threads`` (if not None) sets torch's CPU threads for the run and restores them after:
    these networks are too small to gain from more, and a fixed count keeps runs repeatable.

    Returns the result (its document also written to ``out/symmetry.json`` when ``out`` is
    given; ``interp experiment symmetry`` draws ``symmetry.png`` too), whose ``"findings"``
    are sentences with this run's numbers. The caller's torch RNG state is left as it was.
    """
    from tqdm.auto import tqdm

    settings = {
        "seed": seed,
        "mlp_hidden": mlp_hidden,
        "mlp_points": mlp_points,
        "mlp_epochs": mlp_epochs,
        "mlp_lr": mlp_lr,
        "cnn_width": cnn_width,
        "cnn_batchnorm": cnn_batchnorm,
        "cnn_epochs": cnn_epochs,
        "cnn_lr": cnn_lr,
        "n": n,
        "size": size,
        "batch_size": batch_size,
        "const": const,
        "dropout": dropout,
        "noise": noise,
        "checkpoints": checkpoints,
        "mlp_sweep": mlp_sweep,
        "threads": threads,
        "optimizer": "Adam",
        "distinct_tol": DISTINCT_TOL,
        "rank_tol": RANK_TOL,
    }
    build = {"seed": seed, "hidden": mlp_hidden, "width": cnn_width, "batchnorm": cnn_batchnorm}
    build |= {"const": const, "dropout": dropout, "noise": noise}
    common = {"batch_size": batch_size, "seed": seed, "checkpoints": checkpoints}
    mlp_steps = mlp_epochs * math.ceil(mlp_points / batch_size)
    cnn_steps = cnn_epochs * math.ceil(n / batch_size)
    sweep = [w for w in range(2, mlp_hidden) if mlp_sweep]
    runs = len(CONDITIONS) + len(REFERENCES)
    total = (runs + 1 + len(sweep)) * mlp_steps + runs * cnn_steps

    bar = tqdm(total=total, desc="symmetry", disable=not progress)

    def run(kind: str, condition: str, data: tuple, **over: object) -> dict:
        bar.set_postfix_str(f"{kind} {condition} {over or ''}".strip())
        model = build_model(kind, condition, **(build | over))
        epochs, lr = (mlp_epochs, mlp_lr) if kind == "mlp" else (cnn_epochs, cnn_lr)
        return train_run(model, data, epochs=epochs, lr=lr, on_step=bar.update, **common)

    try:
        with limited_threads(threads), torch.random.fork_rng(devices=[]):
            x, y = corner_blobs(2 * mlp_points, seed, shuffle=True)
            mlp_data = (x[:mlp_points], y[:mlp_points], x[mlp_points:], y[mlp_points:])
            mlp: dict = {"classes": len(CENTRES), "units": mlp_hidden}
            mlp["runs"] = {cond: run("mlp", cond, mlp_data) for cond in CONDITIONS}
            mlp["references"] = {ref: run("mlp", ref, mlp_data) for ref in REFERENCES}
            mlp["references"]["random_1_unit"] = run("mlp", "random", mlp_data, hidden=1)
            if mlp_sweep:
                mlp["constant_width_sweep"] = {
                    str(w): run("mlp", "constant", mlp_data, hidden=w) for w in sweep
                }
                mlp["constant_width_sweep"][str(mlp_hidden)] = mlp["runs"]["constant"]
            bar.set_postfix_str("drawing PartsWorld")
            cnn_data = _partsworld(n, size, seed)
            cnn: dict = {"classes": 6}
            cnn["runs"] = {cond: run("cnn", cond, cnn_data) for cond in CONDITIONS}
            cnn["references"] = {ref: run("cnn", ref, cnn_data) for ref in REFERENCES}
            cnn["units"] = {k: v["units"] for k, v in cnn["runs"]["random"]["final"].items()}
    finally:
        bar.close()

    summary = {
        "experiment": "symmetry",
        "settings": settings,
        "conditions": dict(CONDITIONS),
        "mlp": mlp,
        "cnn": cnn,
        "findings": _mlp_findings(mlp, settings) + _cnn_findings(cnn, settings),
        "notes": [
            "max_diff: largest |row_i - row_0| over units' incoming parameters (weights and "
            "bias; for conv layers the output channel's filter and bias, and its BatchNorm "
            "scale and shift if any).",
            f"distinct_units: units grouped when their parameters agree within {DISTINCT_TOL}.",
            f"activation_rank: singular values of the test activations (samples x units) above "
            f"{RANK_TOL} of the largest.",
            f"In symmetry.png differences of exactly 0 are drawn at {PLOT_FLOOR:g} (log axis).",
        ],
    }
    result = SymmetryResult(summary)
    if out is not None:
        result.save(out)
    return result


def _partsworld(
    n: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` training and ``n // 4`` test PartsWorld images (another seed) as tensors,
    normalized as SimpleCNN's preprocessing does."""
    x_tr, y_tr = partsworld_tensors(n, size, seed)
    x_te, y_te = partsworld_tensors(max(1, n // 4), size, seed + 1000)
    return simplecnn_input(x_tr), y_tr, simplecnn_input(x_te), y_te


@dataclass(eq=False)
class SymmetryResult(ExperimentResult):
    """The symmetry experiment's document: settings, the MLP's and the CNN's runs per
    condition (unit differences over training, final symmetry and accuracy), findings."""

    json_name: ClassVar[str] = "symmetry.json"
    #: where the figure draws differences of exactly 0 (log axis)
    plot_floor: ClassVar[float] = PLOT_FLOOR


register(
    Experiment(
        "symmetry",
        symmetry,
        SymmetryResult,
        questions={RANDOM_WEIGHTS: 1},
        figures=("symmetry",),
    )
)
