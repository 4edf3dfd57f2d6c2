"""The traced geometry of one model's layers, shared by the instruments that probe it.

The grating probe (:func:`~interp.probes.edges.edge_probe`) and the ERF probe
(:func:`~interp.probes.erf.erf_probe`) both need the layers' inventory with their receptive
fields (:func:`interp.inventory.layers`: one backward pass per eight layers) and the smallest
canvas that holds each layer's receptive field (:func:`interp.inventory.smallest_canvas`: up
to three more backward passes per layer). A :class:`LayerGeometry` traces each once per
model, weights and settings, and every probe handed it reads the same trace: the hierarchy
check makes one per network it probes (:func:`~interp.probes.hierarchy.probe_network`) and
passes it to every instrument in :class:`~interp.probes.instruments.ProbeContext`.

What it returns is what the untraced calls return, exactly (the same function, called with
the same arguments, on the same weights). Before every answer it compares the model's
signature with the one it traced under: a digest of every parameter and buffer
(:func:`~interp.models.digest.weights_digest`, by content: also a change through ``.data``,
which no version counter sees), every submodule's identity, type, ``extra_repr`` and hook
count, the model's preprocessing and device. When any of them changed it forgets everything
and traces again, so it never answers for other weights. A probe that asks several times
and changes no weight meanwhile compares once (:meth:`LayerGeometry.pinned`).

The receptive fields are *measured* with the model's own weights (the support of a
gradient), so they are not a property of the architecture alone: a ReLU that never fires
hides the pixels behind it (``tests/test_inventory_shared.py`` plants one). The random-init
controls of the hierarchy check therefore each get their own geometry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from torch import nn

from .activations import resolve_layers
from .inventory import LayerInfo, layers, smallest_canvas
from .models.base import Model
from .models.digest import weights_digest
from .models.registry import as_model

__all__ = ["LayerGeometry"]

_LayersKey = tuple[tuple[str, ...], tuple[int, int], bool, int]


def _spatial(info: LayerInfo) -> bool:
    return info.output_shape is not None and len(info.output_shape) == 3


class LayerGeometry:
    """Memo of one model's traced inventory and smallest canvases (module docstring).

    Args:
        model: the model (a bare ``nn.Module`` is taken as a 224 px ImageNet model, as
            everywhere).

    Attributes:
        traced: inventories traced (:func:`~interp.inventory.layers` calls).
        searched: smallest canvases searched (:func:`~interp.inventory.smallest_canvas` calls).
        reused: answers read from the memo.
    """

    def __init__(self, model: Model | nn.Module) -> None:
        self.model = as_model(model)
        self.traced = 0
        self.searched = 0
        self.reused = 0
        self._signature: tuple[Any, ...] | None = None
        self._pinned = 0
        self._layers: dict[_LayersKey, list[LayerInfo]] = {}
        self._canvases: dict[tuple[Any, ...], int] = {}

    @classmethod
    def of(cls, model: Model, geometry: LayerGeometry | None) -> LayerGeometry:
        """``geometry`` when it is ``model``'s (the same module and preprocessing), a fresh
        one for ``model`` when it is ``None``; ``ValueError`` for another model's."""
        if geometry is None:
            return cls(model)
        mine = geometry.model
        if mine.module is not model.module or mine.preprocessing != model.preprocessing:
            raise ValueError(
                f"the layer geometry is {mine.name!r}'s, not {model.name!r}'s: "
                "pass each model its own LayerGeometry"
            )
        return geometry

    def clear(self) -> None:
        """Forget every trace (the next answers trace again)."""
        self._signature = None
        self._layers.clear()
        self._canvases.clear()

    def signature(self) -> tuple[Any, ...]:
        """What the traces depend on: the weights' digest, every submodule's identity, type,
        ``extra_repr`` and hook count, the preprocessing and the device."""
        model = self.model
        modules = tuple(
            (
                name,
                id(sub),
                type(sub).__qualname__,
                sub.extra_repr(),
                len(sub._forward_hooks) + len(sub._forward_pre_hooks),
            )
            for name, sub in model.module.named_modules()
        )
        return (weights_digest(model.module), modules, repr(model.preprocessing), model.device)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[LayerGeometry]:
        """A block that changes none of the model's weights or modules (a probe's own
        questions): the signature is compared once, on entry, not before every answer."""
        self._check()
        self._pinned += 1
        try:
            yield self
        finally:
            self._pinned -= 1

    def _check(self) -> None:
        """Forget every trace when the model changed since it was traced."""
        if self._pinned and self._signature is not None:
            return
        now = self.signature()
        if now != self._signature:
            self.clear()
            self._signature = now

    def layers(
        self,
        names: str | Sequence[str],
        size: int | tuple[int, int],
        *,
        receptive_field: bool = True,
        chunk: int = 8,
    ) -> list[LayerInfo]:
        """:func:`interp.inventory.layers` of ``names`` at ``size`` (``(height, width)`` or a
        square side), traced once: a later call with the same arguments, or with a part of
        them that leaves out only layers without a spatial output (a layer a probe dropped
        for that reason), reads the trace. Copies: changing them changes nothing here."""
        self._check()
        wanted = tuple(resolve_layers(self.model, names))
        hw = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        key: _LayersKey = (wanted, hw, bool(receptive_field), int(chunk))
        found = self._layers.get(key)
        if found is None:
            found = self._from_superset(key)
        if found is None:
            found = layers(
                self.model,
                names=list(wanted),
                input_size=hw,
                receptive_field=receptive_field,
                chunk=chunk,
            )
            self.traced += 1
        else:
            self.reused += 1
        self._layers[key] = found
        return [replace(info) for info in found]

    def _from_superset(self, key: _LayersKey) -> list[LayerInfo] | None:
        """The trace of more layers than ``key``'s, restricted to them, where it is what
        tracing ``key``'s layers gives: the extra layers have no spatial output (so they take
        no part in the receptive-field passes) and the rest keep their order. The forward
        pass up to the last wanted layer is the same, and so is every measurement."""
        wanted, rest = key[0], key[1:]
        chosen = set(wanted)
        for (names, *other), infos in self._layers.items():
            if tuple(other) != rest or not chosen <= set(names):
                continue
            if [n for n in names if n in chosen] != list(wanted):
                continue
            if any(_spatial(i) for i in infos if i.name not in chosen):
                continue
            return [i for i in infos if i.name in chosen]
        return None

    def canvas(self, info: LayerInfo, size: int) -> int:
        """:func:`interp.inventory.smallest_canvas` of ``info``'s layer on a ``size`` px
        canvas, searched once per layer, size and measured receptive field."""
        return self.canvases([info], size)[info.name]

    def canvases(self, infos: Iterable[LayerInfo], size: int) -> dict[str, int]:
        """:meth:`canvas` of each of ``infos`` (``{layer: canvas}``)."""
        self._check()
        out: dict[str, int] = {}
        for info in infos:
            key = (info.name, int(size), info.rf_size, info.rf_stride, info.rf_clipped)
            if key in self._canvases:
                self.reused += 1
            else:
                self._canvases[key] = smallest_canvas(self.model, info, int(size))
                self.searched += 1
            out[info.name] = self._canvases[key]
        return out

    def counts(self) -> dict[str, int]:
        """``{"traced", "searched", "reused"}``: the work done and the work saved."""
        return {"traced": self.traced, "searched": self.searched, "reused": self.reused}
