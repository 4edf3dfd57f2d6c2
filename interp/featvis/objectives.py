"""Feature-visualization objectives: what an optimized image should maximize.

An :class:`Objective` maps activations to **one value per image** (shape ``(batch,)``, higher
is better), so a batch of images can chase different units at once: image *i* of
``channel("layer3", [4, 9, 17])`` maximizes channel 4, 9 or 17 for i = 0, 1, 2. Objectives
compose with ``+ - * /`` and numbers and carry a readable name::

    obj = channel("_blocks.5", 7) - 0.05 * total_variation()
    str(obj)            # 'channel(_blocks.5:7) - 0.05*total_variation()'
    as_objective("_blocks.5:7")          # the "layer:channel" shorthand

Penalties (:func:`l2`, :func:`total_variation`) are positive magnitudes: subtract them.
lucent objectives (``lucent.optvis.objectives``) are accepted by :func:`as_objective` as they
are; their value is minus lucent's loss, for the whole batch.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "INPUT",
    "LOGITS",
    "Objective",
    "as_objective",
    "channel",
    "neuron",
    "direction",
    "logit",
    "diversity",
    "l2",
    "total_variation",
    "stack",
]

#: Pseudo-layer: the image being optimized (``(B, C, H, W)`` in ``[0, 1]``, untransformed).
INPUT = "<input>"
#: Pseudo-layer: the model's output (runs the whole network).
LOGITS = "<logits>"

Getter = Callable[[str], torch.Tensor]


class Objective:
    """A per-image value to maximize.

    Args:
        fn: ``fn(T) -> Tensor (B,)`` where ``T(layer)`` returns that layer's activations.
        name: a readable name.
        layers: the layers ``fn`` reads (dotted names, :data:`INPUT` or :data:`LOGITS`).
        batch: how many images the objective defines (``None``: any).
        units: per image, a JSON-friendly description of the unit it targets.
    """

    def __init__(
        self,
        fn: Callable[[Getter], torch.Tensor],
        name: str,
        layers: Sequence[str] = (),
        batch: int | None = None,
        units: list[dict[str, Any]] | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.layers = tuple(dict.fromkeys(layers))
        self.batch = batch
        self.units = units

    def __call__(self, T: Getter) -> torch.Tensor:
        return self.fn(T)

    def __repr__(self) -> str:
        return self.name

    # -- algebra ---------------------------------------------------------------------------
    def _combine(self, other: Objective, op: Callable, sym: str) -> Objective:
        batch = self.batch if self.batch is not None else other.batch
        if self.batch is not None and other.batch is not None and self.batch != other.batch:
            raise ValueError(f"cannot combine objectives for {self.batch} and {other.batch} images")
        return Objective(
            lambda T: op(self(T), other(T)),
            f"{_paren(self.name) if sym in '*/' else self.name} {sym} "
            f"{other.name if sym == '+' else _paren(other.name)}",
            self.layers + other.layers,
            batch,
            self.units if self.units is not None else other.units,
        )

    def _scalar(self, value: float, op: Callable, text: str) -> Objective:
        return Objective(lambda T: op(self(T), value), text, self.layers, self.batch, self.units)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Number):
            return self._scalar(float(other), torch.add, f"{self.name} + {other:g}")
        return self._combine(as_objective(other), torch.add, "+")

    def __radd__(self, other: float) -> Objective:
        if other == 0:  # sum([...]) starts from 0
            return self
        return self.__add__(other)

    def __sub__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Number):
            return self._scalar(float(other), torch.sub, f"{self.name} - {other:g}")
        return self._combine(as_objective(other), torch.sub, "-")

    def __rsub__(self, other: float) -> Objective:
        return (-self) + other

    def __neg__(self) -> Objective:
        return Objective(
            lambda T: -self(T), f"-{_paren(self.name)}", self.layers, self.batch, self.units
        )

    def __mul__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Number):
            return self._scalar(float(other), torch.mul, f"{other:g}*{_paren(self.name)}")
        return self._combine(as_objective(other), torch.mul, "*")

    __rmul__ = __mul__

    def __truediv__(self, other: Objective | float) -> Objective:
        if isinstance(other, numbers.Number):
            return self._scalar(float(other), torch.div, f"{_paren(self.name)}/{other:g}")
        return self._combine(as_objective(other), torch.div, "/")


def _paren(name: str) -> str:
    """Parenthesize a sum or difference (products and quotients bind tighter)."""
    return f"({name})" if " + " in name or " - " in name else name


def _native(T: Getter, layer: str) -> torch.Tensor:
    """``layer``'s activations in the dtype the forward pass computed them in, where the
    getter offers that (``T.native``: the renderer's, under bf16 autocast), else ``T(layer)``
    (float32). For objectives that select a few values and cast those: casting the whole
    activation first costs a full-size copy forward and backward (resnet18 ``layer1.0``,
    16 images: 2.9 ms against 0.7 ms a step)."""
    native = getattr(T, "native", None)
    return native(layer) if callable(native) else T(layer)


def _per_image(values: torch.Tensor, batch: int) -> torch.Tensor:
    return values.float().reshape(batch, -1).mean(dim=1)


def _indices(channels: int | Sequence[int]) -> list[int]:
    return [int(channels)] if isinstance(channels, numbers.Integral) else [int(c) for c in channels]


def _select(acts: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """Channel ``idx[i]`` of image ``i`` (one index: that channel for every image)."""
    if len(idx) == 1:
        return acts[:, idx[0]]
    if acts.shape[0] != len(idx):
        raise ValueError(
            f"objective defines {len(idx)} images (one per channel) but the batch has "
            f"{acts.shape[0]}"
        )
    return acts[torch.arange(len(idx), device=acts.device), idx]


def channel(layer: str, channels: int | Sequence[int]) -> Objective:
    """Mean activation of a channel over all positions (lucid's ``channel``).

    With a list of channels, image ``i`` maximizes ``channels[i]``.
    """
    idx = _indices(channels)
    label = idx[0] if len(idx) == 1 else f"[{len(idx)} channels]"

    def fn(T: Getter) -> torch.Tensor:
        acts = _native(T, layer)
        return _per_image(_select(acts, idx), acts.shape[0])

    return Objective(
        fn,
        f"channel({layer}:{label})",
        [layer],
        None if len(idx) == 1 else len(idx),
        [{"layer": layer, "channel": c, "kind": "channel"} for c in idx],
    )


def neuron(
    layer: str, channels: int | Sequence[int], x: int | None = None, y: int | None = None
) -> Objective:
    """Activation of one spatial position of a channel: the centre by default
    (for even sizes, the lower-right of the central 2x2, as lucid)."""
    idx = _indices(channels)
    label = idx[0] if len(idx) == 1 else f"[{len(idx)} channels]"
    where = "" if x is None and y is None else f" @x={x},y={y}"

    def fn(T: Getter) -> torch.Tensor:
        acts = _native(T, layer)
        if acts.dim() == 4:
            px = acts.shape[3] // 2 if x is None else x
            py = acts.shape[2] // 2 if y is None else y
            acts = acts[:, :, py, px]
        return _select(acts, idx).float()

    return Objective(
        fn,
        f"neuron({layer}:{label}{where})",
        [layer],
        None if len(idx) == 1 else len(idx),
        [{"layer": layer, "channel": c, "kind": "neuron", "x": x, "y": y} for c in idx],
    )


def direction(layer: str, vector: torch.Tensor | Sequence[float]) -> Objective:
    """Mean over positions of the activation's projection on ``vector`` (a channel-space
    direction, e.g. a concept vector), ``<a, v> / |v|``."""
    vec = torch.as_tensor(vector, dtype=torch.float32).flatten()
    unit = vec / vec.norm().clamp_min(1e-12)

    def fn(T: Getter) -> torch.Tensor:
        acts = T(layer).float()
        u = unit.to(acts.device)
        if acts.shape[1] != u.numel():
            raise ValueError(
                f"direction has {u.numel()} entries but {layer} has {acts.shape[1]} channels"
            )
        proj = torch.einsum("bc...,c->b...", acts, u)
        return _per_image(proj, acts.shape[0])

    return Objective(fn, f"direction({layer})", [layer])


def logit(classes: int | str | Sequence[int | str]) -> Objective:
    """The model's output (pre-softmax) for a class, by index or name; with a list, image
    ``i`` maximizes ``classes[i]``. Names are looked up in the model's class names."""
    items = [classes] if isinstance(classes, int | str) else list(classes)
    label = items[0] if len(items) == 1 else f"[{len(items)} classes]"

    def fn(T: Getter) -> torch.Tensor:
        lookup = getattr(T, "class_index", None)
        idx = []
        for item in items:
            if isinstance(item, str):
                if lookup is None:
                    raise ValueError(f"logit({item!r}) needs the model's class names")
                idx.append(lookup(item))
            else:
                idx.append(int(item))
        return _select(T(LOGITS), idx).float()

    return Objective(
        fn,
        f"logit({label})",
        [LOGITS],
        None if len(items) == 1 else len(items),
        [{"layer": LOGITS, "class": c, "kind": "logit"} for c in items],
    )


def diversity(layer: str) -> Objective:
    """Minus the mean cosine similarity of each image's Gram matrix at ``layer`` with the
    others' (lucid's diversity term): add it, weighted, to make a batch differ."""

    def fn(T: Getter) -> torch.Tensor:
        acts = T(layer).float()
        b, c = acts.shape[:2]
        flat = acts.reshape(b, c, -1)
        grams = F.normalize(torch.bmm(flat, flat.transpose(1, 2)).reshape(b, -1), dim=1)
        sims = grams @ grams.T
        if b < 2:
            return torch.zeros(b, device=acts.device)
        return -(sims.sum(dim=1) - sims.diagonal()) / (b - 1)

    return Objective(fn, f"diversity({layer})", [layer])


def l2(center: float = 0.5) -> Objective:
    """Penalty: mean squared distance of the image's pixels from ``center`` (subtract it)."""
    return Objective(
        lambda T: ((T(INPUT).float() - center) ** 2).flatten(1).mean(dim=1), "l2", [INPUT]
    )


def total_variation() -> Objective:
    """Penalty: mean absolute difference of neighbouring pixels (subtract it)."""

    def fn(T: Getter) -> torch.Tensor:
        img = T(INPUT).float()
        dx = (img[..., :, 1:] - img[..., :, :-1]).abs().flatten(1).mean(dim=1)
        dy = (img[..., 1:, :] - img[..., :-1, :]).abs().flatten(1).mean(dim=1)
        return dx + dy

    return Objective(fn, "total_variation", [INPUT])


class _Rows:
    """The getter of one part of a stacked batch: rows ``[start, stop)`` of everything the
    full batch's getter returns (activations, the input, the logits)."""

    def __init__(self, T: Getter, start: int, stop: int) -> None:
        self.T, self.start, self.stop = T, start, stop

    def __call__(self, name: str) -> torch.Tensor:
        return self.T(name)[self.start : self.stop]

    def native(self, name: str) -> torch.Tensor:
        return _native(self.T, name)[self.start : self.stop]

    def class_index(self, name: str) -> int:
        return self.T.class_index(name)  # type: ignore[attr-defined]


def stack(parts: Sequence[Objective | tuple[Objective, int]]) -> Objective:
    """One objective for a batch made of several objectives' images, in order: part ``k``
    owns the next ``n_k`` images (its ``batch``, or the ``n`` of an ``(objective, n)``
    pair) and reads only their rows of every activation. A term that couples the images of
    a batch (:func:`diversity`) couples only those of its own part, so each image depends
    on its own part alone, never on its batch neighbours::

        stack([channel("_blocks.3", [5, 5]),                      # two starts of unit 5
               channel("_blocks.3", [9] * 3) + 0.1 * diversity("_blocks.3"),  # a set of 3
               channel("_blocks.4", 2)])                          # another layer's unit

    The renderer runs every image to the deepest layer any part reads.
    """
    sized: list[tuple[Objective, int]] = []
    for part in parts:
        obj, n = part if isinstance(part, tuple) else (part, part.batch or 1)
        obj = as_objective(obj)
        if obj.batch is not None and obj.batch != n:
            raise ValueError(f"objective {obj.name} defines {obj.batch} images, not {n}")
        if int(n) < 1:
            raise ValueError(f"a stacked part needs at least one image, got {n} for {obj.name}")
        sized.append((obj, int(n)))
    if not sized:
        raise ValueError("stack() needs at least one objective")
    bounds = []
    start = 0
    for _, n in sized:
        bounds.append((start, start + n))
        start += n
    total = start

    def fn(T: Getter) -> torch.Tensor:
        values = []
        for (obj, n), (a, b) in zip(sized, bounds, strict=True):
            v = obj(_Rows(T, a, b))
            values.append(v.float().reshape(-1).expand(n) if v.numel() == 1 else v.float())
        return torch.cat(values)

    units: list[dict[str, Any]] = []
    for obj, n in sized:
        units += (
            list(obj.units)
            if obj.units is not None and len(obj.units) == n
            else (
                [dict(obj.units[0]) for _ in range(n)]
                if obj.units
                else [{"objective": obj.name} for _ in range(n)]
            )
        )
    layers = [name for obj, _ in sized for name in obj.layers]
    return Objective(fn, f"stack({len(sized)} objectives, {total} images)", layers, total, units)


class _LucentObjective(Objective):
    """A lucent objective: ``T`` is given lucent's names; value = minus its loss."""

    def __init__(self, obj: Any) -> None:
        self.lucent = obj
        super().__init__(self._call, f"lucent:{getattr(obj, 'description', '') or obj.name}")
        self.layers = ()  # discovered by the renderer (lucent objectives do not declare them)

    def _call(self, T: Getter) -> torch.Tensor:
        def lucent_T(name: str) -> torch.Tensor:
            if name == "input":
                return T(INPUT)
            if name == "labels":
                return T(LOGITS)
            return T(name)

        loss = self.lucent(lucent_T)
        return -loss.reshape(())


def as_objective(obj: Objective | str | Any) -> Objective:
    """An :class:`Objective` from an objective, a ``"layer:channel"`` string or a lucent
    objective (anything with lucent's ``Objective`` interface)."""
    if isinstance(obj, Objective):
        return obj
    if isinstance(obj, str):
        layer, sep, chan = obj.rpartition(":")
        if not sep or not layer or not chan.strip().lstrip("-").isdigit():
            raise ValueError(
                f"objective {obj!r}: use 'layer:channel' (e.g. '_blocks.5:7') or an Objective"
            )
        return channel(layer, int(chan))
    if hasattr(obj, "objective_func") and callable(obj):
        return _LucentObjective(obj)
    raise TypeError(
        f"cannot use {type(obj).__name__} as an objective: give an interp Objective, a "
        "'layer:channel' string or a lucent objective"
    )
