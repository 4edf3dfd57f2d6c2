"""The explorer's cost: time and size of the site ``interp report`` writes, and the projected
time for every unit from the measured per-unit cost.

    python scripts/bench_explorer.py                      # efficientnet_lite0, 8 per layer
    python scripts/bench_explorer.py --per-layer all --device cuda   (device_check.sh: real)

It runs the report into ``--out`` (default: a fresh temp folder, so nothing is reused) and
reads the stage times it records (``report.json``) and the site it wrote (``site.json``).
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
    args = ap.parse_args()
    per_layer = args.per_layer if args.per_layer == "all" else int(args.per_layer)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-explorer-"))
    model = interp.load_model(args.model, device=args.device)
    t0 = time.perf_counter()
    layers = args.layers.split(",") if args.layers else None
    quiet = args.quiet
    report(model, out, quick=args.quick, layers=layers, per_layer=per_layer, progress=not quiet)
    wall = time.perf_counter() - t0
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
    print(f"model {args.model} on {model.device}, per layer {per_layer}, out {out}")
    if reused:
        print(f"(reused stages, not timed: {', '.join(reused)})")
    print(f"{'stage':<14} {'seconds':>9}")
    for k, v in doc["seconds"].items():
        print(f"{k:<14} {v if isinstance(v, str) else f'{v:9.1f}':>9}")
    print(f"{'site (pages)':<14} {wall - sum(secs.values()):9.1f}")
    print(f"{'total':<14} {wall:9.1f}")
    print(
        f"site: {site['layers']} layer pages, {rendered} unit pages, {tiles} tiles; "
        f"{site['files']} files, {site['bytes'] / 1e6:.2f} MB"
    )
    print(
        f"per rendered unit: {per_unit:.2f} s (atlas + explorer units), "
        f"{unit_bytes / max(1, rendered) / 1e3:.1f} kB"
    )
    print(
        f"projected for every unit ({tiles}): {(fixed + per_unit * tiles) / 60:.1f} min, "
        f"{(other_bytes + unit_bytes / max(1, rendered) * tiles) / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    main()
