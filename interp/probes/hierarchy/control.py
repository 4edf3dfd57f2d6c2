"""The random-init control: the model's architecture with its own initialization (fixed
seeds), BatchNorm statistics re-estimated on the probe images so that a control is not
handicapped by statistics that belong to other weights."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from ...activations import ActivationCapture
from ...data.concepts import ConceptData
from ...models.base import Model, reestimate_batchnorm
from ...models.registry import build_random, list_models, load_model

__all__ = ["random_control", "untouched_batchnorm", "with_settled_batchnorm"]


def _rebuild(model: Model, seed: int) -> tuple[Model, str]:
    """The model's architecture with its own initialization, seeded; or reset_parameters."""
    spec = None
    kwargs: dict[str, Any] = {}
    if model.info.get("arch"):
        spec, kwargs = str(model.info["arch"]), dict(model.info.get("arch_kwargs") or {})
    elif model.name in list_models():
        spec = model.name
    if spec is not None:
        try:
            fresh = load_model(
                spec, device="cpu", weights="none", seed=seed, offline=True, **kwargs
            )
            same = {k: v.shape for k, v in fresh.module.state_dict().items()} == {
                k: v.shape for k, v in model.module.state_dict().items()
            }
            if same:
                fresh.preprocessing = model.preprocessing
                fresh.class_names = model.class_names
                return fresh, f"{spec} rebuilt with its own initialization, seed {seed}"
        except Exception:  # noqa: BLE001 - fall back to resetting a copy
            pass
    module = copy.deepcopy(model.module).cpu()

    def reset() -> nn.Module:
        for sub in module.modules():
            if hasattr(sub, "reset_parameters"):
                sub.reset_parameters()  # type: ignore[operator]
        return module

    build_random(reset, seed)
    control = Model(
        module=module,
        name=model.name,
        preprocessing=model.preprocessing,
        class_names=model.class_names,
        weights_source=f"random init (reset_parameters, seed {seed})",
    )
    return control, f"a copy of the model with PyTorch's default initialization, seed {seed}"


class _Truncated(nn.Module):
    """Runs ``module`` only up to ``layer`` (modes untouched): BatchNorm statistics of a
    control that is probed only in its first layers need no pass through the rest."""

    def __init__(self, module: nn.Module, layer: str) -> None:
        super().__init__()
        self.inner = module
        self.layer = layer

    def forward(self, x: torch.Tensor) -> None:
        with ActivationCapture(self.inner, [self.layer], eval_mode=False) as cap:
            cap.run(x)


def _reestimate_batchnorm(
    model: Model,
    data: ConceptData,
    images: int,
    batch_size: int,
    progress: bool,
    upto: str | None = None,
) -> int:
    """Recompute BatchNorm running statistics on the first ``images`` of ``data`` (through
    the layers up to ``upto`` only, when given); returns the number of images used (0
    without BatchNorm)."""
    n = min(images, len(data))

    def batches():  # noqa: ANN202
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            x = torch.stack([data.item(i, masks=False).image for i in range(start, stop)])
            yield model.normalize(x).to(model.device)

    module = model.module if upto is None else _Truncated(model.module, upto)
    return n if reestimate_batchnorm(module, batches()) else 0


def random_control(
    model: Model,
    seed: int = 0,
    data: ConceptData | None = None,
    *,
    bn_images: int = 512,
    batch_size: int = 32,
    progress: bool = False,
    upto: str | None = None,
) -> tuple[Model, list[str]]:
    """The random-init control of ``model``: same architecture, fixed ``seed``.

    With ``data``, BatchNorm statistics are re-estimated on its first ``bn_images`` images
    (in the layers up to ``upto`` only, when given: a control probed in its first layers).
    Returns the control (on the model's device, eval mode) and notes saying how it was made.
    """
    control, how = _rebuild(model, seed)
    control.module.to(model.device).eval()
    notes = [how]
    if data is not None:
        n = _reestimate_batchnorm(control, data, bn_images, batch_size, progress, upto)
        if n:
            notes.append(f"BatchNorm statistics re-estimated on {n} probe images")
    return control, notes


def untouched_batchnorm(model: Model) -> bool:
    """Whether the model's BatchNorm layers never saw a batch: every one that keeps running
    statistics still holds the defaults (mean exactly 0, variance exactly 1, no batch
    counted). A network at its initialization, whose statistics belong to no input. The
    statistics are checked, not only the counter: weights converted from another framework
    (the embedded EfficientNet-Lites) carry real statistics with ``num_batches_tracked`` 0."""
    bns = [
        m
        for m in model.module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    ]
    if not bns:
        return False
    for b in bns:
        if b.num_batches_tracked is not None and int(b.num_batches_tracked) != 0:
            return False
        if bool(b.running_mean.any()) or not bool((b.running_var == 1).all()):
            return False
    return True


def with_settled_batchnorm(
    model: Model,
    data: ConceptData,
    *,
    bn_images: int = 512,
    batch_size: int = 32,
    upto: str | None = None,
) -> tuple[Model, list[str]]:
    """``model`` probed as its controls are: when its BatchNorm never saw a batch (an
    initialization, e.g. a training's step-0 checkpoint), a copy with the statistics
    re-estimated on the probe images exactly as :func:`random_control` does, so that the
    network and its controls differ in their weights only; otherwise the model itself."""
    if not untouched_batchnorm(model):
        return model, ["the model as loaded"]
    twin = dataclasses.replace(model, module=copy.deepcopy(model.module), info=dict(model.info))
    twin.module.eval()
    n = _reestimate_batchnorm(twin, data, bn_images, batch_size, False, upto)
    return twin, [
        "the model as loaded, its BatchNorm never trained: statistics re-estimated on "
        f"{n} probe images as its controls' are"
    ]
