"""No module of ``interp`` reaches into another one's private names.

A name with a leading underscore is its module's own business: a helper that two modules need
belongs, under a public name, in one of them (or in a module both may import). Checked on the
source (AST), for every module of the package:

* ``from .erf import _small_canvas``, ``from ..x import _y``, ``from interp.x import _y``:
  a private name imported from another module;
* ``erf._small_canvas`` where ``erf`` is a module of the package bound by an import (``from .
  import erf``, ``import interp.probes.erf as erf``): the same reach through an attribute;
* a private *module* (``interp.models._registry``) is private to its package: modules inside
  ``interp.models`` may import it and its public names, modules outside may not.

Dunder names (``__version__``) are not private. Private names of other libraries (torch's)
are out of scope.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "interp"

#: Known violations, each named: (importing module, imported module, name), with a comment
#: saying why; none today. An entry that no longer matches a violation fails
#: :func:`test_the_allow_list_holds_only_live_violations`.
ALLOWED: set[tuple[str, str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """The absolute module name of ``from <level dots><module> import ...`` in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, module] if module else base)


def _owner(module: str) -> str:
    """The package a module is private to: the parent of its first private component
    (``interp.models._registry.x`` -> ``interp.models``); ``""`` for a public module."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            return ".".join(parts[:i])
    return ""


def _inside(importer: str, package: str) -> bool:
    return importer == package or importer.startswith(package + ".")


def violations(modules: dict[str, Path] | None = None) -> list[tuple[str, str, str]]:
    """``(importing module, imported module, name)`` for every private reach across modules
    (of ``modules``, ``{dotted name: file}``; default the package)."""
    modules = MODULES if modules is None else modules
    found = []
    for importer, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        bound: dict[str, str] = {}  # local name -> interp module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _resolve(importer, _is_package(path), node.level, node.module)
                if not (target == "interp" or target.startswith("interp.")):
                    continue
                owner = _owner(target)
                if owner and not _inside(importer, owner):
                    found.append((importer, target, "*"))
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in modules:  # a submodule: private to ``target`` when named _x
                        bound[alias.asname or alias.name] = sub
                        if _private(alias.name) and not _inside(importer, target):
                            found.append((importer, target, alias.name))
                    elif _private(alias.name) and target != importer:
                        found.append((importer, target, alias.name))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == "interp" or alias.name.startswith("interp."):
                        owner = _owner(alias.name)
                        if owner and not _inside(importer, owner):
                            found.append((importer, alias.name, "*"))
                        if alias.asname:
                            bound[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in bound
                and _private(node.attr)
                and bound[node.value.id] != importer
                and f"{bound[node.value.id]}.{node.attr}" not in modules
            ):
                found.append((importer, bound[node.value.id], node.attr))
    return sorted(set(found))


def test_the_scan_sees_the_package():
    assert "interp.probes.edges" in MODULES and "interp.inventory" in MODULES
    assert _resolve("interp.probes.edges", False, 1, "erf") == "interp.probes.erf"
    assert _resolve("interp.probes", True, 2, "inventory") == "interp.inventory"
    assert _resolve("interp.cli.atlas", False, 2, None) == "interp"
    assert _owner("interp.models._registry") == "interp.models"


def test_no_module_imports_another_modules_private_names():
    found = violations()
    new = [v for v in found if v not in ALLOWED]
    assert not new, "private names reached across modules (make them public where they are "
    "shared, or move the helper): " + "; ".join(f"{a} uses {b}.{n}" for a, b, n in new)


def test_the_allow_list_holds_only_live_violations():
    stale = sorted(ALLOWED - set(violations()))
    assert not stale, f"fixed, remove from ALLOWED: {stale}"


_EDGES = "interp.probes.edges"
_ERF = "interp.probes.erf"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from .erf import _small_canvas\n", [(_EDGES, _ERF, "_small_canvas")]),
        ("from interp.probes.erf import _fit\n", [(_EDGES, _ERF, "_fit")]),
        ("from . import erf\nerf._small_canvas(1)\n", [(_EDGES, _ERF, "_small_canvas")]),
        ("import interp.probes.erf as e\ne._fit\n", [(_EDGES, _ERF, "_fit")]),
        ("from ..models import _registry\n", [(_EDGES, "interp.models", "_registry")]),
        ("from ..models._registry import REGISTRY\n", [(_EDGES, "interp.models._registry", "*")]),
        ("from .erf import fit_gabors, __all__\nfrom torch import _C\n", []),
        ("def _mine():\n    pass\n_mine()\n", []),
    ],
)
def test_the_scan_catches_each_form(tmp_path, source, expected):
    (tmp_path / "edges.py").write_text(source)
    (tmp_path / "empty.py").write_text("")
    modules = {
        _EDGES: tmp_path / "edges.py",
        _ERF: tmp_path / "empty.py",
        "interp.models": tmp_path / "empty.py",
        "interp.models._registry": tmp_path / "empty.py",
    }
    assert violations(modules) == expected
