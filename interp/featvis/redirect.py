"""Redirected gradients through ReLU-like clamps, for feature visualization.

A ReLU that is off, or a ReLU6 that sits at 6, passes no gradient: the pixels that feed it stop
changing, and on ReLU6 networks (EfficientNet-Lite, MobileNetV2) the image freezes into
saturated speckle. lucid's fix, which interp follows: while the redirection is on, the gradient
also passes through an inactive or saturated unit **when it pushes the unit back into its
active range** (towards the objective); a gradient that would push it further out is still
stopped. The forward pass is unchanged, so the objective's value is the true one.

Two granularities (``mode``):

* ``"image"`` (lucid's rule): an image gets the redirected gradient at a clamp only when the
  true gradient of that clamp is zero over the whole image; elsewhere the true gradient.
* ``"unit"``: the redirected gradient everywhere (every clamped element that is pushed back).

Covered modules: ``nn.ReLU``, ``nn.ReLU6``, ``nn.Hardtanh``, ``nn.Hardsigmoid`` and
``nn.Hardswish`` (its inner ``relu6(x + 3)`` clamp). Activations called as functions in a
model's ``forward`` (``F.relu``) are not seen; the renderer reports how many modules it
redirected. The modules' ``forward`` is swapped for the time of the context and restored on
exit, also on error.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

__all__ = ["MODES", "check_mode", "redirected_clamp", "redirect_gradients", "RedirectSwitch"]

MODES = ("image", "unit")


def check_mode(mode: str) -> None:
    """``mode`` is one of :data:`MODES` (else a ``ValueError`` naming them)."""
    if mode not in MODES:
        raise ValueError(f"unknown redirect mode {mode!r}: use one of {', '.join(MODES)}")


class _RedirectedClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float, hi: float, mode: str) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi, ctx.mode = lo, hi, mode
        return x.clamp(min=lo, max=None if math.isinf(hi) else hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (x,) = ctx.saved_tensors
        lo, hi = ctx.lo, ctx.hi
        if ctx.mode == "image" and x.dim() >= 2:
            out = (x <= lo) if math.isinf(hi) else (x <= lo) | (x >= hi)
            true = grad.masked_fill(out, 0)
            alive = true.flatten(1).ne(0).any(dim=1)
            if x.device.type == "cpu" and bool(alive.all()):  # the usual case: no redirection
                return true, None, None, None
            redirected = _redirect(x, grad, lo, hi)
            shape = (-1,) + (1,) * (x.dim() - 1)
            return torch.where(alive.view(shape), true, redirected), None, None, None
        return _redirect(x, grad, lo, hi), None, None, None


def _redirect(x: torch.Tensor, grad: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """The gradient with only the pushes further out of range stopped: descent moves x by
    -grad, so below the range a positive gradient (lowering x) and above it a negative one
    (raising x) are stopped; the rest passes."""
    stopped = (x <= lo) & (grad > 0)
    if not math.isinf(hi):
        stopped |= (x >= hi) & (grad < 0)
    return grad.masked_fill(stopped, 0)


def redirected_clamp(
    x: torch.Tensor, lo: float = 0.0, hi: float = math.inf, mode: str = "image"
) -> torch.Tensor:
    """``x.clamp(lo, hi)`` whose gradient is redirected as the module docstring says."""
    check_mode(mode)
    return _RedirectedClamp.apply(x, float(lo), float(hi), mode)


class RedirectSwitch:
    """On/off switch shared by the swapped ``forward`` methods (the renderer turns the
    redirection off after its first steps)."""

    def __init__(self, mode: str = "image"):
        check_mode(mode)
        self.mode = mode
        self.on = True
        self.modules = 0


def _redirected_forward(module: nn.Module, switch: RedirectSwitch) -> Any:
    original = module.forward
    mode = switch.mode

    if isinstance(module, nn.ReLU6 | nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        lo, hi = float(module.min_val), float(module.max_val)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return redirected_clamp(x, lo, hi, mode) if switch.on else original(x)

    elif isinstance(module, nn.ReLU):

        def forward(x: torch.Tensor) -> torch.Tensor:
            return redirected_clamp(x, 0.0, math.inf, mode) if switch.on else original(x)

    elif isinstance(module, nn.Hardsigmoid):

        def forward(x: torch.Tensor) -> torch.Tensor:
            return redirected_clamp(x + 3, 0.0, 6.0, mode) / 6 if switch.on else original(x)

    elif isinstance(module, nn.Hardswish):

        def forward(x: torch.Tensor) -> torch.Tensor:
            if not switch.on:
                return original(x)
            return x * redirected_clamp(x + 3, 0.0, 6.0, mode) / 6

    else:
        return None
    return forward


@contextlib.contextmanager
def redirect_gradients(module: nn.Module, mode: str = "image") -> Iterator[RedirectSwitch]:
    """Swap the ``forward`` of every covered activation module in ``module`` (walked with
    ``.modules()``, each module once) for a redirected one while the context is open; yields
    the :class:`RedirectSwitch` (``switch.on = False`` restores the true gradients early,
    ``switch.modules`` counts the swapped modules)."""
    switch = RedirectSwitch(mode)
    swapped: list[tuple[nn.Module, bool, Any]] = []
    try:
        for sub in module.modules():
            forward = _redirected_forward(sub, switch)
            if forward is None:
                continue
            had = "forward" in sub.__dict__
            swapped.append((sub, had, sub.__dict__.get("forward")))
            sub.forward = forward  # type: ignore[method-assign]
        switch.modules = len(swapped)
        yield switch
    finally:
        for sub, had, previous in reversed(swapped):
            if had:
                sub.forward = previous  # type: ignore[method-assign]
            else:
                del sub.forward
