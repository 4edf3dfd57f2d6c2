"""The public API's names: no verb shadows a module of the same name (``interp.capture`` was
both the function and, once imported, hidden behind it the module ``interp/capture.py``)."""

from __future__ import annotations

import pkgutil

import interp


def test_no_public_name_shadows_a_module():
    modules = {m.name for m in pkgutil.iter_modules(interp.__path__)}
    clashes = [
        name
        for name in interp.__all__
        if name in modules and not isinstance(getattr(interp, name), type(interp))
    ]
    assert not clashes, f"interp.{clashes[0]} is a function and a module"
    for verb in ("capture", "classify", "examples", "attribute", "dissect", "report"):
        assert callable(getattr(interp, verb)), verb
