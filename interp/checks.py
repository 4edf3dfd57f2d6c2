"""Up-front checks shared by the API and the CLI: numeric ranges and finite values.

Every public function that takes a size, a count, a quantile or a rate checks it here before
any work starts, so a bad value is one clear :class:`~interp.errors.RangeError` naming the
argument, the range and what was given (the CLI names the flag instead). Non-finite weights,
outputs, objectives and losses are a :class:`~interp.errors.NonFiniteError`: interp never
prints a ``nan`` as a result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .errors import InterpError, NonFiniteError, RangeError

__all__ = [
    "check_int",
    "check_float",
    "check_fraction",
    "check_finite",
    "check_finite_module",
    "check_hookable",
]


def _describe(low: float | None, high: float | None, *, open_low: bool, open_high: bool) -> str:
    def show(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    if low is not None and high is not None:
        left, right = ("(" if open_low else "["), (")" if open_high else "]")
        return f"in {left}{show(low)}, {show(high)}{right}"
    if low is not None:
        return f"{'>' if open_low else '>='} {show(low)}"
    if high is not None:
        return f"{'<' if open_high else '<='} {show(high)}"
    return "a number"


def check_int(
    name: str, value: Any, *, low: int | None = 1, high: int | None = None, optional: bool = False
) -> int | None:
    """``value`` as an int in ``[low, high]``; ``None`` passes when ``optional``.

    Raises:
        RangeError: not an integer, or outside the range.
    """
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise RangeError(f"{name} must be an integer {_range(low, high)}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise RangeError(f"{name} must be an integer {_range(low, high)}, got {value}")
    return value


def _range(low: int | None, high: int | None) -> str:
    return _describe(low, high, open_low=False, open_high=False)


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    optional: bool = False,
) -> float | None:
    """``value`` as a finite float in the range (ends open or closed).

    Raises:
        RangeError: not a number, not finite, or outside the range.
    """
    if value is None and optional:
        return None
    where = _describe(low, high, open_low=open_low, open_high=open_high)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RangeError(f"{name} must be a number {where}, got {value!r}") from None
    bad = not math.isfinite(number)
    if low is not None:
        bad |= number <= low if open_low else number < low
    if high is not None:
        bad |= number >= high if open_high else number > high
    if bad:
        raise RangeError(f"{name} must be a number {where}, got {value}")
    return number


def check_fraction(name: str, value: Any, *, optional: bool = False) -> float | None:
    """A quantile or a threshold strictly between 0 and 1."""
    return check_float(name, value, low=0, high=1, open_low=True, open_high=True, optional=optional)


def check_finite(value: torch.Tensor | float, what: str, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` when ``value`` holds a NaN or an infinity.

    ``what`` names the quantity (``"the model's output for image 3"``); ``hint`` says what to
    do (default: check the model's weights and the inputs).
    """
    if isinstance(value, torch.Tensor):
        if value.numel() == 0 or bool(torch.isfinite(value).all()):
            return
        bad = int((~torch.isfinite(value)).sum())
        count = f" ({bad} of {value.numel()} values)"
    else:
        if math.isfinite(float(value)):
            return
        count = f" ({value})"
    raise NonFiniteError(
        f"{what} is not finite{count}: "
        + (
            hint
            or "the model's weights or the inputs hold NaN or inf; check them (a fresh "
            "copy of the checkpoint, a lower learning rate for training)"
        )
    )


def check_hookable(module: nn.Module, source: str) -> None:
    """Raise :class:`InterpError` for a TorchScript module, whose layers take no forward hooks
    (TorchScript's own error is a traceback-sized RuntimeError from deep inside a capture)."""
    if isinstance(module, torch.jit.ScriptModule):
        raise InterpError(
            f"{source} is a TorchScript module, whose layers cannot be hooked: `interp "
            "classify` runs it, but layers, activations and renders need the eager model; load "
            "its state dict with --weights PATH on its architecture, or the full pickled module "
            "with --trust-checkpoint"
        )


def check_finite_module(module: nn.Module, source: str) -> None:
    """Raise :class:`NonFiniteError` naming the parameters and buffers that hold NaN or inf."""
    bad: list[str] = []
    tensors: Iterable[tuple[str, torch.Tensor]] = [
        *module.named_parameters(),
        *module.named_buffers(),
    ]
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad.append(name)
    if bad:
        more = f" and {len(bad) - 4} more" if len(bad) > 4 else ""
        raise NonFiniteError(
            f"the weights of {source} hold NaN or inf in {len(bad)} tensor(s) "
            f"({', '.join(bad[:4])}{more}): the file is damaged or was saved from a diverged "
            "run; use another checkpoint (or retrain with a lower learning rate)"
        )
