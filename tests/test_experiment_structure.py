"""The experiments' code keeps its shape: no private name imported across modules, no plotting
outside interp.views, short functions and modules (checked on the source's AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "interp"
#: the files of the experiments, their training loop and their suite
FILES = sorted(
    [
        *(PACKAGE / "experiments").glob("*.py"),
        PACKAGE / "train.py",
        PACKAGE / "pipeline" / "suite.py",
        PACKAGE / "similarity.py",
        PACKAGE / "data" / "toy.py",
        PACKAGE / "views" / "experiment_figures.py",
    ]
)
#: their command-line modules: they still take cli/_common's private argument types
CLI_FILES = [PACKAGE / "cli" / "experiment.py", PACKAGE / "cli" / "train.py"]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _private_imports(path: Path) -> list[str]:
    """``from X import _name`` and ``from pkg._mod import ...`` from outside ``pkg``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            continue
        found += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        parts = (node.module or "").split(".")
        private = [p for p in parts if p.startswith("_")]
        outside = node.level != 1  # ``from ._common import x`` stays inside the package
        if private and outside:
            found.append(f"{'.' * node.level}{node.module}")
    return found


@pytest.mark.parametrize("path", FILES, ids=_name)
def test_no_private_name_is_imported_across_modules(path):
    assert _private_imports(path) == []


@pytest.mark.parametrize("path", CLI_FILES, ids=_name)
def test_the_cli_modules_import_no_private_name(path):
    assert _private_imports(path) == []


@pytest.mark.parametrize(
    "path",
    [*sorted((PACKAGE / "experiments").glob("*.py")), PACKAGE / "train.py"]
    + [PACKAGE / "pipeline" / "suite.py"],
    ids=_name,
)
def test_no_plotting_outside_views(path):
    """Not one line of plotting: no matplotlib and no figure function imported (the suite
    hands result objects to interp.views.experiment_figures)."""
    tree = ast.parse(path.read_text())
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m.startswith("matplotlib")]
    names = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    if path.name != "suite.py":
        assert not [m for m in modules if "views" in m]
    else:
        assert names & {"save_figure", "plt"} == set()


@pytest.mark.parametrize("path", [*FILES, *CLI_FILES], ids=_name)
def test_functions_and_modules_are_short(path):
    source = path.read_text()
    assert len(source.splitlines()) <= 800
    long = [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > 150
    ]
    assert long == []
