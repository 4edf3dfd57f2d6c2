"""What :func:`~interp.featvis.render.render` returns: :class:`RenderResult`, with its files
(``render.json``, ``render.npz``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..utils import load_arrays, save_arrays

__all__ = ["RenderResult"]


@dataclass
class RenderResult:
    """What :func:`render` returns.

    Attributes:
        images: ``(B, C, H, W)`` float tensor in ``[0, 1]`` on the CPU (with ``align``, each
            at its best one-pixel translation; ``info["shifts"]`` says which).
        values: final objective value of each image as returned (evaluated on the
            untransformed canvas, float32, the true network).
        history: mean objective value over the batch at each step (with transforms).
        objective: the objective's name.
        units: per image, the unit it targets (when the objective says).
        dead: per image, ``True`` when its objective had zero gradient from every start tried
            (the start and :data:`RESTARTS` others): the unit is dead on such images (e.g. a
            ReLU that never turns on) and the image is not a visualization of anything.
        restarts: per image, how many fresh starts it took to get a non-zero gradient.

    ``to_dict()`` is its JSON (every attribute but the images); ``save(folder)`` writes it
    and the images and values (``render.json``, ``render.npz``), which
    ``RenderResult.load(folder)`` reads back.
    """

    images: torch.Tensor
    values: torch.Tensor
    history: list[float]
    objective: str
    units: list[dict[str, Any]] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    dead: list[bool] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form: the objective, its units, each image's value, the history,
        ``info``, dead images and restarts (the images themselves: :meth:`save`)."""
        return {
            "objective": self.objective,
            "units": self.units,
            "values": [float(v) for v in self.values.flatten()],
            "history": list(self.history),
            "info": self.info,
            "dead": list(self.dead),
            "restarts": list(self.restarts),
        }

    def save(self, folder: str | Path, stem: str = "render") -> list[Path]:
        """``STEM.npz`` (images and values, as computed) and ``STEM.json`` (:meth:`to_dict`)
        in ``folder``, atomically; returns their paths."""
        arrays = {"images": self.images.numpy(), "values": self.values.numpy()}
        return save_arrays(folder, stem, arrays, self.to_dict())

    @classmethod
    def load(cls, folder: str | Path, stem: str = "render") -> RenderResult:
        """A result written by :meth:`save`."""
        arrays, doc = load_arrays(folder, stem)
        return cls(
            images=torch.from_numpy(arrays["images"]),
            values=torch.from_numpy(arrays["values"]),
            history=doc["history"],
            objective=doc["objective"],
            units=doc["units"],
            info=doc["info"],
            dead=doc["dead"],
            restarts=doc["restarts"],
        )
