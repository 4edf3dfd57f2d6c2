"""The registry table and the weight handling every model family shares (timm's ``_builder``).

:mod:`~interp.models.small` and :mod:`~interp.models.zoo` register their loaders here;
:mod:`~interp.models.registry` imports them and resolves spec strings against the table. This
module imports neither, so there is no import cycle: the families import this module and
:mod:`~interp.models.base`, and the public registry imports the families.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .base import Model
from .checkpoints import extract_state_dict, load_state_dict_checked, read_checkpoint

__all__ = [
    "Loader",
    "LoadOptions",
    "apply_weight_path",
    "build_random",
    "register_model",
    "register_prefix",
]


def looks_like_path(spec: str) -> bool:
    return (
        os.sep in spec
        or spec.startswith(".")
        or spec.endswith((".pt", ".pth", ".safetensors", ".ckpt", ".bin", ".jit"))
        or Path(spec).exists()
    )


@dataclass(frozen=True)
class LoadOptions:
    """Everything a loader needs besides the spec."""

    weights: str | os.PathLike[str] | None = "default"
    offline: bool | None = None
    trust_checkpoint: bool = False
    quiet: bool = False
    seed: int = 0
    kwargs: tuple[tuple[str, Any], ...] = ()

    @property
    def weights_mode(self) -> str:
        """``"default"``, ``"none"``, ``"path"`` or ``"named"``."""
        w = self.weights
        if w is None or (isinstance(w, str) and w.lower() in {"none", "random", "scratch"}):
            return "none"
        if isinstance(w, str) and w.lower() in {"default", "pretrained"}:
            return "default"
        if isinstance(w, os.PathLike) or (isinstance(w, str) and looks_like_path(w)):
            return "path"
        return "named"


Loader = Callable[[str, LoadOptions], Model]
REGISTRY: dict[str, tuple[Loader, str]] = {}
PREFIXES: dict[str, tuple[Loader, Callable[[], list[str]], str]] = {}
# a family's library check, run before its names are consulted: a family whose optional
# library is missing lists no names, and a spec of it gets the check's install message
REQUIRES: dict[str, Callable[[], object]] = {}


def register_model(name: str, description: str = "") -> Callable[[Loader], Loader]:
    """Decorator: register ``loader(name, options) -> Model`` under ``name``."""

    def wrap(fn: Loader) -> Loader:
        REGISTRY[name] = (fn, description)
        return fn

    return wrap


def register_prefix(
    prefix: str,
    names: Callable[[], list[str]],
    description: str = "",
    requires: Callable[[], object] | None = None,
) -> Callable[[Loader], Loader]:
    """Decorator: ``prefix:<name>`` specs go to ``loader(name, options)``; ``requires`` (when
    given) raises a clear error when the family's optional library is missing."""

    def wrap(fn: Loader) -> Loader:
        PREFIXES[prefix] = (fn, names, description)
        if requires is not None:
            REQUIRES[prefix] = requires
        return fn

    return wrap


def build_random(builder: Callable[[], nn.Module], seed: int) -> nn.Module:
    """Build a module under a private RNG seeded by ``seed`` (caller's RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder()


def apply_weight_path(model: Model, options: LoadOptions) -> Model:
    """Load ``options.weights`` (a path) into ``model.module`` with full key checking."""
    path = Path(os.fspath(options.weights))  # type: ignore[arg-type]
    obj = read_checkpoint(path, trust_checkpoint=options.trust_checkpoint)
    load_state_dict_checked(model.module, extract_state_dict(obj, str(path)), str(path))
    model.weights_source = str(path.resolve())
    return model
