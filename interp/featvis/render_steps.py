"""The steps of one feature-visualization run (:func:`~interp.featvis.render.render` strings them
together): the per-unit seeds, the getter objectives read activations through, the layers an
objective reads and its unit checks, the images' way to the model's input (:class:`ToInput`),
the optimization itself (:class:`Run`: forward, step, final values, BatchNorm folding), the
one-pixel alignment of the results, Adam, and fresh starts for images whose objective has no
gradient.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..activations import ActivationCapture, capture, resolve_layer
from ..errors import ChannelError
from ..models.base import Model
from .fold import fold_batchnorm
from .objectives import INPUT, LOGITS, Objective
from .param import make_param
from .transforms import RobustTransform

__all__ = [
    "ALIGN_SHIFTS",
    "RESTARTS",
    "Getter",
    "Run",
    "ToInput",
    "adam",
    "align_images",
    "check_units",
    "discover_layers",
    "forward_pass",
    "restart_dead_starts",
    "row_gradients",
    "unit_seed",
]


def unit_seed(seed: int, *key: Any) -> int:
    """A stable per-unit seed: the same unit gets the same start in any batch or process."""
    text = "|".join(map(str, (seed, *key)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**62 - 1)


#: fresh starts tried for an image whose objective has zero gradient at its start; fft and
#: pixel starts are drawn with 10x, 100x and 1000x the default contrast (a unit silent on
#: near-grey noise may answer to stronger input), maco starts with new phases
RESTARTS = 3


class Getter:
    """``T(layer)`` for objectives: activations by (user-given) name, the input, the logits."""

    def __init__(self, model: Model, names: dict[str, str]):
        self.model = model
        self.names = names
        self.acts: dict[str, torch.Tensor] = {}
        self.image: torch.Tensor | None = None
        self.output: torch.Tensor | None = None

    def __call__(self, name: str) -> torch.Tensor:
        return self.native(name).float()

    def native(self, name: str) -> torch.Tensor:
        """``T(name)`` in the dtype the forward pass computed (bf16 under autocast): for
        objectives that select a few values and cast only those."""
        if name == INPUT:
            assert self.image is not None
            return self.image
        if name == LOGITS:
            if self.output is None:
                raise RuntimeError("the objective reads the logits but they were not computed")
            return self.output
        return self.acts[self.names.get(name, name)]

    def class_index(self, name: str) -> int:
        return self.model.class_index(name)


def discover_layers(model: Model, objective: Objective, x: torch.Tensor) -> list[str]:
    """Layers a lucent objective reads: call it once with a recording getter."""
    seen: list[str] = []
    getter = Getter(model, {})
    getter.image = torch.zeros_like(x)

    def record(name: str) -> torch.Tensor:
        if name in (INPUT, LOGITS):
            if name == LOGITS and getter.output is None:
                with torch.no_grad():
                    getter.output = model.module(x)
            seen.append(name)
            return getter(name)
        dotted = resolve_layer(model, name)
        seen.append(name)
        if dotted not in getter.acts:
            getter.acts[dotted] = capture(model, x, [dotted])[dotted]
        getter.names[name] = dotted
        return getter(name)

    record.class_index = getter.class_index  # type: ignore[attr-defined]
    with torch.no_grad():
        objective(record)
    return list(dict.fromkeys(seen))


def check_units(objective: Objective, getter: Getter) -> None:
    """Channel and class indices in range, with a message naming the valid range."""
    for unit in objective.units or []:
        if "channel" in unit:
            name = unit["layer"]
            acts = getter.acts.get(getter.names.get(name, name))
            if acts is None or acts.dim() < 2:
                continue
            n = acts.shape[1]
            if not 0 <= unit["channel"] < n:
                raise ChannelError(
                    f"channel {unit['channel']} is out of range for layer {name!r}, which has "
                    f"{n} channels (0..{n - 1})"
                )
        if "class" in unit and isinstance(unit["class"], int) and getter.output is not None:
            n = getter.output.shape[-1]
            if not 0 <= unit["class"] < n:
                raise ChannelError(f"class {unit['class']} is out of range (0..{n - 1})")


def forward_pass(
    model: Model, cap: ActivationCapture | None, x: torch.Tensor, need_logits: bool
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    if cap is None:  # nothing hooked: only the logits (or only the input) are read
        return {}, model.module(x) if need_logits else None
    acts = cap.run(x)
    return acts, cap.output if need_logits else None


class ToInput:
    """Images to the model's input: the random transforms (per image, when training), the
    optional upsampling, the preprocessing and the memory format."""

    def __init__(
        self,
        model: Model,
        transform: RobustTransform,
        generators: list[torch.Generator],
        upsample: int | None,
        channels_last: bool,
    ) -> None:
        self.model, self.transform, self.generators = model, transform, generators
        self.upsample, self.channels_last = upsample, channels_last

    def __call__(self, img: torch.Tensor, train: bool) -> torch.Tensor:
        x = self.transform(img, self.generators) if train else img
        if self.upsample:
            size = (self.upsample, self.upsample)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = self.model.normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


@dataclass
class Run:
    """One optimization's objective, network, hooks and images: what its steps share."""

    obj: Objective
    model: Model
    cap: ActivationCapture | None
    need_logits: bool
    getter: Getter
    image_fn: Callable[[], torch.Tensor]
    to_input: Callable[[torch.Tensor, bool], torch.Tensor]

    def forward(self, x: torch.Tensor) -> None:
        """Run the (truncated) network on model input ``x``; the getter holds the result."""
        self.getter.acts, self.getter.output = forward_pass(
            self.model, self.cap, x, self.need_logits
        )

    def folding(self, probe: torch.Tensor, hooked: list[str]) -> Any:
        """:func:`fold_batchnorm` of the network, checked on ``probe`` (the hooked layers'
        activations and the logits must agree), the hooked modules kept unfolded."""

        def compared() -> list[torch.Tensor]:
            acts, out = forward_pass(self.model, self.cap, probe, self.need_logits)
            return [
                *(v for v in acts.values() if isinstance(v, torch.Tensor)),
                *([out] if isinstance(out, torch.Tensor) else []),
            ]

        module = self.model.module
        return fold_batchnorm(module, compared, keep=[module.get_submodule(n) for n in hooked])

    def step(self, optimizer: torch.optim.Optimizer, autocast: Any) -> torch.Tensor:
        """One optimization step on transformed images; returns the batch's mean value."""
        optimizer.zero_grad(set_to_none=True)
        img = self.image_fn()
        self.getter.image = img
        with autocast:
            self.forward(self.to_input(img, True))
        values = self.obj(self.getter)
        (-values.sum()).backward()
        optimizer.step()
        return values.detach().float().mean()

    def value_of(self, images: torch.Tensor) -> torch.Tensor:
        """Each image's value, untransformed (no gradient)."""
        self.getter.image = images
        self.forward(self.to_input(images, False))
        return self.obj(self.getter).detach().float()

    def final(self, align: bool) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """The images as optimized, their values and (with ``align``) each image at its best
        one-pixel translation (:func:`align_images`)."""
        with torch.no_grad():
            final = self.image_fn().detach()
            values = self.value_of(final)
            shifts = [(0, 0)] * final.shape[0]
            if align and values.dim() == 1 and len(values) == final.shape[0]:
                final, values, shifts = align_images(final, values, self.value_of)
        return final, values, shifts


#: the one-pixel translations (rows, columns) that :func:`align_images` tries besides none
ALIGN_SHIFTS = ((0, 1), (1, 0), (1, 1))


def align_images(
    images: torch.Tensor,
    values: torch.Tensor,
    value_of: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Each image at the one-pixel translation (circular) where its value is highest.

    ``values`` are the images' values as they are; ``value_of(batch)`` evaluates a batch. An
    image moves only when a translation is strictly better; when any moved, the values are
    evaluated once more on the batch as returned, so that an objective that couples the
    images of a batch (a diversity term) reports the values of what is returned.
    """
    best, best_values = images, values
    shifts = [(0, 0)] * images.shape[0]
    for shift in ALIGN_SHIFTS:
        moved = torch.roll(images, shift, dims=(2, 3))
        moved_values = value_of(moved)
        better = moved_values > best_values
        if bool(better.any()):
            best = torch.where(better[:, None, None, None].to(best.device), moved, best)
            best_values = torch.where(better, moved_values, best_values)
            shifts = [shift if b else s for s, b in zip(shifts, better.tolist(), strict=True)]
    if any(s != (0, 0) for s in shifts):
        best_values = value_of(best)
    return best, best_values, shifts


def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam, its fused kernel where every parameter is a float tensor on the CPU or a CUDA
    GPU (one pass over the parameters instead of about ten elementwise ops; the same update
    to within float rounding)."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    if fused:
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # a build without the fused kernel
            pass
    return torch.optim.Adam(params, lr=lr)


def row_gradients(params: list[torch.Tensor], batch: int) -> torch.Tensor | None:
    """Per image, the summed absolute gradient of its parameters (``None`` when the
    parametrization is not one tensor row per image)."""
    total = None
    for p in params:
        if p.grad is None:
            continue
        if p.dim() == 0 or p.shape[0] != batch:
            return None
        row = p.grad.detach().abs().flatten(1).sum(dim=1).float()
        total = row if total is None else total + row
    return total


def restart_dead_starts(
    run: Run,
    params: list[torch.Tensor],
    param: Any,
    seeds: list[int],
    size: int,
    device: torch.device,
) -> list[int]:
    """Find images whose objective has zero gradient at their start and draw fresh starts
    for them (up to :data:`RESTARTS`); returns, per image, the restarts used (``-1``: dead
    from every start). Leaves no gradient behind; empty list when per-image gradients cannot
    be told apart (a custom or whole-batch objective)."""
    batch = params[0].shape[0] if params and params[0].dim() > 0 else 0
    used: list[int] = []
    for attempt in range(RESTARTS + 1):
        for p in params:
            p.grad = None
        img = run.image_fn()
        run.getter.image = img
        run.forward(run.to_input(img, False))
        values = run.obj(run.getter)
        if values.dim() == 0 or values.shape[0] != batch or not values.requires_grad:
            used = []
            break
        (-values.sum()).backward()
        grads = row_gradients(params, batch)
        if grads is None:
            used = []
            break
        alive = (grads > 0) & torch.isfinite(grads)
        if attempt == 0:
            used = [0 if bool(a) else -1 for a in alive]
        else:
            for i in range(batch):
                if used[i] < 0 and bool(alive[i]):
                    used[i] = attempt
        dead = [i for i in range(batch) if used[i] < 0]
        if not dead or attempt == RESTARTS or not isinstance(param, str):
            break
        contrast = 1.0 if param == "maco" else 10.0 ** (attempt + 1)
        fresh = [unit_seed(seeds[i], "restart", attempt + 1) for i in dead]
        channels = run.model.preprocessing.channels
        new_params, _ = make_param(param, len(dead), channels, size, fresh, device)
        with torch.no_grad():
            for p, q in zip(params, new_params, strict=True):
                p[dead] = q.detach() * contrast
    for p in params:
        p.grad = None
    return used
