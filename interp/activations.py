"""Activation capture: hooks on the requested layers only, and a forward pass that stops
right after the last of them has run.

>>> acts = capture(model, x, ["layer1.0.conv1"])          # no layer2..fc computed
>>> with ActivationCapture(model, ["layer2", "layer3"]) as cap:
...     acts = cap.run(x)                                  # reusable inside a loop

Hooks live only inside the call (or the ``with`` block): they are removed, and the module's
train/eval mode and ``requires_grad`` flags restored, in ``finally``, also when the forward
raises. Layer names are dotted module names (``layer1.0.conv1``); lucent's underscore form
(``layer1_0_conv1``) is accepted too.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from .checks import check_hookable
from .errors import UnknownLayerError
from .models.base import Model, module_device

__all__ = [
    "ActivationCapture",
    "capture",
    "layer_names",
    "resolve_layer",
    "resolve_layers",
    "get_module",
    "preserved_state",
]

ModelLike = Model | nn.Module


def _module(model: ModelLike) -> nn.Module:
    return model.module if isinstance(model, Model) else model


def layer_names(model: ModelLike) -> list[str]:
    """Dotted names of every submodule (the root module itself excluded), in definition order."""
    return [name for name, _ in _module(model).named_modules() if name]


def resolve_layer(model: ModelLike, name: str) -> str:
    """Canonical dotted name for ``name`` (dotted or lucent's underscore form).

    Raises:
        UnknownLayerError: with the nearest layer names as suggestions.
    """
    module = _module(model)
    names = layer_names(module)
    if name in names:
        return name
    underscored = {n.replace(".", "_"): n for n in names}
    if name in underscored:
        return underscored[name]
    pool = names + list(underscored)
    close = difflib.get_close_matches(name, pool, n=5, cutoff=0.6)
    close = list(dict.fromkeys(underscored.get(c, c) for c in close))
    if not close:  # fall back to names sharing a component with the query
        parts = [p for p in name.replace("_", ".").split(".") if p]
        close = [n for n in names if any(p in n.split(".") for p in parts)][:5]
    hint = f" Nearest names: {', '.join(close)}." if close else ""
    raise UnknownLayerError(
        f"no layer {name!r} in {type(module).__name__}.{hint} "
        "`interp layers MODEL` lists every layer."
    )


def resolve_layers(model: ModelLike, names: str | Iterable[str]) -> list[str]:
    """:func:`resolve_layer` for several names (a single string is one name); keeps order."""
    if isinstance(names, str):
        names = [names]
    return list(dict.fromkeys(resolve_layer(model, n) for n in names))


def get_module(model: ModelLike, name: str) -> nn.Module:
    """The submodule called ``name`` (dotted or underscore form)."""
    return _module(model).get_submodule(resolve_layer(model, name))


class _StopForward(Exception):
    """Raised from a hook once every requested layer has produced its output."""


class preserved_state:
    """Context manager restoring every submodule's train/eval mode and every parameter's
    ``requires_grad`` on exit, also when the body raises.

    Args:
        module: the model.
        eval_mode: put the model in eval mode for the body.
        freeze: set ``requires_grad=False`` on all parameters for the body (gradients then
            reach only the input, which is what feature visualization and attribution need).
    """

    def __init__(self, module: ModelLike, *, eval_mode: bool = True, freeze: bool = False):
        self.module = _module(module)
        self.eval_mode = eval_mode
        self.freeze = freeze

    def __enter__(self) -> nn.Module:
        self._modes = [(m, m.training) for m in self.module.modules()]
        self._grads = [(p, p.requires_grad) for p in self.module.parameters()]
        if self.eval_mode:
            self.module.eval()
        if self.freeze:
            for p, _ in self._grads:
                p.requires_grad_(False)
        return self.module

    def __exit__(self, *exc: object) -> None:
        for m, training in self._modes:
            m.training = training
        for p, flag in self._grads:
            p.requires_grad_(flag)


class ActivationCapture:
    """Context manager that owns hooks on ``layers`` and runs truncated forward passes.

    Args:
        model: a :class:`Model` or ``nn.Module``.
        layers: layer names (dotted or underscore form).
        stop: stop the forward pass once every requested layer has run (default ``True``).
        eval_mode: run in eval mode (restored on exit).
        freeze: ``requires_grad=False`` on parameters inside the block (restored on exit).
        detach: store detached tensors (default: detach unless grad mode is on).

    Outputs are cloned unless the forward stops right after them, so a later in-place op
    (``ReLU(inplace=True)``) cannot change what was captured. A module that runs several times
    is captured on its first call.
    """

    def __init__(
        self,
        model: ModelLike,
        layers: str | Sequence[str],
        *,
        stop: bool = True,
        eval_mode: bool = True,
        freeze: bool = False,
        detach: bool | None = None,
    ) -> None:
        self.module = _module(model)
        check_hookable(self.module, model.name if isinstance(model, Model) else "the model")
        self.layers = resolve_layers(model, layers)
        self.stop = stop
        self.detach = detach
        self._state = preserved_state(self.module, eval_mode=eval_mode, freeze=freeze)
        self._handles: list[RemovableHandle] = []
        self._acts: dict[str, Any] = {}
        self._active = False
        #: the model's output of the last :meth:`run` when the forward pass was not stopped
        self.output: Any = None

    def _hook(self, name: str):  # noqa: ANN202
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if name in self._acts:
                return
            last = self.stop and len(self._acts) == len(self.layers) - 1
            detach = (not torch.is_grad_enabled()) if self.detach is None else self.detach
            self._acts[name] = _store(output, clone=not last, detach=detach)
            if last:
                raise _StopForward

        return hook

    def __enter__(self) -> ActivationCapture:
        self._state.__enter__()
        try:
            for name in self.layers:
                sub = self.module.get_submodule(name)
                self._handles.append(sub.register_forward_hook(self._hook(name)))
        except BaseException:
            self._remove()
            self._state.__exit__(None, None, None)
            raise
        self._active = True
        return self

    def _remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __exit__(self, *exc: object) -> None:
        self._active = False
        try:
            self._remove()
        finally:
            self._state.__exit__(*exc)
        # never swallow the body's exception: return None

    def run(self, *inputs: Any, **kwargs: Any) -> dict[str, Any]:
        """Run the (truncated) forward pass; returns ``{layer: output}`` in request order."""
        if not self._active:
            raise RuntimeError("ActivationCapture.run() must be called inside its `with` block")
        self._acts = {}
        self.output = None
        try:
            self.output = self.module(*inputs, **kwargs)
        except _StopForward:
            pass
        missing = [n for n in self.layers if n not in self._acts]
        if missing:
            raise RuntimeError(
                f"layer(s) {', '.join(missing)} did not run during the forward pass "
                "(a branch unused in eval mode, or a module called outside forward?)"
            )
        acts, self._acts = self._acts, {}
        return {n: acts[n] for n in self.layers}


def _store(output: Any, *, clone: bool, detach: bool) -> Any:
    if isinstance(output, torch.Tensor):
        out = output.detach() if detach else output
        return out.clone() if clone else out
    if isinstance(output, tuple | list):
        return type(output)(_store(o, clone=clone, detach=detach) for o in output)
    return output


def capture(
    model: ModelLike,
    x: torch.Tensor,
    layers: str | Sequence[str],
    *,
    grad: bool = False,
    eval_mode: bool = True,
    freeze: bool | None = None,
) -> dict[str, Any]:
    """Activations of ``layers`` for the (already normalized) input batch ``x``.

    Only the requested layers are hooked, the forward pass stops right after the last of them
    has run, and hooks and model state are restored afterwards, also on error.

    Args:
        model: a :class:`Model` or ``nn.Module``.
        x: model input ``(N, C, H, W)``; moved to the model's device.
        layers: one name or several (dotted or lucent underscore form).
        grad: keep the autograd graph (for gradients w.r.t. ``x``); default ``no_grad``.
        eval_mode: run in eval mode (the caller's mode is restored afterwards).
        freeze: set parameters' ``requires_grad=False`` during the pass (default: when ``grad``).

    Returns:
        ``{layer_name: tensor}`` (dotted names, request order).
    """
    module = _module(model)
    device = module_device(module)
    if x.device != device:
        x = x.to(device)
    freeze = grad if freeze is None else freeze
    with torch.set_grad_enabled(grad):
        with ActivationCapture(module, layers, eval_mode=eval_mode, freeze=freeze) as cap:
            return cap.run(x)
