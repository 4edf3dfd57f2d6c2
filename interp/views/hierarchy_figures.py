"""Figures of the hierarchy check, fed its result (:class:`~interp.probes.hierarchy.Hierarchy`)
and the examples the pipeline prepared: profile by depth (a line per edge instrument), OSI
distributions, tuning curves, top detectors, first-conv filters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .figures import save_figure  # noqa: E402

__all__ = [
    "figures",
    "plot_detectors",
    "plot_filters",
    "plot_osi",
    "plot_profile",
    "plot_tuning",
    "save_figures",
]

CATEGORY_COLOURS = {
    "colour": "#e6a23c",
    "color": "#e6a23c",
    "edge": "#4c78a8",
    "texture": "#9d755d",
    "material": "#bab0ac",
    "part": "#54a24b",
    "object": "#e45756",
    "scene": "#b279a2",
}


def short_name(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


#: line styles of the edge instruments' fractions in the profile, in registration order
EDGE_STYLES = ("k.-", "C3s--", "C2^:", "C4d-.", "C5v--", "C6o:")


def plot_profile(result: Any, doc: dict[str, Any] | None = None) -> plt.Figure:
    """Stacked bars of detector fractions by category per layer, model above control, with
    each edge instrument's edge-unit fraction as a line (cf. Network Dissection, Fig. 5).

    ``result``: a :class:`~interp.probes.hierarchy.Hierarchy` (its ``edge_fractions`` name
    the lines); ``doc``: its ``to_dict()`` when the caller has it already."""
    doc = result.to_dict() if doc is None else doc
    rows = doc["layers"]
    names = [short_name(r["layer"]) for r in rows]
    lines = {
        key: (EDGE_STYLES[i % len(EDGE_STYLES)], f"edge units ({label})")
        for i, (key, label) in enumerate(result.edge_fractions)
    }
    cats = [c for c in rows[0]["fractions"] if c not in lines]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.55 * len(rows) + 2), 6.4), sharex=True)
    top = 0.05
    for key in ("fractions", "control_fractions"):
        stacked = [sum(r[key][c] for c in cats) for r in rows]
        top = max(top, *stacked, *(r[key].get(k, 0) for r in rows for k in lines))
    for ax, key, title in (
        (axes[0], "fractions", f"{doc['model']}"),
        (axes[1], "control_fractions", "random-init control (mean over seeds)"),
    ):
        bottom = np.zeros(len(rows))
        for c in cats:
            vals = np.array([r[key][c] for r in rows])
            ax.bar(
                x, vals, bottom=bottom, color=CATEGORY_COLOURS.get(c, None), label=f"{c} detectors"
            )
            bottom += vals
        for k, (style, label) in lines.items():
            edge = np.array([r[key].get(k, np.nan) for r in rows], dtype=float)
            ax.plot(x, edge, style, label=label, markersize=4)
        ax.set_ylabel("fraction of units")
        ax.set_ylim(0, min(1.0, top * 1.1))
        ax.set_title(title, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left", ncol=2)
    axes[1].set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    v = doc["verdict"]
    support = ", ".join(
        f"{k} {i['bootstrap_support']:.0%}" for k, i in v.get("instruments", {}).items()
    )
    fig.suptitle(
        f"early edges, later parts: {v.get('verdict', '?')} (support by edge instrument: "
        f"{support or 'n/a'})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot_osi(result: Any, doc: dict[str, Any] | None = None) -> plt.Figure:
    """Per-layer OSI distributions of the grating instrument, model next to its pooled
    controls, with the edge-unit threshold (the profile's ``edge_threshold_osi``)."""
    doc = result.to_dict() if doc is None else doc
    layers = list(result.layers)
    every = [*result.controls, *result.edge_controls]
    model = [result.model.gratings[name]["osi"] for name in layers]
    ctl = [np.concatenate([c.gratings[n]["osi"] for c in every if n in c.gratings]) for n in layers]
    thresholds = {r["layer"]: r["edge_threshold_osi"] for r in doc["layers"]}
    n = len(layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n + 2), 3.6))
    pos = np.arange(n)
    b1 = ax.boxplot(model, positions=pos - 0.18, widths=0.3, patch_artist=True, showfliers=False)
    b2 = ax.boxplot(ctl, positions=pos + 0.18, widths=0.3, patch_artist=True, showfliers=False)
    for patch in b1["boxes"]:
        patch.set_facecolor("#4c78a8")
    for patch in b2["boxes"]:
        patch.set_facecolor("#cccccc")
    ax.plot(pos, [thresholds[name] for name in layers], "r_", markersize=14, mew=2)
    ax.set_xticks(pos, [short_name(name) for name in layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("orientation selectivity (OSI)")
    ax.set_ylim(0, 1)
    ax.legend(
        [b1["boxes"][0], b2["boxes"][0], plt.Line2D([], [], color="r", marker="_", ls="")],
        ["model", "random-init control", "edge-unit threshold"],
        fontsize=7,
        loc="upper right",
    )
    ax.set_title(
        f"{result.model_name}: OSI per layer (boxes: quartiles, whiskers 1.5 IQR)", fontsize=10
    )
    fig.tight_layout()
    return fig


def figures(
    result: Any,
    *,
    tuning: list[dict[str, Any]] | None = None,
    detectors: dict[str, list[dict[str, Any]]] | None = None,
    first_conv: np.ndarray | None = None,
) -> dict[str, plt.Figure]:
    """The hierarchy check's figures: ``profile`` and (with the grating instrument) ``osi``
    from the result; ``tuning``, ``detectors`` and ``first_conv`` from the examples and
    weights the pipeline prepared (:mod:`interp.pipeline.hierarchy`)."""
    doc = result.to_dict()
    figs = {"profile": plot_profile(result, doc)}
    if result.layers and all(n in result.model.gratings for n in result.layers):
        figs["osi"] = plot_osi(result, doc)
    if tuning is not None:
        figs["tuning"] = plot_tuning(tuning, result.model_name)
    if detectors is not None:
        figs["detectors"] = plot_detectors(detectors, result.model_name)
    if first_conv is not None and result.model.filters is not None:
        figs["first_conv"] = plot_filters(first_conv, result.model.filters, result.model_name)
    return figs


def save_figures(result: Any, folder: str | Path, **prepared: Any) -> dict[str, Path]:
    """:func:`figures` as PNGs in ``folder`` (``prepared``: its keyword arguments)."""
    return {
        name: save_figure(fig, Path(folder) / f"{name}.png")
        for name, fig in figures(result, **prepared).items()
    }


def plot_detectors(examples: dict[str, list[dict[str, Any]]], title: str) -> plt.Figure:
    """One row per category, its best detectors side by side: each unit's top images with the
    concept mask tinted and the unit's region (activation above its threshold) outlined."""
    cats = [c for c, exs in examples.items() if exs]
    if not cats:
        fig, ax = plt.subplots(figsize=(5, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no detectors", ha="center", va="center")
        return fig
    per_unit = max(len(e["images"]) for c in cats for e in examples[c])
    units = max(len(examples[c]) for c in cats)
    cols = per_unit * units
    fig, axes = plt.subplots(
        len(cats), cols, figsize=(1.45 * cols, 1.75 * len(cats) + 0.5), squeeze=False
    )
    for r, cat in enumerate(cats):
        colour = np.array(matplotlib.colors.to_rgb(CATEGORY_COLOURS.get(cat, "#ff00ff")))
        for ax in axes[r]:
            ax.axis("off")
        for j, e in enumerate(examples[cat]):
            for c, img in enumerate(e["images"]):
                ax = axes[r, j * per_unit + c]
                img = np.clip(img, 0, 1)
                mask = e["masks"][c]
                if img.shape[:2] != mask.shape:
                    from PIL import Image

                    pil = Image.fromarray((img * 255).astype(np.uint8)).resize(mask.shape[::-1])
                    img = np.asarray(pil) / 255.0
                tint = img.copy()
                tint[mask] = 0.45 * tint[mask] + 0.55 * colour
                ax.imshow(tint)
                if e["regions"][c].any():
                    ax.contour(
                        e["regions"][c].astype(float), levels=[0.5], colors="white", linewidths=1
                    )
                if c == 0:
                    where = f"{short_name(e['layer'], 14)} #{e['unit']}"
                    ax.set_title(
                        f"{e['concept']}  IoU {e['iou']:.2f}\n{where}",
                        fontsize=7,
                        loc="left",
                    )
    fig.suptitle(
        f"{title}: best detectors per category (tint: concept mask; white outline: the unit's "
        "top-0.5% region)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig


def plot_filters(weights: np.ndarray, filters: Any, title: str) -> plt.Figure:
    """The first conv's filters (each scaled to [0, 1]) with Gabor R^2 and colour fraction."""
    n = weights.shape[0]
    cols = min(16, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols, 1.05 * rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        w = weights[i]
        w = (w - w.min()) / (w.max() - w.min() + 1e-12)
        img = w.transpose(1, 2, 0) if w.shape[0] == 3 else w[0]
        ax.imshow(img, cmap=None if w.shape[0] == 3 else "gray", interpolation="nearest")
        r2 = filters.gabor_r2[i]
        label = f"c{filters.colour_fraction[i]:.2f}"
        if not np.isnan(r2):
            label = f"R²{r2:.2f} " + label
        ax.set_title(label, fontsize=5)
    fig.suptitle(
        f"{title}: first conv ({filters.layer}); R²: Gabor fit, c: colour fraction", fontsize=8
    )
    fig.tight_layout()
    return fig


def plot_tuning(examples: list[dict[str, Any]], title: str) -> plt.Figure:
    """Example units: the feature visualization next to the evoked orientation tuning curve
    (at the preferred frequency and the contrast read), with OSI, drive ratio and status."""
    n = max(1, len(examples))
    fig, axes = plt.subplots(
        n, 2, figsize=(5.4, 1.9 * n + 0.4), squeeze=False, gridspec_kw={"width_ratios": [1, 1.7]}
    )
    for row, e in zip(axes, examples, strict=False):
        img_ax, ax = row
        img_ax.axis("off")
        if e.get("image") is not None:
            img_ax.imshow(np.clip(e["image"], 0, 1))
        img_ax.set_title(f"{short_name(e['layer'], 14)}:{e['unit']}", fontsize=7)
        theta = np.asarray(e["orientations"])
        curve = np.asarray(e["tuning"])
        ax.plot(np.r_[theta, 180.0], np.r_[curve, curve[:1]], "k.-")
        ax.set_xlim(0, 180)
        ax.set_xticks([0, 45, 90, 135, 180])
        ax.tick_params(labelsize=6)
        ax.set_ylabel("evoked F1/F0", fontsize=6)
        status = ", ".join(k for k, v in e["status"].items() if v) or "no instrument"
        ax.set_title(
            f"OSI {e['osi']:.2f}, drive {e['drive_ratio']:.2f}, contrast {e['contrast']:g}; "
            f"edge unit by: {status}",
            fontsize=6,
            loc="left",
        )
        ax.grid(alpha=0.3)
    for row in axes[len(examples) :]:
        for ax in row:
            ax.axis("off")
    axes[-1, 1].set_xlabel("stripe orientation (deg)", fontsize=7)
    fig.suptitle(f"{title}: example tuning curves", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return fig
