"""Screenshots of an explorer site for the README and docs (headless Chromium via Playwright).

    python scripts/screenshot_explorer.py out/demo/lite0 --layer _blocks.1 --out docs/images

Writes ``explorer_index.png`` (the top of the index), ``explorer_layer.png`` (the top of the
layer page) and ``explorer_unit.png`` (the top of the page of the layer's first rendered unit).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from interp.views.site import slug as site_slug  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site", type=Path, help="the --out folder of `interp report`")
    ap.add_argument("--layer", default=None, help="layer to show [the second one]")
    ap.add_argument("--unit", type=int, default=None, help="channel [its first rendered unit]")
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=900)
    args = ap.parse_args()
    index = json.loads((args.site / "atlas" / "index.json").read_text())
    layers = [e["layer"] for e in index["layers"]]
    layer = args.layer or layers[min(1, len(layers) - 1)]
    entry = next(e for e in index["layers"] if e["layer"] == layer)
    unit = args.unit if args.unit is not None else entry["units"][0]["channel"]
    slug = site_slug(layer)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    args.out.mkdir(parents=True, exist_ok=True)
    pages = {
        "explorer_index.png": args.site / "index.html",
        "explorer_layer.png": args.site / "layers" / f"{slug}.html",
        "explorer_unit.png": args.site / "units" / slug / f"{unit}.html",
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        for name, path in pages.items():
            page.goto(path.resolve().as_uri())
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / name))
            print(f"{args.out / name}: {path}")
        browser.close()


if __name__ == "__main__":
    main()
