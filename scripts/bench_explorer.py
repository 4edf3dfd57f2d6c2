"""The explorer's cost: time and size of the site ``interp report`` writes, and the projected
time for every unit from the measured per-unit cost.

    python scripts/bench_explorer.py                      # efficientnet_lite0, 8 per layer
    python scripts/bench_explorer.py --per-layer all --device cuda   (device_check.sh: real)

It runs the report into ``--out`` (default: a fresh temp folder, so nothing is reused) and
reads the stage times it records (``report.json``) and the site it wrote (``site.json``).
Each stage's seconds are also given per rendered unit, and the rendering stages (atlas,
explorer units) say how many render calls they made and their mean batch (images per call).
The per-unit cost is what grows with the number of rendered units: the atlas stage (one
feature visualization per unit) and the explorer's units stage (more starts, a diversity
set, crops and attributions), divided by the units rendered. The projection for every unit
is that cost times all units plus the stages that do not grow with it (inventory, examples,
hierarchy, correlations, cards, pages). Site size per unit page is projected the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import interp  # noqa: E402
from interp.pipeline.report import report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="efficientnet_lite0")
    ap.add_argument("--per-layer", default="8")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="the report's quick preset")
    ap.add_argument("--layers", default=None, help="comma-separated layers [the report's]")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument(
        "--analyze",
        action="store_true",
        help="do not run: read the report already in --out (its stage times, files, site)",
    )
    ap.add_argument(
        "--side-by-side",
        type=int,
        default=0,
        metavar="N",
        help="then time the explorer's extras of N rendered units both ways in this process: "
        "one unit at a time (starts as a batch of 2, the diversity set as one of 3, each "
        "attribution alone: the path before issue 35) and packed (explorer_units)",
    )
    args = ap.parse_args()
    per_layer = args.per_layer if args.per_layer == "all" else int(args.per_layer)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-explorer-"))
    model = interp.load_model(args.model, device=args.device)
    t0 = time.perf_counter()
    layers = args.layers.split(",") if args.layers else None
    quiet = args.quiet
    if args.analyze:
        if args.out is None:
            ap.error("--analyze reads the report in --out: give it")
        secs = json.loads((out / "report.json").read_text())["seconds"].values()
        wall = sum(v for v in secs if isinstance(v, int | float))
    else:
        report(model, out, quick=args.quick, layers=layers, per_layer=per_layer, progress=not quiet)
        wall = time.perf_counter() - t0
    report_and_site(model, out, per_layer, wall)
    if args.side_by_side:
        side_by_side(model, out, args.side_by_side, quiet)


def report_and_site(model: interp.Model, out: Path, per_layer: object, wall: float) -> None:
    """The report's stage times, render batches, site size and projection for every unit."""
    doc = json.loads((out / "report.json").read_text())
    site = json.loads((out / "site.json").read_text())
    secs = {k: v for k, v in doc["seconds"].items() if isinstance(v, int | float)}
    reused = [k for k, v in doc["seconds"].items() if v == "reused"]
    rendered, tiles = site["unit_pages"], site["tiles"]
    growing = secs.get("atlas", 0.0) + secs.get("units", 0.0)
    fixed = wall - growing
    per_unit = growing / max(1, rendered)
    unit_bytes = sum(
        p.stat().st_size
        for p in (out / "units").rglob("*")
        if p.is_file() and p.name != "unit.json"
    )
    other_bytes = site["bytes"] - unit_bytes
    print(f"model {model.name} on {model.device}, per layer {per_layer}, out {out}")
    if reused:
        print(f"(reused stages, not timed: {', '.join(reused)})")
    batches = doc.get("render_batches") or {}
    print(f"{'stage':<14} {'seconds':>9} {'s/unit':>8}  render calls (mean images per call)")
    for k, v in doc["seconds"].items():
        per = f"{v / max(1, rendered):8.2f}" if isinstance(v, int | float) else f"{'':8}"
        calls = batches.get(k) if k in ("atlas", "units") else None
        where = f"  {calls['calls']} ({calls['mean_batch']:.1f})" if calls else ""
        print(f"{k:<14} {v if isinstance(v, str) else f'{v:9.1f}':>9} {per}{where}")
    print(f"{'site (pages)':<14} {wall - sum(secs.values()):9.1f}")
    print(f"{'total':<14} {wall:9.1f}")
    print(
        f"site: {site['layers']} layer pages, {rendered} unit pages, {tiles} tiles; "
        f"{site['files']} files, {site['bytes'] / 1e6:.2f} MB"
    )
    counted = [b for k, b in batches.items() if b and doc["seconds"].get(k) != "reused"]
    calls = sum(b["calls"] for b in counted)
    if calls:
        images = sum(b["images"] for b in counted)
        print(f"render calls: {calls}, {images} images, mean batch {images / calls:.1f}")
    print(
        f"per rendered unit: {per_unit:.2f} s (atlas + explorer units), "
        f"{unit_bytes / max(1, rendered) / 1e3:.1f} kB"
    )
    print(
        f"projected for every unit ({tiles}): {(fixed + per_unit * tiles) / 60:.1f} min, "
        f"{(other_bytes + unit_bytes / max(1, rendered) * tiles) / 1e6:.1f} MB"
    )
    whole_model(model, doc, fixed)


def per_layer_costs(doc: dict) -> dict[str, tuple[int, float, float]]:
    """Per layer of the report: ``(units rendered, atlas s/unit, explorer-units s/unit)``,
    from the seconds the rendering stages charged to each layer (``report.json``'s
    ``render_batches``: each render call's time shared out by its images' layers, plus the
    explorer's attributions and files); empty where a stage was reused."""
    batches = doc.get("render_batches") or {}
    atlas_s = (batches.get("atlas") or {}).get("seconds_by_layer") or {}
    units_s = (batches.get("units") or {}).get("seconds_by_layer") or {}
    counts = {row: len(units) for row, units in doc["units"].items()}
    return {
        name: (counts[name], atlas_s[name] / counts[name], units_s[name] / counts[name])
        for name in doc["settings"]["layers"]
        if counts.get(name) and name in atlas_s and name in units_s
    }


def whole_model(model: interp.Model, doc: dict, fixed: float) -> None:
    """Every unit of every default layer of the model, each layer at the per-unit cost of
    the nearest measured layer (ties: the deeper one), plus the fixed stages measured here
    scaled by the number of layers."""
    from interp.activations import capture
    from interp.probes.hierarchy import default_hierarchy_layers

    costs = per_layer_costs(doc)
    if not costs:
        return
    print("per layer (the seconds each rendering stage charged to it):")
    for name, (n, a, u) in costs.items():
        print(f"  {name:<20} {n:5d} units  atlas {a:6.2f} s/unit  explorer {u:6.2f} s/unit")
    names = default_hierarchy_layers(model)
    if all(n in costs for n in names):
        return
    x = model.normalize(torch.rand(1, model.preprocessing.channels, *model.input_size))
    with torch.no_grad():
        widths = {n: a.shape[1] for n, a in capture(model, x.to(model.device), names).items()}
    measured = [names.index(n) for n in costs if n in names]
    total_units, growing = 0, 0.0
    for i, name in enumerate(names):
        nearest = min(measured, key=lambda j: (abs(j - i), -j))
        _, a, u = costs[names[nearest]]
        total_units += widths[name]
        growing += widths[name] * (a + u)
    scaled = fixed * len(names) / len(costs)
    print(
        f"projected for every unit of the model ({total_units} units, {len(names)} layers): "
        f"{(growing + scaled) / 3600:.2f} h ({growing / 3600:.2f} h of atlas and explorer "
        f"units, each layer at its nearest measured layer's s/unit; {scaled / 60:.0f} min of "
        f"the other stages, measured here on {len(costs)} layers and scaled to {len(names)})"
    )


def side_by_side(model: interp.Model, out: Path, n: int, quiet: bool) -> None:
    """The explorer's extras for ``n`` of the report's rendered units (spread over its
    layers), one unit at a time and packed, side by side in this process."""
    from interp.attribution import attribute
    from interp.data.specs import data_images
    from interp.dataset_examples import Examples
    from interp.featvis import objectives as obj
    from interp.featvis.render import render, unit_seed
    from interp.pipeline.atlas import Atlas
    from interp.pipeline.explorer import explorer_units
    from interp.pipeline.report import FULL, QUICK

    doc = json.loads((out / "report.json").read_text())
    cfg = doc["settings"]
    extra = cfg["explorer"]
    full = Atlas.load(out / "atlas")
    ex_data = cfg["examples_data"]
    size = model.input_size[0] if ex_data == "photos" else None
    found = Examples.load(
        out / "examples", data=data_images(ex_data, size=size, n=cfg["examples_n"])
    )
    picked = [(e["layer"], u) for e in full.layers if e["layer"] in found for u in e["units"]]
    step = max(1, len(picked) // n)
    picked = picked[::step][:n]
    layers: dict[str, list] = {}
    for layer, u in picked:
        layers.setdefault(layer, []).append(u)
    subset = Atlas(
        full.model,
        full.settings,
        [{**e, "units": layers[e["layer"]]} for e in full.layers if e["layer"] in layers],
        full.folder,
    )
    assert cfg["steps"] in (FULL["steps"], QUICK["steps"])
    t = time.perf_counter()
    for layer, u in picked:
        c, value = int(u["channel"]), float(u.get("value") or 0.0)
        starts, n_div = extra["starts"], extra["diversity"]
        if starts:
            seeds = [unit_seed(1000 + i, layer, c) for i in range(starts)]
            render(
                model,
                obj.channel(layer, [c] * starts),
                batch=starts,
                seeds=seeds,
                steps=cfg["steps"],
                size=cfg["size"],
                progress=False,
            )
        if n_div >= 2:
            weight = 0.25 * max(abs(value), 1e-3)
            objective = obj.channel(layer, [c] * n_div) + weight * obj.diversity(layer)
            seeds = [unit_seed(2000 + i, layer, c) for i in range(n_div)]
            render(
                model,
                objective,
                batch=n_div,
                seeds=seeds,
                steps=cfg["steps"],
                size=cfg["size"],
                progress=False,
            )
        for e in found[layer].unit(c, "top")[: extra["attributions"]]:
            attribute(
                model,
                found.data[e["item"]][0],
                "ig",
                target=f"{layer}:{c}",
                n_steps=extra["n_steps"],
                position=tuple(e["position"]),
            )
    alone = time.perf_counter() - t
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-units-") as tmp:
        result = explorer_units(
            model,
            Path(tmp),
            subset,
            found,
            steps=cfg["steps"],
            size=cfg["size"],
            progress=not quiet,
            **extra,
        )
    packed = time.perf_counter() - t
    m = len(picked)
    print(f"explorer extras, {m} units over {len(layers)} layers, side by side in one run:")
    print(f"  one unit at a time: {alone:8.1f} s  {alone / m:6.2f} s/unit")
    print(
        f"  packed:             {packed:8.1f} s  {packed / m:6.2f} s/unit  "
        f"(render calls {result['render']['calls']}, mean batch "
        f"{result['render']['mean_batch']:.1f}); {alone / packed:.2f}x faster"
    )


if __name__ == "__main__":
    main()
