"""``interp report``: one command from a model to a static page.

Stages, each cached under ``OUT`` (a rerun reuses finished ones; ``force`` redoes them):

1. ``inventory`` — the layer inventory (``layers.json``, ``layers.png``);
2. ``atlas`` — feature visualizations of a seeded sample of units per layer (resumable);
3. ``examples`` — top dataset examples of the same units;
4. ``hierarchy`` — the hierarchy check against its random-init control (resumable);
5. ``cards`` — one PNG per layer: each sampled unit's visualization next to its examples and
   scores;
6. optionally the specialization experiments' summary (``experiments=DIR`` of
   ``interp experiment all``).

``index.html`` is written last and atomically, after every file it links: a crashed or killed
run never leaves a page pointing at missing files. Everything is relative (works from
``file://``), names are HTML-escaped, all numbers are in ``report.json``.
"""

from __future__ import annotations

import html
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed as dist
from ..models.base import Model
from ..models.registry import as_model
from ..settings import HIERARCHY
from ..utils import atomic_write_text, make_dir, prepare_output, settings_digest

__all__ = ["report"]

QUICK = {
    "per_layer": 2,
    "steps": 24,
    "size": 64,
    "examples_n": 48,
    "hierarchy_n": 96,
    "control_seeds": (0,),
    "min_control_units": 48,
    "reference_images": 32,
    "bootstrap": 100,
    "layers_max": 4,
}
FULL = {
    "per_layer": 4,
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


class _Stages:
    """Finished-stage markers (``OUT/stages/<name>.json`` with the settings' digest)."""

    def __init__(self, out: Path, force: bool) -> None:
        self.dir = out / "stages"
        make_dir(self.dir)
        self.force = force
        self.log: dict[str, str] = {}

    def done(self, name: str, key: Any) -> dict[str, Any] | None:
        path = self.dir / f"{name}.json"
        if self.force or not path.is_file():
            return None
        doc = json.loads(path.read_text())
        return doc if doc.get("key") == settings_digest(key) else None

    def finish(self, name: str, key: Any, result: dict[str, Any]) -> None:
        atomic_write_text(
            self.dir / f"{name}.json",
            json.dumps({"key": settings_digest(key), **result}, default=str),
        )


def _check_inputs(data: str, examples_data: str | None, experiments: Any) -> None:
    """The data specs and the experiments folder, checked before hours of stages."""
    from ..data.concepts import load_concepts
    from ..errors import InterpError
    from ..examples import examples_data as load_examples_data

    load_concepts(data, size=16, n=1)  # raises on an unknown spec or a missing Broden folder
    if examples_data is not None:
        load_examples_data(examples_data, size=16, n=1)
    if experiments is not None and not (Path(experiments) / "summary.json").is_file():
        raise InterpError(
            f"{experiments} holds no summary.json: give the --out folder of a finished "
            "`interp experiment all` run"
        )


def report(
    model: Model | str,
    out: str | Path,
    *,
    data: str = "partsworld",
    examples_data: str | None = None,
    layers: list[str] | None = None,
    quick: bool = False,
    force: bool = False,
    experiments: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
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
        device: used when ``model`` is a spec.
        progress: progress bars.
    """
    from ..featvis.jobs import atlas
    from ..inventory import layers as inventory
    from ..inventory import layers_json
    from ..probes.hierarchy import default_hierarchy_layers, hierarchy
    from .figures import plot_inventory, save_figure

    _check_inputs(data, examples_data, experiments)  # before any stage runs
    if isinstance(model, str):
        from ..models.registry import load_model

        model = load_model(model, device=device)
    model = as_model(model)
    out = make_dir(out)
    prepare_output(out)  # writable; no temp files of a killed run
    cfg = dict(QUICK if quick else FULL)
    stages = _Stages(out, force)
    names = layers or default_hierarchy_layers(model)
    if cfg["layers_max"] and len(names) > cfg["layers_max"]:
        pick = np.linspace(0, len(names) - 1, cfg["layers_max"]).round().astype(int)
        names = [names[i] for i in sorted(set(pick.tolist()))]
    ex_data = examples_data or ("photos" if model.input_size[0] >= 128 else "partsworld")
    ident = {"model": [model.name, model.weights_source], "layers": names, "cfg": cfg}
    timings: dict[str, float | str] = {}

    def stage(name: str, key: Any, fn: Any) -> dict[str, Any]:
        # under torchrun every rank runs every stage (atlas, examples and hierarchy split
        # their work; the small stages run on rank 0) and rank 0 marks it finished
        t = time.perf_counter()
        found = stages.done(name, key)
        dist.barrier()  # every rank has looked before rank 0 marks anything
        if found is not None:
            timings[name] = "reused"
            return found
        result = fn()
        dist.barrier()
        if dist.is_main():
            stages.finish(name, key, result)
        dist.barrier()
        timings[name] = round(time.perf_counter() - t, 1)
        return result

    def do_inventory() -> dict[str, Any]:
        if not dist.is_main():
            return {}
        infos = inventory(model, progress=progress)
        atomic_write_text(out / "layers.json", layers_json(model, infos))
        save_figure(plot_inventory(infos, model.name), out / "layers.png")
        return {"layers": len(infos)}

    stage("inventory", ident, do_inventory)

    def do_atlas() -> dict[str, Any]:
        doc = atlas(
            model,
            out / "atlas",
            layers=names,
            per_layer=cfg["per_layer"],
            steps=cfg["steps"],
            size=cfg["size"],
            reference=None,
            progress=progress,
        )
        return {"units": {e["layer"]: [u["channel"] for u in e["units"]] for e in doc["layers"]}}

    units = stage("atlas", ident, do_atlas)["units"]

    def do_examples() -> dict[str, Any]:
        from ..examples import examples, save_examples
        from ..examples import examples_data as make_data

        size = model.input_size[0] if ex_data == "photos" else None
        dataset = make_data(ex_data, size=size, n=cfg["examples_n"])
        res = examples(model, dataset, names, k=5, progress=progress)
        chosen = sorted({c for cs in units.values() for c in cs})
        if dist.is_main():
            save_examples(res, dataset, out / "examples", units=chosen, title=model.name)
        return {
            "data": ex_data,
            "images": len(dataset),
            "json": "examples/examples.json",
            "layers": len(res),
        }

    ex_stage = stage("examples", {**ident, "data": ex_data}, do_examples)

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
        return {"verdict": result.verdict.get("verdict")}

    stage("hierarchy", {**ident, "data": data}, do_hierarchy)
    hdoc = json.loads((out / "hierarchy" / "hierarchy.json").read_text())

    def do_cards() -> dict[str, Any]:
        files = _layer_cards(model, out, names, units, hdoc) if dist.is_main() else []
        return {"files": files}

    cards = stage("cards", {**ident, "data": data, "ex": ex_data}, do_cards)["files"]

    if not dist.is_main():  # rank 0 writes the page
        return out / "index.html"
    exp_doc = None
    if experiments is not None:
        exp_dir = Path(experiments)
        summary = exp_dir / "summary.json"
        if summary.is_file():
            exp_doc = json.loads(summary.read_text())
            target = out / "experiments"
            for block in exp_doc["questions"]:
                for a in block["answers"]:
                    for f in a["figures"]:
                        (target / f).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(exp_dir / f, target / f)

    report_doc = {
        "model": model.summary(),
        "settings": {**cfg, "data": data, "examples_data": ex_data, "layers": names},
        "hierarchy": hdoc,
        "units": _unit_scores(out, names, units, hdoc),
        "examples": ex_stage,
        "experiments": exp_doc,
        "seconds": timings,
    }
    atomic_write_text(out / "report.json", json.dumps(report_doc, indent=1, default=str))
    page = _html(model, report_doc, cards, exp_doc)
    atomic_write_text(out / "index.html", page)
    return out / "index.html"


def _unit_scores(
    out: Path, names: list[str], units: dict[str, list[int]], hdoc: dict[str, Any]
) -> dict[str, list[dict[str, Any]]]:
    """Per sampled unit: OSI, dissection label/IoU, selectivity (from the hierarchy stage)."""
    from ..probes.hierarchy import NetworkProbes

    # the stage this hierarchy.json was made from (not the newest file: names end in a hash)
    stage = hdoc.get("settings", {}).get("stages", {}).get("model")
    path = out / "hierarchy" / "stages" / stage if stage else None
    probes = NetworkProbes.load(path) if path is not None and path.is_file() else None
    edge_units = {r["layer"]: set(r["edge_units"]["gratings"]) for r in hdoc["layers"]}
    atlas_idx = json.loads((out / "atlas" / "index.json").read_text())
    values = {
        (e["layer"], u["channel"]): u.get("value") for e in atlas_idx["layers"] for u in e["units"]
    }
    scores: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        rows = []
        for c in units.get(name, []):
            row: dict[str, Any] = {"channel": c, "featvis_value": values.get((name, c))}
            if probes is not None and name in probes.layers:
                d = probes.dissection[name]
                row["osi"] = round(float(probes.osi[name][c]), 4)
                row["edge_unit"] = c in edge_units.get(name, set())
                row["label"] = d.labels()[c]
                row["best_concept"] = d.concepts[int(d.best_concept[c])]
                row["iou"] = round(float(d.best_iou[c]), 4)
                si = d.selectivity
                row["selectivity"] = None if si is None else round(float(si[c]), 4)
            rows.append(row)
        scores[name] = rows
    return scores


def _layer_cards(
    model: Model,
    out: Path,
    names: list[str],
    units: dict[str, list[int]],
    hdoc: dict[str, Any],
) -> dict[str, str]:
    """One PNG per layer: rows of units, feature visualization then top examples, scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from .figures import save_figure

    scores = _unit_scores(out, names, units, hdoc)
    ex = json.loads((out / "examples" / "examples.json").read_text())
    ex_layers = {e["layer"]: e for e in ex["layers"]}
    atlas_idx = json.loads((out / "atlas" / "index.json").read_text())
    folders = {e["layer"]: e for e in atlas_idx["layers"]}
    from ..examples import examples_data as make_data

    spec = _stage(out, "examples")["data"]
    size = model.input_size[0] if spec == "photos" else None
    dataset = make_data(spec, size=size, n=int(_stage(out, "examples")["images"]))
    files = {}
    (out / "cards").mkdir(exist_ok=True)
    for name in names:
        chans = units.get(name, [])
        if not chans:
            continue
        entry = ex_layers.get(name, {"units": {}})
        k = max((len(entry["units"].get(str(c), {}).get("top", [])) for c in chans), default=0)
        fig, axes = plt.subplots(
            len(chans), 1 + k, figsize=(1.5 * (1 + k) + 2.6, 1.6 * len(chans)), squeeze=False
        )
        for r, c in enumerate(chans):
            for ax in axes[r]:
                ax.axis("off")
            unit = next(u for u in folders[name]["units"] if u["channel"] == c)
            img = Image.open(out / "atlas" / folders[name]["folder"] / unit["png"])
            axes[r, 0].imshow(img)
            s = next(x for x in scores[name] if x["channel"] == c)
            label = s.get("label") or "no detector"
            axes[r, 0].set_title(f"#{c}", fontsize=7)
            text = f"OSI {s.get('osi', float('nan')):.2f}\n{label}"
            if s.get("selectivity") is not None:
                text += f"\nSI {s['selectivity']:.2f}"
            axes[r, 0].text(
                -0.1,
                0.5,
                text,
                transform=axes[r, 0].transAxes,
                ha="right",
                va="center",
                fontsize=6.5,
            )
            for j, e in enumerate(entry["units"].get(str(c), {}).get("top", [])):
                axes[r, 1 + j].imshow(_crop_item(dataset, e))
                axes[r, 1 + j].set_title(f"{e['value']:.2f}", fontsize=6)
        fig.suptitle(
            f"{model.name} {name}: feature visualization | top dataset examples", fontsize=8
        )
        fig.tight_layout(rect=(0.12, 0, 1, 0.97))
        path = out / "cards" / f"{name.replace('/', '_')}.png"
        save_figure(fig, path)
        files[name] = str(path.relative_to(out))
    return files


def _stage(out: Path, name: str) -> dict[str, Any]:
    return json.loads((out / "stages" / f"{name}.json").read_text())


def _crop_item(dataset: Any, e: dict[str, Any]) -> np.ndarray:
    from ..examples import _crop

    image = dataset[e["item"]][0]
    if not isinstance(image, torch.Tensor):
        image = torch.as_tensor(image)
    return _crop(image, e["box"], 64)


def _html(
    model: Model, doc: dict[str, Any], cards: dict[str, str], exp: dict[str, Any] | None
) -> str:
    esc = html.escape
    h = doc["hierarchy"]
    v = h["verdict"]
    m = doc["model"]
    rows = []
    for r in h["layers"]:
        f, c = r["fractions"], r["control_fractions"]
        cells = "".join(
            f"<td>{f.get(k, 0):.2f} / {c.get(k, 0):.2f}</td>"
            for k in ("edge_gratings", "edge_erf", "colour", "edge", "part", "object")
        )
        rows.append(f"<tr><td>{esc(r['layer'])}</td><td>{r['units']}</td>{cells}</tr>")
    sections = []
    for name, path in cards.items():
        unit_rows = "".join(
            "<tr>"
            f"<td>{u['channel']}</td><td>{esc(str(u.get('label') or '—'))}</td>"
            f"<td>{u.get('iou', float('nan')):.3f}</td><td>{u.get('osi', float('nan')):.2f}</td>"
            f"<td>{'yes' if u.get('edge_unit') else 'no'}</td>"
            f"<td>{'' if u.get('selectivity') is None else format(u['selectivity'], '.2f')}</td>"
            "</tr>"
            for u in doc["units"].get(name, [])
        )
        sections.append(
            f"<section><h3>{esc(name)}</h3>"
            f'<img src="{esc(path)}" alt="units of {esc(name)}">'
            "<table><tr><th>unit</th><th>label</th><th>IoU</th><th>OSI</th><th>edge unit</th>"
            f"<th>selectivity</th></tr>{unit_rows}</table></section>"
        )
    exp_html = ""
    if exp:
        parts = []
        for block in exp["questions"]:
            items = []
            for a in block["answers"]:
                links = " ".join(
                    f'<a href="experiments/{esc(f)}">{esc(Path(f).name)}</a>' for f in a["figures"]
                )
                items.append(f"<li><b>{esc(a['experiment'])}</b>: {esc(a['finding'])} {links}</li>")
            figs = sorted({f for a in block["answers"] for f in a["figures"]})
            imgs = "".join(f'<img src="experiments/{esc(f)}" alt="{esc(f)}">' for f in figs[:3])
            parts.append(f"<h3>{esc(block['question'])}</h3><ul>{''.join(items)}</ul>{imgs}")
        exp_html = "<h2>Why units specialize: the experiments</h2>" + "".join(parts)
    notes = "".join(f"<li>{esc(n)}</li>" for n in h["control"]["notes"])
    rules = "".join(f"<li><b>{esc(k)}</b>: {esc(r)}</li>" for k, r in h["rules"].items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>interp report: {esc(m["name"])}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
img {{ max-width: 100%; border: 1px solid #ddd; margin: 0.4em 0; }}
table {{ border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }}
td, th {{ border: 1px solid #ccc; padding: 2px 6px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }}
.verdict {{ font-size: 1.2em; padding: 0.6em; background: #f4f4f4;
  border-left: 4px solid #4c78a8; }}
</style></head><body>
<h1>interp report: {esc(m["name"])}</h1>
<p>{m["parameters"]:,} parameters; input {esc(str(m["preprocessing"].get("input_size")))}; weights:
{esc(str(m["weights_source"]))}. Images: hierarchy on {esc(h["data"])}; dataset examples from
{esc(doc["settings"]["examples_data"])}.</p>
<h2>Early edges, later parts?</h2>
<p class="verdict"><b>{esc(str(v.get("verdict")))}</b> — {esc(str(v.get("text", "")))}</p>
<p>Rule: {esc(str(v.get("rule", "")))}</p>
<img src="hierarchy/profile.png" alt="profile by depth">
<table><tr><th>layer</th><th>units</th><th>edge units (gratings)</th><th>edge units (ERF fit)</th>
<th>colour</th><th>edge</th><th>part</th><th>object</th></tr>{"".join(rows)}</table>
<p>Fractions of units, model / random-init control. Rules:</p><ul>{rules}</ul>
<p>Control:</p><ul>{notes}</ul>
<img src="hierarchy/osi.png" alt="OSI distributions">
<img src="hierarchy/tuning.png" alt="example tuning curves">
<img src="hierarchy/detectors.png" alt="top detectors">
<h2>Layers</h2>
<p>Each row: a unit's feature visualization, then its top dataset examples (receptive-field
crops, activation above each); OSI, dissection label and class selectivity (SI) on the left.</p>
{"".join(sections)}
{exp_html}
<h2>Model</h2>
<img src="layers.png" alt="receptive fields and widths by depth">
<p>All numbers: <a href="report.json">report.json</a>; hierarchy:
<a href="hierarchy/hierarchy.json">hierarchy.json</a>; examples:
<a href="examples/examples.json">examples.json</a>.</p>
</body></html>
"""
