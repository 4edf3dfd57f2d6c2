"""Eval-mode BatchNorm folded into the convolution that feeds it, for the time of a render.

With the weights frozen and BatchNorm in eval mode, ``bn(conv(x))`` is one convolution with
scaled weights and a shifted bias. Folding it removes a full pass over every activation in the
forward and another in the backward (on EfficientNet-Lite0 BatchNorm was 28 % of a render's
CPU time). The pairs are found by running the network once and matching each BatchNorm's input
tensor to a convolution's output; the folded network's output at the hooked layers is then
compared with the unfolded one on the same input, and nothing is folded unless they agree, so
a convolution whose output also feeds something else (a residual, a hook) is never changed
silently. The parameters are swapped back on exit, also on error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["fold_batchnorm"]


def _pairs(
    module: nn.Module, run: Callable[[], Sequence[torch.Tensor]], keep: set[int]
) -> tuple[list[tuple[Any, Any]], list[torch.Tensor]]:
    """The (conv, BatchNorm) pairs of one hooked forward, and what that forward returned
    (float32 copies: the reference the folded network must agree with)."""
    # the output tensors themselves are kept (not only their addresses), so a freed output's
    # memory reused by a later tensor (densenet's concatenations) cannot be taken for it
    by_output: dict[int, tuple[torch.Tensor, nn.Conv2d]] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    handles = []

    def on_conv(m: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            by_output[output.data_ptr()] = (output, m)  # type: ignore[assignment]

    def on_bn(m: nn.Module, inputs: Any, _output: Any) -> None:
        if not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        stored, conv = by_output.pop(inputs[0].data_ptr(), (None, None))
        if (
            stored is inputs[0]
            and conv.out_channels == m.num_features  # type: ignore[union-attr]
            and id(conv) not in keep
            and id(m) not in keep
        ):
            pairs.append((conv, m))  # type: ignore[arg-type]

    for m in module.modules():  # each module once, however often it is registered
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, nn.BatchNorm2d):
            handles.append(m.register_forward_hook(on_bn))
    try:
        with torch.no_grad():
            outputs = [t.detach().float().clone() for t in run()]
    finally:
        for h in handles:
            h.remove()
    # a module used twice (shared weights) cannot be folded for one of its uses only
    convs = [id(c) for c, _ in pairs]
    bns = [id(b) for _, b in pairs]
    return [
        (c, b)
        for c, b in pairs
        if convs.count(id(c)) == 1
        and bns.count(id(b)) == 1
        and not b.training
        and b.track_running_stats
        and b.running_var is not None
    ], outputs


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _after_norm(bn: nn.BatchNorm2d) -> Callable[[torch.Tensor], torch.Tensor]:
    """What a BatchNorm module does after normalizing, once the normalization is folded away:
    nothing for a plain BatchNorm; timm's ``BatchNormAct2d`` goes on with its ``drop`` and
    ``act`` children (any other subclass is folded as a plain one, and the agreement check
    undoes the fold when it does more)."""
    drop, act = getattr(bn, "drop", None), getattr(bn, "act", None)
    if isinstance(drop, nn.Module) and isinstance(act, nn.Module):
        return lambda x: act(drop(x))
    return _identity


@contextlib.contextmanager
def fold_batchnorm(
    module: nn.Module,
    run: Callable[[], Sequence[torch.Tensor]],
    *,
    keep: Sequence[nn.Module] = (),
    rtol: float = 1e-3,
) -> Iterator[int]:
    """Fold every eval-mode ``BatchNorm2d`` into the ``Conv2d`` whose output it reads, while
    the context is open; yields how many were folded (0 when the check failed).

    Args:
        module: the network (its parameters should be frozen: folding is for rendering).
        run: runs the forward pass that matters (e.g. the truncated pass to the hooked layers)
            and returns the tensors to compare, folded against unfolded.
        keep: modules whose own output is read (hooked layers): never folded away.
        rtol: agreement required, relative to each compared tensor's largest magnitude.
    """
    keep_ids = {id(m) for m in keep}
    pairs, want = _pairs(module, run, keep_ids)  # one forward finds the pairs and the reference
    swapped: list[tuple[nn.Conv2d, Any, Any, nn.BatchNorm2d]] = []

    def restore() -> None:
        for conv, weight, bias, bn in reversed(swapped):
            conv._parameters["weight"] = weight
            conv._parameters["bias"] = bias
            bn.__dict__.pop("forward", None)
        swapped.clear()

    try:
        if pairs:
            with torch.no_grad():
                for conv, bn in pairs:
                    scale = bn.weight if bn.affine else torch.ones_like(bn.running_var)
                    scale = scale / torch.sqrt(bn.running_var + bn.eps)
                    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
                    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
                    weight = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
                    new_bias = (bias - bn.running_mean) * scale + shift
                    swapped.append(
                        (conv, conv._parameters["weight"], conv._parameters.get("bias"), bn)
                    )
                    conv._parameters["weight"] = nn.Parameter(
                        weight.detach().contiguous(memory_format=_format(conv.weight)),
                        requires_grad=False,
                    )
                    conv._parameters["bias"] = nn.Parameter(new_bias.detach(), requires_grad=False)
                    bn.forward = _after_norm(bn)  # type: ignore[method-assign]
                got = [t.detach().float() for t in run()]
            ok = len(got) == len(want) and all(
                g.shape == w.shape
                and float((g - w).abs().max()) <= rtol * max(float(w.abs().max()), 1e-6)
                for g, w in zip(got, want, strict=False)
            )
            if not ok:
                restore()
        yield len(swapped)
    finally:
        restore()


def _format(weight: torch.Tensor) -> torch.memory_format:
    if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last):
        if not weight.is_contiguous():
            return torch.channels_last
    return torch.contiguous_format
