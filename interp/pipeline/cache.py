"""The one stage cache of every pipeline job (atlas, examples, hierarchy, report, suite).

A stage is reused only when its **key** matches: a digest of the model's weights (every
parameter and buffer, not the model's name: a retrained checkpoint at the same path is another
model), the job's settings (every argument that changes a number, defaults included) and the
data spec. A changed setting, default or weight recomputes; the same ones reuse.

Each finished stage is a marker ``<folder>/stages/<name>-<key>.json`` (written atomically),
next to the stage's own files (``<name>-<key>.npz``...) where it has any. The key is in the
file name, so a job reads the stage of *its* settings, never "the newest file", and going back
to earlier settings reuses their stage. Under torchrun every rank looks before rank 0 writes
(:meth:`StageCache.run`), so ranks never disagree about whether a stage is finished.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from .. import distributed as dist
from ..models.base import Model
from ..models.digest import architecture_digest, weights_digest
from ..utils import atomic_write_text, make_dir, settings_digest

__all__ = ["StageCache", "architecture_digest", "stage_key", "weights_digest"]


def stage_key(
    *, model: Model | nn.Module | str | None = None, settings: Any = None, data: Any = None
) -> str:
    """The key of a stage: digest of the weights (or a given weights digest), settings, data."""
    weights = model if isinstance(model, str) or model is None else weights_digest(model)
    return settings_digest({"weights": weights, "settings": settings, "data": data}, 16)


class StageCache:
    """Finished stages of one job's output folder (``folder/stages``).

    Args:
        folder: the job's output folder (``None``: nothing is cached, every stage runs).
        force: recompute every stage (and overwrite its marker).
        progress: say on stderr when a stage is reused.
    """

    def __init__(self, folder: str | Path | None, *, force: bool = False, progress: bool = True):
        self.dir = None if folder is None else Path(folder) / "stages"
        self.force = force
        self.progress = progress
        self.log: dict[str, str] = {}  # stage name -> "reused" | "computed"

    def path(self, name: str, key: str, suffix: str = ".json") -> Path | None:
        """Where stage ``name`` under ``key`` keeps a file (``None`` without a folder)."""
        return None if self.dir is None else self.dir / f"{name}-{key}{suffix}"

    def get(self, name: str, key: str) -> dict[str, Any] | None:
        """The result recorded by the finished stage ``name`` under ``key``, or ``None``."""
        path = self.path(name, key)
        if self.force or path is None or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            return None  # an unreadable marker is a stage to redo
        if doc.get("key") != key:
            return None
        return doc.get("result", {})

    def put(self, name: str, key: str, result: dict[str, Any] | None = None) -> None:
        """Mark stage ``name`` finished under ``key`` (rank 0 writes; atomically)."""
        path = self.path(name, key)
        if path is None or not dist.is_main():
            return
        make_dir(path.parent)
        doc = {"stage": name, "key": key, "result": result or {}}
        atomic_write_text(path, json.dumps(doc, indent=1, default=str))

    def forget(self, name: str, key: str) -> None:
        """Forget the finished stage ``name`` under ``key`` (rank 0)."""
        path = self.path(name, key)
        if path is not None and dist.is_main():
            path.unlink(missing_ok=True)

    def discard(self, name: str, keep: str | None = None) -> None:
        """Forget every finished ``name`` stage (but the one under ``keep``): rank 0."""
        if self.dir is None or not dist.is_main() or not self.dir.is_dir():
            return
        for path in self.dir.glob(f"{name}-*.json"):
            if path.stem[len(name) + 1 :] != keep and not path.name.endswith(".meta.json"):
                path.unlink(missing_ok=True)

    def run(
        self,
        name: str,
        key: str,
        fn: Callable[[], dict[str, Any]],
        *,
        exclusive: bool = False,
    ) -> dict[str, Any]:
        """``fn()``'s result, from the finished stage when there is one.

        ``exclusive``: the stage writes its files in place (the same folder whatever its
        settings), so computing it under ``key`` first forgets the stage under any other
        key; a run interrupted half-way then reuses nothing of either.

        Under torchrun every rank calls this (the stages split their own work): every rank
        has looked before rank 0 marks the stage finished.
        """
        found = self.get(name, key)
        dist.barrier()
        if found is not None:
            self.log[name] = "reused"
            if self.progress and dist.is_main():
                where = self.path(name, key)
                print(f"reusing the finished {name} stage ({where})", file=sys.stderr)
            return found
        if exclusive:
            self.discard(name)
        result = fn()
        dist.barrier()
        self.put(name, key, result)
        dist.barrier()
        self.log[name] = "computed"
        return result
