"""``interp report``: one command from a model to a static page.

Stages, each in the stage cache under ``OUT`` (:mod:`interp.pipeline.cache`: keyed by the
weights, the preset and the data; a rerun reuses finished ones, ``force`` redoes them):

1. ``inventory`` — the layer inventory (``layers.json``, ``layers.png``);
2. ``atlas`` — feature visualizations of a seeded sample of units per layer (resumable);
3. ``examples`` — top dataset examples of the same units;
4. ``hierarchy`` — the hierarchy check against its random-init control (resumable);
5. ``cards`` — one PNG per layer: each sampled unit's visualization next to its examples and
   scores;
6. ``correlations`` and ``units`` — the explorer's (:mod:`interp.pipeline.explorer`): every
   layer's unit-to-unit correlations, and each rendered unit's extra images;
7. optionally the specialization experiments' summary (``experiments=DIR`` of
   ``interp experiment all``).

Then the **explorer site**: ``index.html`` (this summary with search and layer links),
``layers/<layer>.html`` (every unit as a tile, sortable and filterable),
``units/<layer>/<c>.html`` (a page per rendered unit), ``assets/``. ``index.html`` is written
last and atomically, after every file it links: a crashed or killed run never leaves a page
pointing at missing files. Everything is relative (works from
``file://``), names are HTML-escaped, all numbers are in ``report.json``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import distributed as dist
from ..data.concepts import load_concepts
from ..data.specs import data_images
from ..dataset_examples import Examples
from ..errors import InterpError
from ..inventory import layers as inventory
from ..inventory import layers_json
from ..models.base import Model
from ..models.registry import as_model, load_model
from ..probes.hierarchy import Hierarchy, default_hierarchy_layers
from ..settings import HIERARCHY
from ..similarity import unit_correlations
from ..utils import atomic_write_text, make_dir, prepare_output
from ..views.figures import plot_inventory, save_figure
from ..views.html import page_html
from ..views.layer_cards import plot_layer_card
from .atlas import Atlas, atlas
from .cache import StageCache, stage_key, weights_digest
from .examples import examples_job
from .explorer import (
    explorer_units,
    load_correlations,
    save_correlations,
    site_size,
    write_site,
)
from .hierarchy import hierarchy
from .sharding import RankStream
from .study import Study
from .suite import SuiteResult

__all__ = ["report", "QUICK", "FULL"]

QUICK = {
    "per_layer": 2,
    # the explorer's per-unit extras: more starts, a diversity set, attributed top examples
    "explorer": {"starts": 1, "diversity": 2, "attributions": 1, "n_steps": 4},
    "steps": 24,
    "size": 64,
    "examples_n": 48,
    "hierarchy_n": 96,
    "control_seeds": (0,),
    "min_control_units": 32,
    "reference_images": 32,
    "bootstrap": 100,
    "layers_max": 4,
}
FULL = {
    "per_layer": 4,
    "explorer": {"starts": 2, "diversity": 3, "attributions": 3, "n_steps": 16},
    "steps": 128,
    "size": 96,
    "examples_n": 300,
    "hierarchy_n": None,
    "control_seeds": HIERARCHY.control_seeds,  # the full preset is the API's and CLI's
    "min_control_units": HIERARCHY.min_control_units,
    "reference_images": HIERARCHY.reference_images,
    "bootstrap": HIERARCHY.bootstrap,
    "layers_max": None,
}


#: the preset entries each stage reads (its stage key covers these and nothing else)
STAGE_SETTINGS: dict[str, tuple[str, ...]] = {
    "inventory": (),
    "atlas": ("per_layer", "steps", "size"),
    "examples": ("per_layer", "examples_n"),  # its grids show the atlas's units
    "hierarchy": (
        "hierarchy_n",
        "control_seeds",
        "min_control_units",
        "reference_images",
        "bootstrap",
    ),
    "cards": tuple(FULL),
    "correlations": ("examples_n",),
    "units": ("per_layer", "steps", "size", "examples_n", "explorer"),
}


def _check_inputs(
    data: str, examples_data_spec: str | None, experiments: Any, study: Any = None
) -> None:
    """The data specs, the experiments and study folders, checked before hours of stages."""
    load_concepts(data, size=16, n=1)  # raises on an unknown spec or a missing Broden folder
    if examples_data_spec is not None:
        data_images(examples_data_spec, size=16, n=1)
    if experiments is not None:
        SuiteResult.load(experiments)  # raises when the folder holds no finished suite
    if study is not None:
        Study.load(study)  # raises when the folder holds no finished study


def report(
    model: Model | str,
    out: str | Path,
    *,
    data: str = HIERARCHY.data,
    examples_data: str | None = None,
    layers: list[str] | None = None,
    quick: bool = False,
    force: bool = False,
    experiments: str | Path | None = None,
    per_layer: int | str | None = None,
    device: str = "auto",
    progress: bool = True,
    study: str | Path | None = None,
) -> Path:
    """Build the report of ``model`` in ``out`` and return the path of ``index.html``.

    Args:
        model: a model or spec.
        out: output folder.
        data: concept data of the hierarchy check (``partsworld`` or ``broden:PATH``).
        examples_data: dataset examples come from (default: ``photos`` for models with inputs
            of 128 px or more, else ``partsworld``).
        layers: layers (default: the hierarchy's layers: first conv activation and blocks).
        quick: tiny settings (a smoke test of the whole pipeline in a few minutes).
        force: redo every stage.
        experiments: folder of an ``interp experiment all`` run to include.
        study: folder of an ``interp study`` run to include (the panel section).
        per_layer: units rendered per layer, each with a unit page in the explorer (an int
            or ``"all"``; default: the preset's sample on the CPU, every unit on CUDA).
        device: used when ``model`` is a spec.
        progress: progress bars.
    """
    _check_inputs(data, examples_data, experiments, study)  # before any stage runs
    if isinstance(model, str):
        model = load_model(model, device=device)
    model = as_model(model)
    out = prepare_output(out)  # made, writable; no temp files of a killed run
    cfg = _preset(quick, per_layer, model)
    names = layers or default_hierarchy_layers(model)
    if cfg["layers_max"] and len(names) > cfg["layers_max"]:
        pick = np.linspace(0, len(names) - 1, cfg["layers_max"]).round().astype(int)
        names = [names[i] for i in sorted(set(pick.tolist()))]
    ex_data = examples_data or ("photos" if model.input_size[0] >= 128 else "partsworld")
    cache = StageCache(out, force=force, progress=progress)
    run = _Run(model, out, cfg, names, cache, progress, weights_digest(model))
    units, ex_stage = _measure(run, data, ex_data)
    # the results of this report's stages (each folder holds the stage of these settings)
    hier = Hierarchy.load(out / "hierarchy")
    atlas_result = Atlas.load(out / "atlas")
    ex_size = model.input_size[0] if ex_data == "photos" else None
    dataset = data_images(ex_data, size=ex_size, n=cfg["examples_n"])
    found = Examples.load(out / "examples", data=dataset)
    scores = _unit_scores(atlas_result, hier, names, units)
    cards = _explore(run, data, ex_data, atlas_result, found, dataset, scores)
    if not dist.is_main():  # rank 0 writes the page
        return out / "index.html"
    exp_doc = _experiments(experiments, out)
    study_doc = _study(study, out)
    report_doc = {
        "model": model.summary(),
        "settings": {**cfg, "data": data, "examples_data": ex_data, "layers": names},
        "hierarchy": hier.to_dict(),
        "units": scores,
        "edge_units": {n: hier.edge_counts(n) for n in names if n in hier.layers},
        "examples": {**ex_stage, "json": "examples/examples.json"},
        "experiments": exp_doc,
        "study": None if study_doc is None else {"json": "study/study.json"},
        "seconds": run.timings,
        # the render calls of the atlas and the explorer's units (full batches: issue 35)
        "render_batches": run.renders,
    }
    atomic_write_text(out / "report.json", json.dumps(report_doc, indent=1, default=str))
    site = write_site(
        model,
        out,
        index_html=page_html(report_doc, cards, exp_doc, hier, study=study_doc),
        names=names,
        atlas_result=atlas_result,
        found=found,
        hier=hier,
        class_names=load_concepts(data, size=16, n=1).class_names,
        correlations=load_correlations(out / "explorer_correlations.npz"),
        experiments=exp_doc is not None,
        progress=progress,
        study=study_doc is not None,
    )
    files, size = site_size(out)
    site |= {"files": files, "bytes": size}
    atomic_write_text(out / "site.json", json.dumps(site, indent=1))
    if progress:
        print(
            f"explorer: {site['layers']} layer pages, {site['unit_pages']} unit pages, "
            f"{site['tiles']} unit tiles; {files} files, {size / 1e6:.1f} MB",
            file=sys.stderr,
        )
    return out / "index.html"


def _preset(quick: bool, per_layer: int | str | None, model: Model) -> dict[str, Any]:
    """The preset (``QUICK`` or ``FULL``) with the units rendered per layer."""
    cfg = dict(QUICK if quick else FULL)
    if per_layer is None and model.device.type == "cuda":
        per_layer = "all"
    if isinstance(per_layer, str) and per_layer.strip().isdigit():
        per_layer = int(per_layer)
    if per_layer is not None:
        if not (per_layer == "all" or (isinstance(per_layer, int) and per_layer >= 1)):
            raise InterpError(
                f"per_layer={per_layer!r}: give a number of units (1 or more) or 'all'"
            )
        cfg["per_layer"] = per_layer
    return cfg


@dataclass
class _Run:
    """One report's stages: the model, the folder, the preset, the layers and the cache."""

    model: Model
    out: Path
    cfg: dict[str, Any]
    names: list[str]
    cache: StageCache
    progress: bool
    weights: str
    timings: dict[str, float | str] = field(default_factory=dict)
    #: per rendering stage, its render calls: ``calls``, ``images``, ``mean_batch``
    renders: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def stage(self, name: str, fn: Any, spec: str | None = None) -> dict[str, Any]:
        # under torchrun every rank runs every stage (atlas, examples and hierarchy split
        # their work; the small stages run on rank 0); each stage writes its folder in place.
        # A stage is keyed by the preset entries it reads (STAGE_SETTINGS): another
        # --per-layer re-renders, but does not redo the hierarchy check
        t = time.perf_counter()
        uses = {k: self.cfg[k] for k in STAGE_SETTINGS[name]}
        settings = {"layers": self.names, "cfg": uses, "stage": name}
        key = stage_key(model=self.weights, settings=settings, data=spec)
        result = self.cache.run(name, key, fn, exclusive=True)
        reused = self.cache.log[name] == "reused"
        self.timings[name] = "reused" if reused else round(time.perf_counter() - t, 1)
        return result


def _measure(run: _Run, data: str, ex_data: str) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """The inventory, atlas, examples and hierarchy stages; the atlas's units and the
    examples stage's record."""
    model, out, cfg, names, progress = run.model, run.out, run.cfg, run.names, run.progress

    def do_inventory() -> dict[str, Any]:
        if not dist.is_main():
            return {}
        infos = inventory(model, progress=progress)
        atomic_write_text(out / "layers.json", layers_json(model, infos))
        save_figure(plot_inventory(infos, model.name), out / "layers.png")
        return {"layers": len(infos)}

    run.stage("inventory", do_inventory)

    def do_atlas() -> dict[str, Any]:
        result = atlas(
            model,
            out / "atlas",
            layers=names,
            per_layer=cfg["per_layer"],
            steps=cfg["steps"],
            size=cfg["size"],
            reference=None,
            progress=progress,
        )
        calls, images = result.this_run["render_calls"], result.this_run["render_images"]
        return {
            "units": {e["layer"]: [u["channel"] for u in e["units"]] for e in result.layers},
            "render": {
                "calls": calls,
                "images": images,
                "mean_batch": round(images / calls, 2) if calls else 0.0,
                "seconds_by_layer": result.this_run["render_seconds_by_layer"],
            },
        }

    atlas_stage = run.stage("atlas", do_atlas)
    run.renders["atlas"] = atlas_stage.get("render")
    units = atlas_stage["units"]

    def do_examples() -> dict[str, Any]:
        result = examples_job(
            model,
            out / "examples",
            ex_data,
            names,
            k=5,
            bottom=True,  # the explorer's unit pages show the most negative examples too
            n=cfg["examples_n"],
            size=model.input_size[0] if ex_data == "photos" else None,
            units=units,  # each layer's grids: its own atlas units
            force=True,  # the report's own stage decides
            progress=progress,
        )
        return {"data": ex_data, "images": len(result.data), "layers": len(result)}

    ex_stage = run.stage("examples", do_examples, ex_data)

    def do_hierarchy() -> dict[str, Any]:
        result = hierarchy(
            model,
            data,
            names,
            control_seeds=cfg["control_seeds"],
            min_control_units=cfg["min_control_units"],
            reference_images=cfg["reference_images"],
            n=cfg["hierarchy_n"],
            bootstrap=cfg["bootstrap"],
            out=out / "hierarchy",
            progress=progress,
        )
        return {"verdict": result.verdict.verdict}

    run.stage("hierarchy", do_hierarchy, data)
    return units, ex_stage


def _explore(
    run: _Run,
    data: str,
    ex_data: str,
    atlas_result: Atlas,
    found: Examples,
    dataset: Any,
    scores: dict[str, list[dict[str, Any]]],
) -> dict[str, str]:
    """The cards, correlations and explorer-units stages; the cards' files."""
    model, out, cfg, progress = run.model, run.out, run.cfg, run.progress

    def do_cards() -> dict[str, Any]:
        files = _layer_cards(model, out, atlas_result, found, scores) if dist.is_main() else {}
        return {"files": files}

    cards = run.stage("cards", do_cards, f"{data}|{ex_data}")["files"]

    def do_correlations() -> dict[str, Any]:
        corr = unit_correlations(
            model, dataset, list(found), stream=RankStream(), progress=progress
        )
        if dist.is_main():
            save_correlations(out / "explorer_correlations.npz", corr)
        return {"layers": len(corr)}

    run.stage("correlations", do_correlations, ex_data)

    def do_units() -> dict[str, Any]:
        return explorer_units(
            model,
            out,
            atlas_result,
            found,
            steps=cfg["steps"],
            size=cfg["size"],
            data=f"{data}|{ex_data}",
            progress=progress,
            **cfg["explorer"],
        )

    run.renders["units"] = run.stage("units", do_units, f"{data}|{ex_data}").get("render")
    return cards


def _experiments(experiments: str | Path | None, out: Path) -> dict[str, Any] | None:
    """The experiments' summary, their figures copied under ``out/experiments``."""
    if experiments is None:
        return None
    exp_dir = Path(experiments)
    suite = SuiteResult.load(exp_dir)
    target = out / "experiments"
    for f in suite.figures():
        (target / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exp_dir / f, target / f)
    return suite.to_dict()


def _study(study: str | Path | None, out: Path) -> tuple[dict[str, Any], list[str]] | None:
    """A study's document and figures, its files copied under ``out/study`` (the figures,
    ``study.json``, ``study.md``, its page and each network's hierarchy file)."""
    if study is None:
        return None
    src = Path(study)
    result = Study.load(src)
    target = make_dir(out / "study")
    figures = sorted(p.name for p in src.glob("*.png"))
    for name in [*figures, "study.json", "study.md", "index.html"]:
        if (src / name).is_file():
            shutil.copyfile(src / name, target / name)
    for row in result.rows:
        name = Path("networks") / row["name"] / row.get("file", "hierarchy/hierarchy.json")
        if (src / name).is_file():
            make_dir((target / name).parent)
            shutil.copyfile(src / name, target / name)
    return result.doc, figures


def _unit_scores(
    atlas_result: Atlas, hier: Hierarchy, names: list[str], units: dict[str, list[int]]
) -> dict[str, list[dict[str, Any]]]:
    """Per sampled unit: its feature visualization's value and its reading by the hierarchy
    check (:meth:`Hierarchy.unit_scores`: ``edge_unit`` is the one edge-unit definition,
    ``edge_by`` the instruments that say so, ``statuses`` each instrument's; OSI, label,
    IoU, selectivity)."""
    values = {
        (e["layer"], u["channel"]): u.get("value") for e in atlas_result.layers for u in e["units"]
    }
    scores: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        measured = hier.unit_scores(name) if name in hier.layers else None
        rows = []
        for c in units.get(name, []):
            row: dict[str, Any] = {"channel": c, "featvis_value": values.get((name, c))}
            if measured is not None:
                score = measured[c]
                v = score.values
                row |= {col.key: v.get(col.key) for col in hier.columns if col.tile}
                row["edge_unit"] = score.edge
                row["edge_by"] = score.edge_by
                row["statuses"] = dict(score.statuses)
                row["label"] = v.get("label")
                row["best_concept"] = v.get("concept")
                row["iou"] = v.get("iou")
                row["selectivity"] = v.get("selectivity")
            rows.append(row)
        scores[name] = rows
    return scores


def _layer_cards(
    model: Model,
    out: Path,
    atlas_result: Atlas,
    found: Examples,
    scores: dict[str, list[dict[str, Any]]],
) -> dict[str, str]:
    """One PNG per layer: rows of units, feature visualization then top examples, scores."""
    files = {}
    make_dir(out / "cards")
    for name, rows in scores.items():
        if not rows:
            continue
        card_rows = []
        images: dict[int, Any] = {}  # each example image read once per layer
        for row in rows:
            c = row["channel"]
            crops = found.crops(name, c, cache=images) if name in found else []
            card_rows.append((c, atlas_result.image(name, c), row, crops))
        path = out / "cards" / f"{name.replace('/', '_')}.png"
        save_figure(plot_layer_card(model.name, name, card_rows), path)
        files[name] = str(path.relative_to(out))
    return files
