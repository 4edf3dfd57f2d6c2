"""The user-level cache: what depends on an architecture, not on a model's trained weights,
measured once per machine and reused by every model of that architecture.

Today that is the hierarchy check's **random-init controls**. A control's probes depend on
the architecture (module structure and parameter shapes), on how the control is built (the
spec it is rebuilt from, or ``reset_parameters``), on its seed, on the model's preprocessing,
on the probe data and on the settings: never on the trained weights. So a second model of
the same architecture (the same network in another output folder, a fine-tuned copy, every
seed of a trained CNN) finds them here instead of measuring them again.

Where: ``$INTERP_CACHE`` (``off``, ``0``, ``none`` or ``false`` turn it off), else
``$XDG_CACHE_HOME/interp``, else ``~/.cache/interp``; entries in its ``controls/`` folder,
named by the control's role, seed and key. Writes are atomic (a temp file in the same
folder, then a rename), so two processes or ranks that write the same entry each leave a
complete file; an entry that does not load is removed and measured again, never trusted.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..models.base import Model
from ..models.registry import list_models
from ..utils import settings_digest

__all__ = ["ControlCache", "control_recipe", "user_cache_dir"]

_OFF = {"off", "0", "none", "false", "no"}


def user_cache_dir() -> Path | None:
    """The user-level cache folder (module docstring), or ``None`` when it is turned off."""
    value = os.environ.get("INTERP_CACHE", "").strip()
    if value.lower() in _OFF:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "interp"


def control_recipe(model: Model) -> dict[str, Any]:
    """How a random-init control of ``model`` is built, and what of the model it keeps: the
    spec it is rebuilt from (or ``reset_parameters`` of the module's class) and the
    preprocessing it is probed through. Two models with the same recipe, architecture, seed,
    data and settings have the same control."""
    info = model.info or {}
    if info.get("arch"):
        how: dict[str, Any] = {"spec": str(info["arch"]), "kwargs": info.get("arch_kwargs") or {}}
    elif model.name in list_models():
        how = {"spec": model.name}
    else:
        how = {"reset": type(model.module).__qualname__}
    pre = model.preprocessing
    how["preprocessing"] = {
        "mean": list(pre.mean),
        "std": list(pre.std),
        "input_size": list(pre.input_size),
        "channels": pre.channels,
    }
    return how


class ControlCache:
    """The ``controls/`` folder of the user-level cache (``folder=None``: nothing is cached).

    An entry is a network's probes as :meth:`NetworkProbes.save` writes them: ``NAME.npz``
    and ``NAME.meta.json``.
    """

    def __init__(self, folder: Path | None, *, progress: bool = True) -> None:
        self.dir = None if folder is None else Path(folder) / "controls"
        self.progress = progress
        self.log: dict[str, str] = {}  # entry -> "reused" | "stored" | "damaged"

    @staticmethod
    def key(stage_key: str, recipe: dict[str, Any]) -> str:
        """The entry's key: the control's stage key (architecture, seed, layers, settings,
        data) and its recipe (:func:`control_recipe`)."""
        return settings_digest({"stage": stage_key, "recipe": recipe}, 16)

    def path(self, tag: str, key: str) -> Path | None:
        return None if self.dir is None else self.dir / f"{tag}-{key}.npz"

    def fetch(self, tag: str, key: str, dest: Path, load: Any) -> bool:
        """Copy the entry ``tag``/``key`` to ``dest`` (and its meta) when it loads with
        ``load(path)``; a damaged entry is removed. True when ``dest`` now holds it."""
        src = self.path(tag, key)
        if src is None or not (src.is_file() and src.with_suffix(".meta.json").is_file()):
            return False
        try:
            load(src)
        except Exception:  # noqa: BLE001 - any failure to load means: measure again
            self.log[src.name] = "damaged"
            for p in (src, src.with_suffix(".meta.json")):
                p.unlink(missing_ok=True)
            if self.progress:
                print(f"user cache: {src} did not load; measuring it again", file=sys.stderr)
            return False
        for a, b in ((src, dest), (src.with_suffix(".meta.json"), dest.with_suffix(".meta.json"))):
            _copy_atomic(a, b)
        self.log[src.name] = "reused"
        if self.progress:
            print(
                f"reusing the random-init control {tag} from the user cache ({src})",
                file=sys.stderr,
            )
        return True

    def store(self, tag: str, key: str, src: Path) -> None:
        """Keep the probes at ``src`` (and its meta) as entry ``tag``/``key`` (atomic; a
        cache that cannot be written is skipped with a note, never an error)."""
        dest = self.path(tag, key)
        if dest is None:
            return
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            # the meta first: an entry counts only once its arrays are there too
            _copy_atomic(src.with_suffix(".meta.json"), dest.with_suffix(".meta.json"))
            _copy_atomic(src, dest)
        except OSError as exc:
            if self.progress:
                print(f"user cache: could not write {dest} ({exc}); going on", file=sys.stderr)
            return
        self.log[dest.name] = "stored"


def _copy_atomic(src: Path, dest: Path) -> None:
    """Copy ``src`` to ``dest`` through a temp file in ``dest``'s folder and a rename."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
