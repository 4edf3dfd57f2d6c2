"""Shared pieces of the experiments: small PartsWorld CNN runs (resumable), SimpleCNN's input
normalization and the thread limit."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ..models.base import Preprocessing
from ..models.registry import load_model
from ..train import TrainConfig, ensure_trained
from ..utils import atomic_write_text, make_dir, settings_digest

__all__ = [
    "runs_folder",
    "CNN_LAYERS",
    "cached_cell",
    "RunSpec",
    "ensure_run",
    "limited_threads",
    "simplecnn_input",
    "simplecnn_preprocessing",
]


#: the probed layers of SimpleCNN: the five ReLUs, then the logits
CNN_LAYERS = [f"features.relu{i}" for i in range(1, 6)]


@dataclass
class RunSpec:
    """A CPU-sized PartsWorld CNN (``interp train`` settings); the defaults train in ~1 min."""

    size: int = 48
    n: int = 6000
    epochs: int = 6
    width: float = 0.5
    snapshots: tuple[int, ...] = (5, 20, 50, 100, 200)
    extra: dict[str, Any] = field(default_factory=dict)

    def folder(self, runs: Path, seed: int, width: float | None = None) -> Path:
        """The run folder of ``seed`` (and ``width``) under ``runs``: every setting in its
        name, so experiments that need the same network share it."""
        w = self.width if width is None else width
        return runs / f"pw-{self.size}px-n{self.n}-e{self.epochs}-w{w}-s{seed}"

    def config(self, seed: int, **overrides: Any) -> TrainConfig:
        kw: dict[str, Any] = {
            "arch": "simplecnn",
            "data": "partsworld",
            "size": self.size,
            "n": self.n,
            "epochs": self.epochs,
            "width": self.width,
            "seed": seed,
            "snapshots": list(self.snapshots),
        }
        kw.update(self.extra)
        kw.update(overrides)
        return TrainConfig(**kw)


def runs_folder(name: str, out: str | Path | None, runs: str | Path | None) -> Path:
    """Where an experiment's networks train: ``runs``, else ``out/runs`` (``out`` is made);
    with neither, a ``ValueError`` that says which to give, before any training."""
    if out is None and runs is None:
        raise ValueError(f"{name}() needs out= or runs= (where its networks train)")
    if out is not None:
        out = make_dir(Path(out))
    return Path(runs) if runs is not None else Path(out) / "runs"  # type: ignore[arg-type]


def ensure_run(folder: Path, config: Any, progress: bool = False) -> dict[str, Any]:
    """:func:`interp.train.ensure_trained` on the CPU (the experiments' networks)."""
    return ensure_trained(config, folder, device="cpu", progress=progress)


@cache
def simplecnn_preprocessing(channels: int = 3) -> Preprocessing:
    """SimpleCNN's preprocessing (``interp train``'s, a run folder's): the registry's."""
    return load_model("simplecnn", device="cpu", weights="none", in_channels=channels).preprocessing


def simplecnn_input(pixels: torch.Tensor) -> torch.Tensor:
    """``[0, 1]`` images (grey repeated to RGB) -> a 3-channel SimpleCNN's input."""
    return simplecnn_preprocessing(3).normalize(pixels)


@contextmanager
def limited_threads(threads: int | None, *, blas: bool = False) -> Iterator[None]:
    """Torch's intra-op threads limited to ``threads`` (``None``: unchanged), and with
    ``blas`` the BLAS/OpenMP pools too; restored on exit. Tiny networks run faster on one
    thread, above all on a busy CPU."""
    if not threads:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        if blas:
            from threadpoolctl import threadpool_limits

            with threadpool_limits(limits=int(threads)):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(previous)


def cached_cell(
    folder: Path | None, name: str, key: dict[str, Any], compute: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], bool]:
    """One cell of an experiment (a network trained and scored, say), computed once.

    The cell is ``folder/<name>-<digest of key>.json``, holding ``key`` and the result. When
    it is there with this ``key``, its result is returned; else ``compute()`` runs and the
    file is written atomically (a kill leaves no half-written cell, and a rerun computes
    only the missing ones). ``folder=None`` caches nothing. Returns ``(result, reused)``.
    """
    if folder is None:
        return compute(), False
    path = Path(folder) / f"{name}-{settings_digest(key)}.json"
    if path.is_file():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            doc = None
        if isinstance(doc, dict) and doc.get("key") == json.loads(json.dumps(key)):
            return doc["result"], True
    result = compute()
    make_dir(path.parent)
    atomic_write_text(path, json.dumps({"key": key, "result": result}) + "\n")
    return result, False
