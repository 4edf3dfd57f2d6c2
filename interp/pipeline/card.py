"""The unit card: one unit shown three ways on one PNG.

* its **feature visualization** (what an optimized image that excites it looks like);
* its **top dataset examples** (receptive-field crops with activations), each with where in the
  image it fires (its activation map, upsampled) and which input pixels drive it (an
  attribution through captum of the unit's value at its peak in that image, integrated
  gradients by default);
* its **scores**: the edge probe's OSI and preferred orientation, and — when a hierarchy check
  of the model is given (``hierarchy=DIR``, the ``--out`` of ``interp hierarchy``) — its
  Network Dissection label with IoU, whether it is an edge unit
  (:meth:`~interp.probes.hierarchy.Hierarchy.unit_scores`: the same reading as the explorer's
  tile and unit page and the report's index) with each edge instrument's status, and its
  class selectivity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..activations import capture, resolve_layer
from ..attribution import attribute
from ..checks import check_int
from ..dataset_examples import crop, examples, examples_data
from ..errors import ChannelError, InterpError
from ..featvis.render import render_channels
from ..models.base import Model
from ..models.registry import as_model
from ..probes.edges import edge_probe
from ..probes.hierarchy import Hierarchy
from ..settings import ATTRIBUTION
from ..utils import load_arrays, make_dir, only_stem, save_arrays
from ..views.unit_figures import heat_overlay, save_unit_card

__all__ = ["UnitCard", "unit_card", "parse_unit"]


@dataclass
class UnitCard:
    """What :func:`unit_card` returns: one unit's feature visualization, top dataset examples
    (crop, where it fires, what drives it) and scores."""

    model: str
    layer: str
    channel: int
    rf_size: int
    featvis: np.ndarray  # (H, W, 3) in [0, 1]
    featvis_value: float
    scores: dict[str, Any]
    rows: list[dict[str, Any]]  # crop, value, fires, drives (arrays) and the example's entry
    lines: list[str]
    data: str
    method: str
    files: dict[str, str] = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return f"card_{self.layer.replace('/', '_')}_{self.channel}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layer": self.layer,
            "channel": self.channel,
            "rf_size": self.rf_size,
            "featvis_value": self.featvis_value,
            "scores": self.scores,
            "examples": [r["entry"] for r in self.rows],
            "data": self.data,
            "method": self.method,
            "lines": self.lines,
            **({"png": self.files["png"]} if "png" in self.files else {}),
        }

    def save(self, folder: str | Path) -> Path:
        """Write ``card_<layer>_<channel>.json`` and ``.npz`` (the feature visualization and
        each example's crop, activation and attribution overlays), atomically; the PNG is
        :func:`interp.views.unit_figures.save_unit_card`'s. Returns the JSON's path."""
        arrays = {"featvis": self.featvis}
        for i, row in enumerate(self.rows):
            arrays |= {f"{k}_{i}": row[k] for k in ("crop", "fires", "drives")}
        return save_arrays(folder, self.stem, arrays, self.to_dict())[1]

    @classmethod
    def load(cls, path: str | Path) -> UnitCard:
        """The card that :meth:`save` wrote (``path``: its JSON or its folder, when it holds
        one card)."""
        path = Path(path)
        folder, stem = (
            (path, only_stem(path, "card_*.json", "unit card"))
            if path.is_dir()
            else (path.parent, path.stem)
        )
        arrays, doc = load_arrays(folder, stem)
        rows = [
            {
                "crop": arrays[f"crop_{i}"],
                "value": entry["value"],
                "fires": arrays[f"fires_{i}"],
                "drives": arrays[f"drives_{i}"],
                "entry": entry,
            }
            for i, entry in enumerate(doc["examples"])
        ]
        card = cls(
            model=doc["model"],
            layer=doc["layer"],
            channel=int(doc["channel"]),
            rf_size=int(doc["rf_size"]),
            featvis=arrays["featvis"],
            featvis_value=float(doc["featvis_value"]),
            scores=doc["scores"],
            rows=rows,
            lines=list(doc["lines"]),
            data=doc["data"],
            method=doc["method"],
        )
        if "png" in doc:
            card.files["png"] = doc["png"]
        return card


def parse_unit(model: Model, unit: str) -> tuple[str, int]:
    """``"LAYER:CHANNEL"`` -> (dotted layer, channel), with the channel range checked."""
    name, sep, channel = str(unit).rpartition(":")
    if not sep or not channel.strip().isdigit():
        raise InterpError(f"give the unit as LAYER:CHANNEL (e.g. _blocks.5:12), not {unit!r}")
    layer = resolve_layer(model, name)
    with torch.no_grad():
        act = capture(model, model.example_input(1), [layer])[layer]
    c = int(channel)
    if not (isinstance(act, torch.Tensor) and act.dim() == 4):
        raise InterpError(f"layer {layer} has no 4-D (N, C, H, W) output")
    if not 0 <= c < act.shape[1]:
        raise ChannelError(
            f"channel {c} is out of range for {layer} ({act.shape[1]} channels: "
            f"0-{act.shape[1] - 1})"
        )
    return layer, c


def _hierarchy_scores(folder: Path, layer: str, channel: int) -> dict[str, Any]:
    if not (folder / Hierarchy.JSON).is_file():
        raise InterpError(f"{folder} holds no hierarchy check (no hierarchy.json)")
    if not (folder / "networks").is_dir():
        raise InterpError(
            f"{folder} holds a hierarchy check from an older interp (no networks/ folder): "
            "run `interp hierarchy` again"
        )
    result = Hierarchy.load(folder)
    if layer not in result.layers:
        return {"note": f"the hierarchy check in {folder} did not measure {layer}"}
    score = result.unit_scores(layer)[channel]  # the explorer's and the index's reading
    v = score.values
    out: dict[str, Any] = {
        "label": v.get("label"),
        "best_concept": v.get("concept"),
        "iou": v.get("iou"),
    }
    out |= {col.key: v.get(col.key) for col in result.columns if v.get(col.key) is not None}
    if v.get("selectivity") is not None:
        out["selectivity"] = v["selectivity"]
    out["edge_unit"] = score.edge
    out["edge_unit_by"] = dict(score.statuses)  # True, False or None (not measured)
    out["edge_instruments"] = {i.name: i.label for i in result.instruments}
    thresholds = result.edge_thresholds  # the grating instrument's OSI cut, where it ran
    if layer in thresholds:
        out["edge_threshold_osi"] = thresholds[layer]
    return out


def _edge_line(h: dict[str, Any]) -> str:
    """``edge unit: yes (by gratings, ERF fit)`` or ``no``, with the unmeasured named."""
    labels = h.get("edge_instruments", {})
    by = h["edge_unit_by"]
    yes = [labels.get(k, k) for k, s in by.items() if s]
    unmeasured = [labels.get(k, k) for k, s in by.items() if s is None]
    text = "not measured" if h["edge_unit"] is None else "yes" if h["edge_unit"] else "no"
    if yes:
        text += f" (by {', '.join(yes)})"
    if unmeasured:
        text += f"; not measured by {', '.join(unmeasured)}"
    return f"         edge unit: {text}"


def unit_card(
    model: Model,
    unit: str,
    out: str | Path | None = None,
    *,
    data: str = "photos",
    n: int | None = 300,
    size: int | None = None,
    k: int = 6,
    method: str = ATTRIBUTION.method,
    n_steps: int = 32,
    hierarchy: str | Path | None = None,
    steps: int = 256,
    featvis_size: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> UnitCard:
    """The card of ``unit`` (``LAYER:CHANNEL``); with ``out``, saved there as
    ``card_<layer>_<channel>.png`` and ``.json``.

    Args:
        model: the model.
        unit: ``"LAYER:CHANNEL"``.
        out: output folder.
        data, n, size: dataset for the examples (default: 300 random photo crops).
        k: dataset examples shown.
        method: attribution method for "drives" (``ig``, ``saliency``, ``gradcam``,
            ``conductance``).
        n_steps: integration steps of ig/conductance.
        hierarchy: folder of an ``interp hierarchy`` run of this model, for the label and scores.
        steps, featvis_size: feature visualization settings.
    """
    for name, value in (("n", n), ("k", k), ("n_steps", n_steps), ("steps", steps)):
        check_int(name, value, low=0 if name == "steps" else 1, optional=name == "n")
    check_int("size", size, low=8, optional=True)
    check_int("featvis_size", featvis_size, low=8)
    model = as_model(model)
    layer, channel = parse_unit(model, unit)
    folder = None if out is None else make_dir(out)

    vis = render_channels(
        model, layer, [channel], steps=steps, size=featvis_size, seed=seed, progress=progress
    )
    featvis = vis.images[0].permute(1, 2, 0).numpy()
    if featvis.shape[2] == 1:
        featvis = np.repeat(featvis, 3, axis=2)

    if size is None and data == "photos":
        size = model.input_size[0]
    dataset = examples_data(data, size=size, n=n, seed=seed)
    found = examples(model, dataset, [layer], k=k, progress=progress)[layer]
    rows = []
    for e in found.unit(channel):
        img = dataset[e["item"]][0]
        shown = img.permute(1, 2, 0).numpy()
        shown = np.repeat(shown, 3, axis=2) if shown.shape[2] == 1 else shown
        with torch.no_grad():
            act = capture(model, model.normalize(img[None]).to(model.device), [layer])[layer]
        amap = act[:, channel : channel + 1].float()
        up = torch.nn.functional.interpolate(
            amap, size=img.shape[-2:], mode="bilinear", align_corners=False
        )[0, 0].cpu()
        attr = attribute(
            model,
            img,
            method,
            target=f"{layer}:{channel}",
            n_steps=n_steps,
            position=tuple(e["position"]) if method in ("ig", "saliency") else None,
        )
        rows.append(
            {
                "crop": crop(img, e["box"], 96),
                "value": e["value"],
                "fires": heat_overlay(shown, up.numpy()),
                "drives": heat_overlay(shown, attr.map, attribution=True),
                "entry": e,
            }
        )

    edge = edge_probe(model, [layer])[layer]
    scores: dict[str, Any] = {
        "osi": round(float(edge.osi[channel]), 4),
        "preferred_orientation_deg": float(edge.preferred_orientation[channel]),
        "preferred_frequency_cpp": float(edge.preferred_frequency[channel]),
        "drive_ratio_photos": round(float(edge.drive_ratio[channel]), 4),
        "simple_like": bool(edge.simple[channel]),
    }
    if hierarchy is not None:
        scores["hierarchy"] = _hierarchy_scores(Path(hierarchy), layer, channel)
    lines = [
        f"model    {model.name}",
        f"unit     {layer}:{channel}   (RF {found.rf_size} px, "
        f"grid {found.grid[0]}x{found.grid[1]})",
        f"edges    evoked OSI {scores['osi']:.2f}, prefers "
        f"{scores['preferred_orientation_deg']:.0f} deg at "
        f"{scores['preferred_frequency_cpp']:.3f} cycles/px; drive ratio "
        f"{scores['drive_ratio_photos']:.2f} on photos; "
        f"{'simple' if scores['simple_like'] else 'complex'}-like",
    ]
    h = scores.get("hierarchy")
    if h and "label" in h:
        label = h["label"] or f"no detector (best {h['best_concept']})"
        lines.append(f"label    {label}, IoU {h['iou']:.3f}")
        if "edge_unit_by" in h:
            lines.append(_edge_line(h))
        if "selectivity" in h:
            lines.append(f"classes  selectivity index {h['selectivity']:.2f}")
    elif h:
        lines.append(h.get("note", ""))
    else:
        lines.append("label    (run `interp hierarchy` and pass --hierarchy for labels)")
    source = data if isinstance(data, str) else "dataset"
    lines.append(
        f"examples top {len(rows)} of {len(dataset)} ({source}); rows: crop, fires, drives"
    )
    what = "at its peak" if method in ("ig", "saliency") else "(mean activation)"
    lines.append(f"drives   {method} attribution of the unit {what} (captum)")
    card = UnitCard(
        model=model.name,
        layer=layer,
        channel=channel,
        rf_size=found.rf_size,
        featvis=featvis,
        featvis_value=float(vis.values[0]),
        scores=scores,
        rows=rows,
        lines=lines,
        data=data if isinstance(data, str) else f"{type(data).__name__} of {len(dataset)}",
        method=method,
    )
    if folder is not None:
        save_unit_card(card, folder)
    return card
