"""The explorer: the report as a static site of every unit of every layer.

:func:`interp.report` runs its stages (inventory, atlas, examples, hierarchy, cards) and then
the explorer's:

* ``correlations``: the correlation of every pair of a layer's units over the examples' images
  (:func:`interp.similarity.unit_correlations`), for each unit's most similar units;
* ``units``: per rendered unit, what its page shows beyond the atlas: feature visualizations
  from more starts and a diversity set, receptive-field crops of its top and bottom dataset
  examples, an attribution (captum) of its top examples, its orientation tuning curve.
  Each unit is one record (``OUT/units/<layer>/<channel>/unit.json``, written last and
  atomically, keyed by the weights, the settings and the data): a rerun skips finished units
  and redoes a unit killed midway. Under ``torchrun`` the units are dealt to the ranks in
  turn; rank 0 waits for all of them and writes the pages;
* the **site** (not cached: seconds): ``index.html`` (the report's summary with a search box
  and links to every layer), ``layers/<layer>.html`` (every unit of the layer as a tile with
  its thumbnails and scores, sorted and filtered in the page), ``units/<layer>/<c>.html``
  (one per rendered unit), ``assets/`` (CSS, the page script and the search index).
  Thumbnails are WebP.

Which units get a page: those the atlas rendered (``per_layer``: a sample on CPU, every
unit on CUDA by default); every unit has a tile and a search entry.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .. import distributed as dist
from ..attribution import attribute_units
from ..dataset_examples import Examples, crop
from ..device import default_batch
from ..featvis import objectives as obj
from ..featvis.batches import RenderJob, RenderStats, render_jobs
from ..featvis.render import unit_seed
from ..featvis.render_result import RenderResult
from ..models.base import Model
from ..probes.hierarchy import Hierarchy, UnitScore
from ..utils import atomic_path, atomic_write_text, make_dir
from ..views import site as views
from ..views.figures import save_figure
from ..views.unit_figures import heat_overlay, plot_tuning_curve
from .atlas import RENDERER_VERSION, Atlas
from .cache import stage_key

__all__ = [
    "SITE_VERSION",
    "explorer_units",
    "load_correlations",
    "save_correlations",
    "site_size",
    "write_site",
]

#: bumped when a unit record's content changes with the same settings
SITE_VERSION = 1
THUMB = 96  # px of a tile's feature-visualization thumbnail
CROP = 64  # px of a dataset-example crop on a unit page
STRIP = 40  # px of each crop in a tile's examples strip


def _webp(path: Path, array: np.ndarray, size: int | None = None, quality: int = 80) -> Path:
    """``array`` (H, W[, 3], float in [0, 1] or uint8) as a WebP file, atomically."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(a.squeeze()).convert("RGB")
    if size is not None and img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    make_dir(path.parent)
    with atomic_path(path, suffix=".webp") as tmp, open(tmp, "wb") as handle:
        img.save(handle, format="WEBP", quality=quality, method=4)
    return path


def _unit_dir(out: Path, layer: str, channel: int) -> Path:
    return out / "units" / views.slug(layer) / str(channel)


def explorer_units(
    model: Model,
    out: Path,
    atlas_result: Atlas,
    found: Examples,
    *,
    steps: int,
    size: int,
    starts: int = 2,
    diversity: int = 3,
    attributions: int = 3,
    n_steps: int = 16,
    data: str = "",
    batch: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Each rendered unit's extra images (module docstring), skipping finished records;
    returns ``{"done": N, "reused": M, "render": {"calls", "images", "mean_batch"}}`` over
    every rank's units.

    The units' renders are packed into full batches (:func:`interp.featvis.batches.render_jobs`:
    ``batch`` images, default 32 on the CPU and 256 on CUDA), across units and neighbouring
    layers; each image depends only on its own unit and seed. Their top examples'
    integrated gradients are computed for several units at once
    (:func:`interp.attribution.attribute_units`). A unit's record is written once its images
    and attributions are done, so an interrupted run redoes at most the units in flight.
    """
    settings = {
        "steps": steps,
        "size": size,
        "starts": starts,
        "diversity": diversity,
        "attributions": attributions,
        "n_steps": n_steps,
        "version": SITE_VERSION,
        # the extra starts and diversity sets are renders: a new renderer renders them again
        "renderer": RENDERER_VERSION,
    }
    key = stage_key(model=model, settings=settings, data=data)
    todo = [
        (entry["layer"], int(u["channel"]), float(u.get("value") or 0.0))
        for entry in atlas_result.layers
        if entry["layer"] in found
        for u in entry["units"]
    ]
    mine = todo[dist.rank() :: dist.world()]
    pending = [u for u in mine if not _finished(_unit_dir(out, u[0], u[1]) / "unit.json", key)]
    reused = len(mine) - len(pending)
    stats = RenderStats()
    batch = batch or default_batch(model.device, 32, 256)
    writer = _UnitWriter(model, out, found, settings, key, stats)
    with tqdm(total=len(mine), initial=reused, desc="explorer units", disable=not progress) as bar:
        jobs = _unit_jobs(pending, settings)
        expected = [0] * len(pending)
        for job in jobs:
            expected[job.tag[0]] += 1
        got: list[dict[str, RenderResult]] = [{} for _ in pending]
        ready = [k for k, n in enumerate(expected) if n == 0]  # nothing to render
        for job, result in render_jobs(
            model, jobs, batch_size=batch, size=size, steps=steps, stats=stats
        ):
            k, kind = job.tag
            got[k][kind] = result
            if len(got[k]) == expected[k]:
                ready.append(k)
            if writer.targets(pending, ready) >= writer.ig_batch:
                bar.update(writer.finish(pending, ready, got))
                ready = []
        bar.update(writer.finish(pending, ready, got))
    # every rank's, summed; waits for all of them
    counts = dist.all_gather((len(pending), reused, stats.to_dict()))
    return {
        "done": sum(c[0] for c in counts),
        "reused": sum(c[1] for c in counts),
        # render calls; seconds_by_layer: rendering, attributions and files per layer
        "render": RenderStats.merged([c[2] for c in counts]),
    }


def _finished(record: Path, key: str) -> bool:
    """Whether ``record`` is a complete unit record under ``key`` (a damaged one is redone)."""
    if not record.is_file():
        return False
    try:
        return json.loads(record.read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def _unit_jobs(
    pending: Sequence[tuple[str, int, float]], settings: dict[str, Any]
) -> list[RenderJob]:
    """Per unit, in order: its extra starts and its diversity set (tag: unit index, kind)."""
    jobs = []
    starts, n_div = settings["starts"], settings["diversity"]
    for k, (layer, c, value) in enumerate(pending):
        if starts:
            seeds = [unit_seed(1000 + i, layer, c) for i in range(starts)]
            jobs.append(RenderJob(obj.channel(layer, [c] * starts), seeds, (k, "start")))
        if n_div >= 2:
            # the diversity term (in [-1, 0]) at a quarter of the scale of the unit's value
            weight = 0.25 * max(abs(value), 1e-3)
            objective = obj.channel(layer, [c] * n_div) + weight * obj.diversity(layer)
            seeds = [unit_seed(2000 + i, layer, c) for i in range(n_div)]
            jobs.append(RenderJob(objective, seeds, (k, "diverse")))
    return jobs


class _UnitWriter:
    """Attributes and writes finished units: their images, crops, attributions and record."""

    def __init__(
        self,
        model: Model,
        out: Path,
        found: Examples,
        settings: dict[str, Any],
        key: str,
        stats: RenderStats,
    ) -> None:
        self.model, self.out, self.found, self.settings, self.key = model, out, found, settings, key
        self.stats = stats  # the attributions' and files' seconds go to their layer's account
        self.cache: dict[int, Any] = {}
        # attributions computed together: what one captum call takes on the device
        self.ig_batch = default_batch(model.device, 16, 256)

    def _entries(self, layer: str, c: int, which: str) -> list[dict[str, Any]]:
        layer_ex = self.found[layer]
        if which == "bottom" and layer_ex.bottom is None:
            return []
        entries = layer_ex.unit(c, which)
        if which == "bottom":  # a rectified unit's minimum is 0 on most images: no order
            entries = [e for e in entries if e["value"] < 0]
        return entries

    def _image(self, item: int) -> torch.Tensor:
        if item not in self.cache:
            self.cache[item] = self.found.data[item][0]
        return self.cache[item]

    def _attributed(self, layer: str, c: int) -> list[dict[str, Any]]:
        return self._entries(layer, c, "top")[: self.settings["attributions"]]

    def targets(self, pending: Sequence[tuple[str, int, float]], ready: list[int]) -> int:
        """The attributions the ``ready`` units need."""
        return sum(len(self._attributed(*pending[k][:2])) for k in ready)

    def finish(
        self,
        pending: Sequence[tuple[str, int, float]],
        ready: list[int],
        got: list[dict[str, RenderResult]],
    ) -> int:
        """Attribute the ``ready`` units' top examples together, write each unit; returns
        how many were written."""
        wanted = [(k, j, e) for k in ready for j, e in enumerate(self._attributed(*pending[k][:2]))]
        maps: dict[tuple[int, int], np.ndarray] = {}
        by_shape: dict[tuple[Any, ...], list[int]] = {}
        for n, (k, _, e) in enumerate(wanted):
            group = (pending[k][0], *self._image(e["item"]).shape)  # layer, image shape
            by_shape.setdefault(group, []).append(n)
        for group, rows in by_shape.items():
            t = time.perf_counter()
            images = torch.stack([self._image(wanted[n][2]["item"]) for n in rows])
            targets = [
                (
                    pending[wanted[n][0]][0],
                    pending[wanted[n][0]][1],
                    tuple(wanted[n][2]["position"]),
                )
                for n in rows
            ]
            heat = attribute_units(self.model, images, targets, n_steps=self.settings["n_steps"])
            for n, h in zip(rows, heat, strict=True):
                maps[wanted[n][0], wanted[n][1]] = h
            self.stats.charge(group[0], time.perf_counter() - t)
        for k in ready:
            t = time.perf_counter()
            layer, c, _ = pending[k]
            folder = _unit_dir(self.out, layer, c)
            doc = self._write(
                folder, layer, c, got[k], {j: m for (u, j), m in maps.items() if u == k}
            )
            atomic_write_text(folder / "unit.json", json.dumps({**doc, "key": self.key}, indent=1))
            got[k] = {}  # the images are written: free them
            self.stats.charge(layer, time.perf_counter() - t)
        return len(ready)

    def _write(
        self,
        folder: Path,
        layer: str,
        c: int,
        renders: dict[str, RenderResult],
        maps: dict[int, np.ndarray],
    ) -> dict[str, Any]:
        """One unit's files into ``folder``; its record (without the key)."""
        make_dir(folder)
        doc: dict[str, Any] = {"layer": layer, "channel": c, "featvis": [], "top": [], "bottom": []}
        sets = (
            ("start", "start", "start {j}: {v:.3g}"),
            ("diverse", "diverse", "diversity set {i}"),
        )
        for kind, stem, caption in sets:
            res = renders.get(kind)
            if res is None:
                continue
            for i in range(res.images.shape[0]):
                name = f"{stem}{i + 1}.webp"
                _webp(folder / name, res.images[i].permute(1, 2, 0).numpy())
                text = caption.format(i=i + 1, j=i + 2, v=float(res.values[i]))
                doc["featvis"].append({"file": name, "caption": text})
        for which in ("top", "bottom"):
            for j, e in enumerate(self._entries(layer, c, which)):
                img = self._image(e["item"])
                name = f"{which}{j + 1}.webp"
                _webp(folder / name, crop(img, e["box"], CROP))
                entry = {"file": name, "caption": f"{e['value']:.3g} (image {e['item']})", **e}
                if which == "top" and j in maps:
                    shown = img.permute(1, 2, 0).numpy()
                    shown = np.repeat(shown, 3, axis=2) if shown.shape[2] == 1 else shown
                    heat = heat_overlay(shown, maps[j], attribution=True)  # (H, W, 3)
                    drive = f"{which}{j + 1}_ig.webp"  # the same receptive-field box as the crop
                    box = torch.from_numpy(np.ascontiguousarray(heat)).permute(2, 0, 1).float()
                    _webp(folder / drive, crop(box, e["box"], CROP))
                    entry["attribution"] = drive
                doc[which].append(entry)
        return doc


def _examples_strip(found: Examples, layer: str, c: int, cache: dict[int, Any]) -> np.ndarray:
    crops = found.crops(layer, c, size=STRIP, cache=cache)[:3]
    if not crops:
        return np.zeros((STRIP, STRIP, 3))
    return np.concatenate([a for a, _ in crops], axis=1)


def write_site(
    model: Model,
    out: Path,
    *,
    index_html: str,
    names: Sequence[str],
    atlas_result: Atlas,
    found: Examples,
    hier: Hierarchy,
    class_names: Sequence[str],
    correlations: dict[str, np.ndarray],
    experiments: bool = False,
    progress: bool = True,
    study: bool = False,
) -> dict[str, Any]:
    """The pages, thumbnails and assets (rank 0); returns what was written."""
    rendered = {e["layer"]: {int(u["channel"]): u for u in e["units"]} for e in atlas_result.layers}
    probes = hier.model
    layers = [n for n in names if n in found]
    extra = ' <a href="index.html#experiments">experiments</a>' if experiments else ""
    extra += ' <a href="index.html#study">study</a>' if study else ""
    search_units: list[dict[str, Any]] = []
    concepts: dict[str, list[dict[str, Any]]] = {}
    pages = 0
    cache: dict[int, Any] = {}
    for layer in tqdm(layers, desc="explorer pages", disable=not progress):
        ls = views.slug(layer)
        ex = found[layer]
        units_total = ex.top.items.shape[0]
        measured = layer in hier.layers
        # one reading per unit (Hierarchy.unit_scores): the tile, the unit page, the index
        # and the unit card show the same edge statuses
        scores = hier.unit_scores(layer) if measured else []
        labels = [s.values.get("label") for s in scores] or [None] * units_total
        tiles = []
        for c in range(units_total):
            tile = _tile(out, found, layer, c, scores[c] if scores else None, hier, cache)
            page = c in rendered.get(layer, {})
            href_from_root = f"units/{ls}/{c}.html" if page else f"layers/{ls}.html#u{c}"
            if page:
                fv = atlas_result.image(layer, c)
                _webp(out / "thumbs" / ls / f"{c}_fv.webp", fv, size=THUMB)
                tile["featvis"] = f"../thumbs/{ls}/{c}_fv.webp"
                tile["href"] = f"../units/{ls}/{c}.html"
            tiles.append(tile)
            uid = f"{layer}:{c}"
            search_units.append({"id": uid, "href": href_from_root, "label": tile.get("label")})
            if tile.get("iou", 0) > 0:
                concepts.setdefault(tile["concept"], []).append(
                    {"id": uid, "href": href_from_root, "iou": tile["iou"]}
                )
        d = probes.dissection.get(layer) if probes.dissection else None
        layer_doc = {
            "name": layer,
            "units": tiles,
            "categories": list(d.categories) if d is not None else [],
            "info": _layer_info(hier, layer, units_total, ex.rf_size, len(rendered.get(layer, {}))),
            "columns": [_column_doc(col) for col in hier.columns if col.tile],
            "instruments": [{"name": i.name, "label": i.label} for i in hier.instruments],
        }
        atomic_write_text(
            out / "layers" / f"{ls}.html", views.layer_page(model.name, layer_doc, layers)
        )
        for c in rendered.get(layer, {}):
            unit = _unit_doc(
                out,
                layer,
                c,
                atlas_result,
                tiles[c],
                d,
                class_names,
                correlations.get(layer),
                rendered[layer],
                labels,
                hier,
                ls,
            )
            atomic_write_text(
                out / "units" / ls / f"{c}.html", views.unit_page(model.name, unit, layers)
            )
            pages += 1
    for hits in concepts.values():
        hits.sort(key=lambda h: -h["iou"])
        del hits[20:]
    assets = make_dir(out / "assets")
    atomic_write_text(assets / "site.css", views.CSS)
    atomic_write_text(assets / "site.js", views.JS)
    atomic_write_text(assets / "search.js", views.search_script(search_units, concepts))
    atomic_write_text(
        out / "index.html", views.with_site_bar(index_html, model.name, layers, extra)
    )
    return {"layers": len(layers), "unit_pages": pages, "tiles": len(search_units)}


def _column_doc(col: Any) -> dict[str, str]:
    return {"key": col.key, "label": col.label, "fmt": col.fmt}


def _layer_info(hier: Hierarchy, layer: str, units: int, rf: int, rendered: int) -> str:
    """The layer page's line: units, receptive field, pages, edge units (one definition)."""
    head = f"{units} units; receptive field {rf} px; {rendered} rendered (a page each); "
    if layer not in hier.layers:
        return head + "edge units: not measured"
    counts = hier.edge_counts(layer)
    by = ", ".join(
        f"{i.label} {'not measured' if counts[i.name] is None else counts[i.name]}"
        for i in hier.instruments
    )
    return head + f"edge units (by at least one instrument): {counts['edge']}; by instrument: {by}"


def _tile(
    out: Path,
    found: Examples,
    layer: str,
    c: int,
    score: UnitScore | None,
    hier: Hierarchy,
    cache: dict[int, Any],
) -> dict[str, Any]:
    """A unit's tile: its examples strip, top activation and its :class:`UnitScore`."""
    ls = views.slug(layer)
    tile: dict[str, Any] = {"channel": c}
    _webp(out / "thumbs" / ls / f"{c}_ex.webp", _examples_strip(found, layer, c, cache), quality=70)
    tile["examples"] = f"../thumbs/{ls}/{c}_ex.webp"
    top = found[layer].unit(c)
    tile["activation"] = top[0]["value"] if top else None
    if score is None:
        return tile
    v = score.values
    tile |= {k: v[k] for k in ("concept", "iou", "category", "label") if k in v}
    tile |= {col.key: v.get(col.key) for col in hier.columns}
    tile["edge"] = score.edge
    tile["statuses"] = dict(score.statuses)
    if v.get("selectivity") is not None:
        tile["selectivity"] = v["selectivity"]
    return tile


def _yes(status: bool | None) -> str:
    return "not measured" if status is None else "yes" if status else "no"


def _unit_doc(
    out: Path,
    layer: str,
    c: int,
    atlas_result: Atlas,
    tile: dict[str, Any],
    d: Any,
    class_names: Sequence[str],
    corr: np.ndarray | None,
    rendered: dict[int, Any],
    labels: Sequence[str | None],
    hier: Hierarchy,
    ls: str,
) -> dict[str, Any]:
    folder = _unit_dir(out, layer, c)
    rec = json.loads((folder / "unit.json").read_text()) if (folder / "unit.json").is_file() else {}
    base = f"{c}/"
    big = f"{c}/atlas.webp"
    _webp(folder / "atlas.webp", atlas_result.image(layer, c))  # Atlas.image: one lookup
    featvis = [{"src": big, "caption": f"atlas: {float(rendered[c].get('value') or 0):.3g}"}]
    featvis += [{"src": base + f["file"], "caption": f["caption"]} for f in rec.get("featvis", [])]
    top = []
    for e in rec.get("top", []):
        top.append({"src": base + e["file"], "caption": e["caption"]})
        if e.get("attribution"):
            top.append({"src": base + e["attribution"], "caption": "what drives it (ig)"})
    bottom = [{"src": base + e["file"], "caption": e["caption"]} for e in rec.get("bottom", [])]
    scores: dict[str, Any] = {
        k: tile[k] for k in ("selectivity", "iou", "activation") if tile.get(k) is not None
    }
    for col in hier.columns:  # every instrument's readings of this unit
        if tile.get(col.key) is not None:
            scores[col.label] = tile[col.key]
    if "edge" in tile:  # the one definition, then each instrument's status
        scores["edge unit (by at least one instrument)"] = _yes(tile["edge"])
        for inst in hier.instruments:
            scores[f"edge unit by {inst.label}"] = _yes(tile["statuses"].get(inst.name))
    if tile.get("label"):
        scores["label"] = tile["label"]
    concepts = []
    classes = []
    if d is not None:
        order = np.argsort(-d.iou[c])[:6]
        concepts = [{"concept": d.concepts[int(k)], "iou": float(d.iou[c, k])} for k in order]
        if d.class_means is not None:
            means = d.class_means[c]
            names = list(class_names) or [f"class {i}" for i in range(len(means))]
            order = np.argsort(-means)
            classes = [
                {"class": names[int(k)] if k < len(names) else str(k), "mean": float(means[k])}
                for k in order
            ]
    similar = []
    if corr is not None:
        row = corr[c].astype(np.float64).copy()
        row[c] = -np.inf
        for k in np.argsort(-row)[:6]:
            k = int(k)
            href = f"{k}.html" if k in rendered else f"../../layers/{ls}.html#u{k}"
            similar.append({"channel": k, "r": float(corr[c, k]), "href": href, "label": labels[k]})
    tuning = None
    probes = hier.model
    if layer in probes.layers and "tuning" in probes.gratings.get(layer, {}):
        curve = probes.gratings[layer]["tuning"][c]
        orientations = probes.layer_info.get(layer, {}).get("orientations")
        if orientations is None or len(orientations) != len(curve):
            orientations = list(np.linspace(0, 180, len(curve), endpoint=False))
        make_dir(folder)
        fig = plot_tuning_curve(curve, orientations, f"{layer}:{c}")
        save_figure(fig, folder / "tuning.png", dpi=80)
        tuning = f"{c}/tuning.png"
    return {
        "layer": layer,
        "channel": c,
        "scores": scores,
        "featvis": featvis,
        "featvis_note": "the atlas's image, then more starts and a diversity set "
        "(the unit's objective plus a term that pushes the images apart)",
        "top": top,
        "bottom": bottom,
        "concepts": concepts,
        "classes": classes,
        "similar": similar,
        "tuning": tuning,
        "summary": f"label: {tile.get('label') or 'no detector'}",
    }


def site_size(out: Path) -> tuple[int, int]:
    """``(files, bytes)`` of the site (pages, thumbnails, unit images, assets)."""
    files = [out / "index.html"]
    for sub in ("layers", "units", "thumbs", "assets"):
        files += [p for p in (out / sub).rglob("*") if p.is_file() and p.name != "unit.json"]
    files = [p for p in files if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def load_correlations(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def save_correlations(path: Path, corr: dict[str, np.ndarray]) -> None:
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **corr)
