"""Figures of the hierarchy check: profile by depth, OSI distributions, top detectors, filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = [
    "plot_profile",
    "plot_osi",
    "plot_detectors",
    "plot_dissection",
    "plot_filters",
    "plot_tuning",
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


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def plot_profile(doc: dict[str, Any]) -> plt.Figure:
    """Stacked bars of detector fractions by category per layer, model above control, with the
    edge-unit fractions of the grating and ERF instruments as lines (cf. Network Dissection,
    Fig. 5)."""
    rows = doc["layers"]
    names = [_short(r["layer"]) for r in rows]
    lines = {
        "edge_gratings": ("k.-", "edge units (gratings)"),
        "edge_erf": ("C3s--", "edge units (ERF fit)"),
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


def plot_osi(
    layers: Sequence[str],
    osi: dict[str, np.ndarray],
    control_osi: Sequence[dict[str, np.ndarray]],
    thresholds: dict[str, float],
    title: str,
) -> plt.Figure:
    """Per-layer OSI distributions, model next to control, with the edge-unit threshold."""
    n = len(layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * n + 2), 3.6))
    pos = np.arange(n)
    model = [osi[name] for name in layers]
    ctl = [np.concatenate([c[name] for c in control_osi]) for name in layers]
    b1 = ax.boxplot(model, positions=pos - 0.18, widths=0.3, patch_artist=True, showfliers=False)
    b2 = ax.boxplot(ctl, positions=pos + 0.18, widths=0.3, patch_artist=True, showfliers=False)
    for patch in b1["boxes"]:
        patch.set_facecolor("#4c78a8")
    for patch in b2["boxes"]:
        patch.set_facecolor("#cccccc")
    ax.plot(pos, [thresholds[name] for name in layers], "r_", markersize=14, mew=2)
    ax.set_xticks(pos, [_short(name) for name in layers], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("orientation selectivity (OSI)")
    ax.set_ylim(0, 1)
    ax.legend(
        [b1["boxes"][0], b2["boxes"][0], plt.Line2D([], [], color="r", marker="_", ls="")],
        ["model", "random-init control", "edge-unit threshold"],
        fontsize=7,
        loc="upper right",
    )
    ax.set_title(f"{title}: OSI per layer (boxes: quartiles, whiskers 1.5 IQR)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_dissection(doc: dict[str, Any], title: str) -> plt.Figure:
    """Network Dissection by depth (``Dissection.to_dict()``): per layer, the fraction of its
    units that detect a concept of each category (stacked), with the detector count."""
    layers = doc["layers"]
    cats = list(layers[0]["fraction_by_category"]) if layers else []
    fig, ax = plt.subplots(figsize=(max(4.5, 0.55 * len(layers) + 2.5), 3.4))
    pos = np.arange(len(layers))
    bottom = np.zeros(len(layers))
    for cat in cats:
        share = np.array([row["fraction_by_category"].get(cat, 0.0) for row in layers])
        ax.bar(pos, share, 0.7, bottom=bottom, label=cat, color=CATEGORY_COLOURS.get(cat))
        bottom += share
    for x, row, top in zip(pos, layers, bottom, strict=True):
        ax.text(x, top + 0.01, f"{row['detectors']}/{row['units']}", ha="center", fontsize=6)
    names = [_short(row["layer"]) for row in layers]
    ax.set_xticks(pos, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, max(0.1, float(bottom.max(initial=0.0)) * 1.2))
    ax.set_ylabel("fraction of units detecting")
    if cats:
        ax.legend(fontsize=7, loc="upper left")
    ax.set_title(f"{title}: detectors by category (labels: detectors/units)", fontsize=10)
    fig.tight_layout()
    return fig


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
                    where = f"{_short(e['layer'], 14)} #{e['unit']}"
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
        img_ax.set_title(f"{_short(e['layer'], 14)}:{e['unit']}", fontsize=7)
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
