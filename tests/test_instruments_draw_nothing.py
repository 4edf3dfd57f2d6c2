"""Instruments and their results hold data: no figure code (matplotlib) and no import of
``interp.views`` in featvis, attribution, dataset examples or the probes; their figures are
in ``interp.views``, fed the result objects (interp.probes is also an import contract)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "interp"
FILES = sorted(
    [
        *(ROOT / "featvis").glob("*.py"),
        *(ROOT / "probes").rglob("*.py"),
        ROOT / "attribution.py",
        ROOT / "dataset_examples.py",
        ROOT / "inventory.py",
    ]
)


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            found += [base, *(f"{base}.{a.name}" for a in node.names)]
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT.parent)))
def test_no_figures_in_instruments(path):
    bad = [m for m in _imports(path) if "views" in m.split(".") or m.startswith("matplotlib")]
    assert not bad, f"{path.name} draws: {bad}"
