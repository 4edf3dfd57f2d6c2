"""The experiments' figures, drawn from their result objects.

Each figure is a function of an experiment's result (:mod:`interp.experiments`; used here only
through its document, ``result.doc``, and the data it carries) registered under the PNG name
an experiment declares in its :class:`~interp.experiments.registry.Experiment` ``figures``:
``@experiment_figure("symmetry")``. :func:`save_experiment_figures` draws them into a folder
(the suite does, for every experiment it runs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

from .figures import save_figure  # noqa: E402

__all__ = [
    "FIGURES",
    "experiment_figure",
    "plot_axis_alignment",
    "plot_boundaries",
    "plot_convergence",
    "plot_outcomes",
    "plot_redundancy",
    "plot_symmetry",
    "plot_transfer_anb",
    "plot_transfer_digits",
    "plot_transfer_probes",
    "save_experiment_figures",
]

#: figure functions by PNG name (without ``.png``): ``FIGURES[name](result) -> Figure``
FIGURES: dict[str, Callable[[Any], plt.Figure]] = {}


def experiment_figure(
    name: str,
) -> Callable[[Callable[[Any], plt.Figure]], Callable[[Any], plt.Figure]]:
    """Register the decorated ``fn(result) -> Figure`` as the figure ``name`` (``name.png``)."""

    def add(fn: Callable[[Any], plt.Figure]) -> Callable[[Any], plt.Figure]:
        FIGURES[name] = fn
        return fn

    return add


def save_experiment_figures(
    result: Any, names: Sequence[str], folder: str | os.PathLike[str]
) -> list[Path]:
    """Draw the figures ``names`` of ``result`` into ``folder`` (``<name>.png``, atomically)."""
    missing = [n for n in names if n not in FIGURES]
    if missing:
        raise KeyError(
            f"no figure registered as {', '.join(missing)}: add one with @experiment_figure"
        )
    return [save_figure(FIGURES[n](result), Path(folder) / f"{n}.png") for n in names]


# --------------------------------------------------------------------------- multiclass lab

_MC_CLASSES = 4
_LIM = 2.5  # half-width of the plotted square
_CLASS_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
_UNIT_COLOURS = ("black", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink")
_ROLE_COLOURS = ("tab:green", "tab:olive", "tab:orange", "tab:gray", "tab:red")
_CATEGORY_COLOURS = ("tab:red", "tab:green", "tab:olive", "tab:orange")


def _stacked_logits(params: Sequence[torch.Tensor], xt: torch.Tensor) -> torch.Tensor:
    w1, b1, w2, b2 = params
    return torch.baddbmm(b2, w2, torch.relu(torch.matmul(w1, xt) + b1))


def _params_of(records: Sequence[dict[str, Any]]) -> list[torch.Tensor]:
    """The stacked parameters of the records' networks, from their (rounded) JSON values."""
    w1 = torch.tensor([[u["w"] for u in r["units"]] for r in records])
    b1 = torch.tensor([[[u["b"]] for u in r["units"]] for r in records])
    w2 = torch.tensor([r["readout"]["w"] for r in records])
    b2 = torch.tensor([[[b] for b in r["readout"]["b"]] for r in records])
    return [w1, b1, w2, b2]


def _clip_line(w: Sequence[float], b: float, lim: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The ends of the segment of ``w.x + b = 0`` inside ``[-lim, lim]^2`` (None if outside)."""
    wv = np.asarray(w, dtype=float)
    norm = float(np.hypot(*wv))
    if norm == 0:
        return None
    p0 = -b * wv / norm**2
    d = np.array([-wv[1], wv[0]]) / norm
    lo, hi = -math.inf, math.inf
    for i in range(2):
        if abs(d[i]) < 1e-12:
            if abs(p0[i]) > lim:
                return None
            continue
        t1, t2 = (-lim - p0[i]) / d[i], (lim - p0[i]) / d[i]
        lo, hi = max(lo, min(t1, t2)), min(hi, max(t1, t2))
    if lo >= hi:
        return None
    return p0 + lo * d, p0 + hi * d


@experiment_figure("multiclass_boundaries")
def plot_boundaries(result: Any, n_panels: int = 12) -> plt.Figure:
    """The lab's 2-unit networks (else its smallest): a grid of the first ``n_panels`` seeds,
    training points coloured by class, the model's decision regions as background, each hidden
    unit's line with an arrow towards its active side (dashed: dead)."""
    results = result.doc["results"]
    h = 2 if "2" in results else min(int(k) for k in results)
    records = results[str(h)]["records"]
    x, y = result.x_train, result.y_train
    params = result.params.get(h) or _params_of(records)
    k = min(n_panels, len(records))
    ncols = min(4, k)
    nrows = math.ceil(k / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.2 * ncols, 3.3 * nrows), squeeze=False, sharex=True, sharey=True
    )
    grid = torch.linspace(-_LIM, _LIM, 161)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)])  # (2, M)
    with torch.no_grad():
        regions = _stacked_logits([p[:k] for p in params], pts).argmax(dim=1)  # (k, M)
    cmap = ListedColormap(_CLASS_COLOURS)
    xs, ys = x.numpy(), y.numpy()
    for i, ax in enumerate(axes.flat):
        if i >= k:
            ax.axis("off")
            continue
        rec = records[i]
        ax.imshow(
            regions[i].reshape(len(grid), len(grid)).numpy(),
            origin="lower",
            extent=(-_LIM, _LIM, -_LIM, _LIM),
            cmap=cmap,
            vmin=-0.5,
            vmax=_MC_CLASSES - 0.5,
            alpha=0.2,
            interpolation="nearest",
        )
        ax.scatter(xs[:, 0], xs[:, 1], c=ys, cmap=cmap, vmin=-0.5, vmax=_MC_CLASSES - 0.5, s=3)
        for j, unit in enumerate(rec["units"]):
            colour = _UNIT_COLOURS[j % len(_UNIT_COLOURS)]
            seg = _clip_line(unit["w"], unit["b"], _LIM)
            if seg is None:
                continue
            (ax0, ay0), (ax1, ay1) = seg
            style = "--" if unit["dead"] else "-"
            ax.plot([ax0, ax1], [ay0, ay1], style, color=colour, lw=1.4)
            mid = (seg[0] + seg[1]) / 2
            direction = np.asarray(unit["w"]) / np.hypot(*unit["w"]) * 0.45
            ax.annotate(
                "",
                xy=tuple(mid + direction),
                xytext=tuple(mid),
                arrowprops={"arrowstyle": "->", "color": colour, "lw": 1.4},
            )
            ax.text(*(mid - 0.25 * direction), f"u{j}", color=colour, fontsize=7)
        label = rec.get("category") or ("both axes" if rec["both_axes"] else "not both axes")
        dead = [f"u{j}" for j, unit in enumerate(rec["units"]) if unit["dead"]]
        if dead:
            label += f" ({', '.join(dead)})"
        ax.set_title(f"seed {rec['seed']}: {label}\ntest acc {rec['test_acc']:.2f}", fontsize=9)
        ax.set_xlim(-_LIM, _LIM)
        ax.set_ylim(-_LIM, _LIM)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
    handles = [
        plt.Line2D(
            [],
            [],
            ls="",
            marker="o",
            color=c,
            label=f"class {i} {tuple(result.doc['layout']['centres'][str(i)])}",
        )
        for i, c in enumerate(_CLASS_COLOURS)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    hidden = len(records[0]["units"]) if records else 0
    fig.suptitle(
        f"{hidden} hidden units: background = model's decision regions, lines = units "
        "(arrow: active side, dashed: dead)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return fig


@experiment_figure("multiclass_outcomes")
def plot_outcomes(result: Any) -> plt.Figure:
    """Left: the 2-unit outcome fractions (count and mean test accuracy on each bar). Right:
    per hidden size, the fraction of units in each role."""
    results = result.doc["results"]
    first = next(iter(results.values()))["summary"]
    roles = list(first["roles"])
    categories = list(results["2"]["summary"]["categories"]) if "2" in results else []
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), width_ratios=(1, 1.6))
    if "2" in results:
        cats = results["2"]["summary"]["categories"]
        fracs = [cats[c]["fraction"] for c in categories]
        bars = left.bar(categories, fracs, color=_CATEGORY_COLOURS)
        for bar_, c in zip(bars, categories, strict=True):
            left.text(
                bar_.get_x() + bar_.get_width() / 2,
                bar_.get_height() + 0.01,
                f"{cats[c]['count']} seeds\nacc {_mc_fmt(cats[c]['mean_test_acc'])}",
                ha="center",
                va="bottom",
                fontsize=8,
            )
        left.set_ylim(0, min(1.0, max(fracs) + 0.25) if fracs else 1)
        n = results["2"]["summary"]["n_seeds"]
        left.set_title(f"2 hidden units: outcome over {n} seeds", fontsize=10)
        left.set_ylabel("fraction of seeds")
    else:
        left.text(0.5, 0.5, "2 hidden units not run", ha="center", va="center")
        left.axis("off")
    keys = list(results)
    width = 0.8 / len(roles)
    for j, role in enumerate(roles):
        vals = [results[k]["summary"]["roles"][role]["fraction_of_units"] for k in keys]
        pos = [i + (j - (len(roles) - 1) / 2) * width for i in range(len(keys))]
        right.bar(pos, vals, width=width, color=_ROLE_COLOURS[j], label=role)
    labels = []
    for k in keys:
        s = results[k]["summary"]
        labels.append(
            f"H={k}\nboth axes {s['fraction_both_axes']:.0%}\nacc {s['mean_test_acc']:.3f}"
        )
    right.set_xticks(range(len(keys)), labels, fontsize=8)
    right.set_ylabel("fraction of units")
    right.set_ylim(0, 1)
    right.set_title("what the hidden units do", fontsize=10)
    right.legend(fontsize=8, ncol=len(roles), loc="upper center")
    fig.tight_layout()
    return fig


def _mc_fmt(acc: float | None) -> str:
    return "n/a" if acc is None else f"{acc:.2f}"


# --------------------------------------------------------------------------- symmetry

_SHORT_NAMES: dict[str, str] = {
    "random": "random",
    "constant": "constant",
    "constant_random_output": "constant\n+ random\noutput",
    "constant_dropout": "constant\n+ dropout",
    "constant_noise": "constant\n+ noise",
    "random_dropout": "random\n+ dropout",
    "random_noise": "random\n+ noise",
    "random_1_unit": "random,\n1 unit",
}


@experiment_figure("symmetry")
def plot_symmetry(result: Any) -> plt.Figure:
    """Unit differences over training (top) and accuracies (bottom), MLP left, CNN right; a
    difference of exactly 0 is drawn at ``result.plot_floor`` (log axis)."""
    summary = result.doc
    floor = result.plot_floor
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, (kind, title) in enumerate(
        (("mlp", "MLP (corner blobs)"), ("cnn", "CNN (PartsWorld)"))
    ):
        runs = summary[kind]["runs"]
        ax = axes[0, col]
        for i, (cond, run) in enumerate(runs.items()):
            diffs = np.array(list(run["max_diff"].values()))  # layers x checkpoints
            colour = colours[i % len(colours)]
            ax.plot(
                run["steps"],
                np.maximum(diffs.max(0), floor),
                "o-",
                color=colour,
                label=summary["conditions"][cond],
            )
            if len(diffs) > 1:
                ax.plot(run["steps"], np.maximum(diffs.min(0), floor), "--", color=colour)
        sweep = summary[kind].get("constant_width_sweep") or {}
        label = "constant init, other widths"
        for width, run in sweep.items():
            if width != str(summary[kind]["units"]):
                diffs = np.maximum(np.array(run["max_diff"]["hidden"]), floor)
                ax.plot(run["steps"], diffs, ":", color="0.55", lw=1, label=label)
                label = None
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ylabel = "max difference between units"
        if kind == "cnn":
            ylabel += "\n(solid: max over conv layers, dashed: min)"
        ax.set_ylabel(ylabel)
        ax.set_title(f"{title}: exact 0 drawn at {floor:g}")
        ax.legend(fontsize=8)
        ax = axes[1, col]
        every = runs | summary[kind].get("references", {})
        names = list(every)
        xs = np.arange(len(names))
        ax.bar(xs - 0.2, [every[c]["train_accuracy"] for c in names], 0.4, label="train")
        ax.bar(xs + 0.2, [every[c]["test_accuracy"] for c in names], 0.4, label="test")
        if len(names) > len(runs):
            ax.axvline(len(runs) - 0.5, color="0.3", lw=0.8)
            ax.text(len(runs) - 0.4, 1.2, "references", fontsize=8, va="center")
        ax.axhline(1.0 / summary[kind]["classes"], color="0.5", ls=":", label="chance")
        ax.set_xticks(xs, [_SHORT_NAMES.get(c, c) for c in names], fontsize=8)
        ax.set_ylim(0, 1.3)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}: accuracy")
        ax.legend(fontsize=8, loc="upper left", ncol=3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- convergence


@experiment_figure("convergence")
def plot_convergence(result: Any) -> plt.Figure:
    """CKA between the layers of different seeds (linear, minibatch; mean over seed pairs) and
    the one-to-one matched correlations of units, seed 0 against the others."""
    summary = result.doc
    lin, mb = result.cka_linear, result.cka_minibatch
    if lin is None:  # a loaded result: the document's (rounded) matrices
        lin = np.asarray(summary["cka_linear_cross_seed"])
        mb = np.asarray(summary["cka_minibatch_cross_seed"])
    probed = list(summary["matching"])
    names = [n.replace("features.", "") for n in summary["layers"]]
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.0))
    for ax, mat, title in ((axes[0], lin, "linear CKA"), (axes[1], mb, "minibatch CKA")):
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("layer of seed b")
        ax.set_ylabel("layer of seed a")
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(
                    j,
                    i,
                    f"{mat[i, j]:.2f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="w" if mat[i, j] < 0.6 else "k",
                )
        ax.set_title(f"{title} across seeds (mean of pairs)", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    ax = axes[2]
    data = [summary["matching"][n]["matched_r"] for n in probed]
    ax.boxplot(data, showfliers=False)
    ax.set_xticks(range(1, len(probed) + 1), names[: len(probed)], fontsize=7)
    ax.set_ylabel("correlation with the matched unit")
    ax.set_ylim(-0.1, 1.0)
    ax.set_title("one-to-one unit matching, seed 0 vs others", fontsize=9)
    fig.suptitle(
        f"{summary['seeds']} PartsWorld CNN seeds: corresponding layer found by linear CKA in "
        f"{summary['layer_identification_linear']:.0%} of cases",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- redundancy


@experiment_figure("redundancy")
def plot_redundancy(result: Any) -> plt.Figure:
    """Mean |r| and near-duplicate pairs over training, and mean |r| by width."""
    summary = result.doc
    widths = list(summary["widths"])
    convs = list(summary["training"][0]["layers"])
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    steps = [max(1, t["step"]) for t in summary["training"]]
    for c in convs:
        label = c.split(".")[-1]
        axes[0].plot(
            steps, [t["layers"][c]["mean_abs_r"] for t in summary["training"]], "o-", label=label
        )
        axes[1].plot(
            steps,
            [t["layers"][c]["near_duplicates_r_above_0.9"] for t in summary["training"]],
            "o-",
            label=label,
        )
    for ax, title in ((axes[0], "mean |r| between units"), (axes[1], "near-duplicate pairs")):
        ax.set_xscale("log")
        ax.set_xlabel("training step (init plotted at 1)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    x = np.arange(len(convs))
    for k, w in enumerate(widths):
        vals = [summary["widths"][w]["layers"][c]["mean_abs_r"] for c in convs]
        axes[2].bar(x + (k - 1) * 0.25, vals, width=0.25, label=f"width {w}")
    axes[2].set_xticks(x, [c.split(".")[-1] for c in convs])
    axes[2].set_title("mean |r| after training, by width", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.suptitle("Redundancy within layers of the PartsWorld CNN (post-ReLU, all positions)")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- axis alignment


@experiment_figure("axis_alignment")
def plot_axis_alignment(result: Any) -> plt.Figure:
    """Unique concepts detected: original units, a permutation (control), random rotations."""
    summary = result.doc
    layers = list(summary["layers"])
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    x = np.arange(len(layers))
    orig = [summary["layers"][n]["original"]["unique"] for n in layers]
    perm = [summary["layers"][n]["permutation"][0]["unique"] for n in layers]
    rot = [[r["unique"] for r in summary["layers"][n]["rotation"]] for n in layers]
    ax.bar(x - 0.25, orig, width=0.25, label="original units")
    ax.bar(x, perm, width=0.25, label="permuted (control)")
    ax.bar(x + 0.25, [np.mean(r) for r in rot], width=0.25, label="random rotation (mean)")
    for i, r in enumerate(rot):
        ax.plot([i + 0.25] * len(r), r, "k.", ms=4)
    ax.set_xticks(x, layers)
    ax.set_ylabel("unique concepts detected")
    ax.legend(fontsize=7)
    ax.set_title("Axis alignment: same function, rotated basis", fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- transfer


@experiment_figure("transfer_probes")
def plot_transfer_probes(result: Any) -> plt.Figure:
    """Linear-probe accuracy per layer, trained vs random-init sources, per target."""
    summary = result.doc
    pretty = result.pretty_names
    if "probes" not in summary:
        return _not_run("linear probes not run (anb=False)")
    probes = summary["probes"]
    cells = [(f, t) for f in probes for t in probes[f]]
    cols = 2
    rows = math.ceil(len(cells) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.6 * rows), squeeze=False)
    for ax, (family, target) in zip(axes.flat, cells, strict=False):
        res = probes[family][target]
        layers = list(res["trained"])
        xs = np.arange(1, len(layers) + 1)
        label = "ImageNet" if family == "efficientnet_lite0" else "trained (base A)"
        ax.plot(xs, [res["trained"][k] for k in layers], "o-", label=label)
        ax.plot(xs, [res["random"][k] for k in layers], "s--", label="random init")
        ax.axhline(1 / res["classes"], color="grey", lw=0.8, ls=":", label="chance")
        ax.set_xticks(xs, [k.replace("features.", "") for k in layers], rotation=45, fontsize=7)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel("linear-probe test accuracy")
        ax.set_title(f"{pretty[family]} -> {pretty[target]}", fontsize=9)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(cells) :]:
        ax.axis("off")
    fig.suptitle("Linear probes on global-average-pooled features", fontsize=10)
    fig.tight_layout()
    return fig


@experiment_figure("transfer_anb")
def plot_transfer_anb(result: Any) -> plt.Figure:
    """AnB / BnB / fine-tuned / random-frozen test accuracy on B by copied blocks n: means
    over seeds with 95% intervals (seeds and test images)."""
    summary = result.doc
    if "anb" not in summary:
        return _not_run("AnB / BnB not run (anb=False)")
    anb = summary["anb"]
    ns = np.array(anb["n"], dtype=float)
    fig, ax = plt.subplots(figsize=(6.6, 4.3))
    styles = {
        "AnB": ("tab:red", "o", "-", -0.12),
        "AnB+": ("tab:red", "^", "--", -0.06),
        "BnB": ("tab:blue", "o", "-", 0.0),
        "BnB+": ("tab:blue", "^", "--", 0.06),
        "random-frozen": ("tab:grey", "x", ":", 0.12),
    }
    lows = []
    for name, (colour, marker, ls, dx) in styles.items():
        rows = anb[name]
        mean = np.array([r["mean"] for r in rows])
        err = np.array([[r["mean"] - r["lo"] for r in rows], [r["hi"] - r["mean"] for r in rows]])
        ax.errorbar(ns + dx, mean, yerr=err, color=colour, marker=marker, ls=ls, label=name,
                    capsize=2, ms=4)  # fmt: skip
        lows.append(min(r["lo"] for r in rows))
    base = anb["base_b"]
    ax.axhspan(base["lo"], base["hi"], color="black", alpha=0.08)
    ax.axhline(base["mean"], color="black", ls="--", lw=1, label="base B (95% band)")
    spec = anb["specificity"]["n"]
    if spec is not None:
        ax.axvline(spec, color="tab:purple", ls=":", lw=1, label=f"specificity starts (n={spec})")
    ax.set_xticks([0, *anb["n"]])
    ax.set_xlabel("n: conv blocks copied (conv + BN); 0 = base B")
    ax.set_ylabel("test accuracy on B")
    k = len(summary["settings"]["split"][1])
    ax.axhline(1 / k, color="grey", lw=0.6, ls="-.")
    ax.set_ylim(min(1 / k, *lows) - 0.05, 1.0)
    seeds = anb.get("seeds", 1)
    ax.set_title(
        f"AnB / BnB on PartsWorld, {seeds} seed(s) (Yosinski et al. 2014, Fig. 2 style)",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


@experiment_figure("transfer_digits")
def plot_transfer_digits(result: Any) -> plt.Figure:
    """EfficientNet-Lite0 fine-tuned on digits: accuracy by labelled images per class
    (ImageNet vs random init), and by frozen depth (frozen ImageNet vs frozen random
    blocks); means over seeds with 95% intervals."""
    d = result.doc.get("digits")
    if not d:
        return _not_run("digits fine-tuning not run (digits=False)")
    frozen = d["frozen"]
    wide = len(frozen) > 1  # frozen depths measured: a second panel
    fig, axes = plt.subplots(1, 2 if wide else 1, figsize=(11.5 if wide else 6, 4.3), squeeze=False)
    axes = axes[0]
    styles = {
        "imagenet": ("tab:orange", "o", "ImageNet init"),
        "random": ("tab:grey", "s", "random init"),
    }

    def draw(ax: plt.Axes, xs: np.ndarray, rows: list[dict], init: str, dx: float, **kw: Any):
        colour, marker, label = styles[init]
        mean = np.array([r[init]["mean"] for r in rows])
        err = np.array([[r[init]["mean"] - r[init]["lo"] for r in rows],
                        [r[init]["hi"] - r[init]["mean"] for r in rows]])  # fmt: skip
        ax.errorbar(xs + dx, mean, yerr=err, color=colour, marker=marker, capsize=2, ms=4,
                    label=label + kw.pop("suffix", ""), **kw)  # fmt: skip

    rows = d["per_class"]
    xs = np.arange(len(rows), dtype=float)
    for init, dx in (("imagenet", -0.05), ("random", 0.05)):
        draw(axes[0], xs, rows, init, dx)
    for x, r in zip(xs, rows, strict=True):
        axes[0].annotate(f"{r['gain']['mean']:+.2f}", (x, r["imagenet"]["hi"] + 0.01),
                         ha="center", fontsize=7, color="tab:orange")  # fmt: skip
    axes[0].set_xticks(xs, [f"{r['per_class']}\n({r['train']})" for r in rows])
    axes[0].set_xlabel("labelled images per class (training images)")
    axes[0].set_ylabel("digits test accuracy")
    axes[0].set_title("Fine-tuned whole: gain of the ImageNet init (orange numbers)", fontsize=9)
    axes[0].axhline(0.1, color="grey", lw=0.6, ls="-.")
    axes[0].set_ylim(0, 1.02)
    axes[0].legend(fontsize=7, loc="lower right")

    if not wide:
        return _titled(fig, d)
    rows = frozen
    xs = np.arange(len(rows), dtype=float)
    for init, dx in (("imagenet", -0.05), ("random", 0.05)):
        draw(axes[1], xs, rows, init, dx, suffix=", frozen to depth")
    spec = d.get("specific_from")
    if spec:
        k = next(i for i, r in enumerate(rows) if r["depth"] == spec["depth"])
        axes[1].axvline(k, color="tab:purple", ls=":", lw=1,
                        label=f"freezing costs from {spec['through']}")  # fmt: skip
    axes[1].set_xticks(xs, [r["through"] for r in rows], rotation=30, fontsize=7)
    axes[1].set_xlabel("frozen through (stem and blocks up to; head: all but the classifier)")
    axes[1].set_title(
        f"Frozen depth ({d['frozen_per_class']} images per class): ImageNet vs random blocks",
        fontsize=9,
    )
    axes[1].axhline(0.1, color="grey", lw=0.6, ls="-.")
    axes[1].set_ylim(0, 1.02)
    axes[1].legend(fontsize=7, loc="lower left")
    return _titled(fig, d)


def _titled(fig: plt.Figure, d: dict[str, Any]) -> plt.Figure:
    seeds = len(d.get("seeds", [])) or 1
    fig.suptitle(
        f"EfficientNet-Lite0 fine-tuned on digits ({seeds} seed(s); 95% intervals over seeds "
        "and test images)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _not_run(text: str) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(5, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9)
    return fig
