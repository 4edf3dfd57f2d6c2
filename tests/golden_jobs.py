"""Small, seeded atlas, examples and hierarchy jobs whose JSON numbers are kept in
``tests/golden/jobs.json``: a refactor must not change an output by accident.

``python tests/golden_jobs.py --write`` regenerates the golden file (say in the commit why a
number changed); ``tests/test_golden.py`` compares every number with it.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden" / "jobs.json"
MODEL = ["simplecnn", "--weights", "none", "--quiet", "--device", "cpu", "--seed", "7"]

JOBS: dict[str, tuple[list[str], str]] = {
    "atlas": (
        ["atlas", *MODEL, "--layers", "features.relu1,features.relu3", "--per-layer", "2"]
        + ["--steps", "4", "--size", "24", "--n-reference", "8", "--precision", "fp32"],
        "index.json",
    ),
    "examples": (
        ["examples", *MODEL, "--data", "digits", "--n", "32", "--k", "3"]
        + ["--layers", "features.relu2,features.relu4"],
        "examples.json",
    ),
    "hierarchy": (
        ["hierarchy", *MODEL, "--data", "partsworld", "--n", "32", "--size", "32"]
        + ["--layers", "features.relu1,features.relu5", "--control-seeds", "0"]
        + ["--bootstrap", "20", "--min-control-units", "32", "--reference-images", "8"]
        + ["--precision", "fp32"],
        "hierarchy.json",
    ),
}

# keys whose values are not outputs: timings, where files went, environment
_SKIP = {"seconds", "timings", "wall_s", "elapsed", "out", "path", "device", "version"}


def flatten(doc: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b[2].c": value}`` for every number, string and bool in ``doc``."""
    out: dict[str, Any] = {}
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key in _SKIP or key.endswith("_seconds"):
                continue
            out |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            out |= flatten(value, f"{prefix}[{i}]")
    elif isinstance(doc, float) and not math.isfinite(doc):
        out[prefix] = repr(doc)
    else:
        out[prefix] = doc
    return out


def run_jobs() -> dict[str, dict[str, Any]]:
    """Run every job in a temp folder; ``{job: flattened JSON}``."""
    import torch

    from interp.cli import main

    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (argv, doc) in JOBS.items():
            out = Path(tmp) / name
            status = main([*argv, "--out", str(out)])
            if status != 0:
                raise RuntimeError(f"{name} exited {status}")
            text = (out / doc).read_text().replace(str(out), "OUT")
            results[name] = flatten(json.loads(text))
    return results


if __name__ == "__main__":
    if "--write" not in sys.argv:
        sys.exit("usage: python tests/golden_jobs.py --write")
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(run_jobs(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
