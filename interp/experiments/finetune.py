"""Fine-tuning a network seen as a chain of stages, with its first ``k`` stages frozen.

The transfer experiment asks how a network's layers transfer to a new task: copy or keep the
first ``k`` stages, freeze them, train the rest. :class:`StageNet` is that view of a network:
``stages`` applied in order, then ``head`` (global average pooling and a linear classifier).
It shares its modules with the network it views, so training one trains the other.

* :func:`simplecnn_stages`: the five conv blocks of a :class:`~interp.models.small.SimpleCNN`
  (conv, BatchNorm, ReLU, pooling) and its classifier;
* :func:`lite_stages`: an EfficientNet-Lite's stem, each of its MBConv blocks, its 1x1 head
  convolution, then a new linear classifier for the target's classes;
* any list of modules (tests build planted networks this way).

:func:`finetune` trains a :class:`StageNet` with its first ``frozen`` stages frozen
(``requires_grad`` off, BatchNorm in eval mode with its stored statistics); their output is
computed once, as they would compute it at every step (no augmentation), so a deep frozen
prefix costs one forward pass. :func:`correct` scores it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.base import reestimate_batchnorm
from ..models.small import SimpleCNN
from ..train import fit

__all__ = [
    "StageNet",
    "batched",
    "correct",
    "finetune",
    "freeze",
    "lite_stages",
    "reestimate_bn",
    "set_train_mode",
    "simplecnn_stages",
]


class StageNet(nn.Module):
    """``head(stages[-1](...stages[0](x)))``; ``forward(h, start)`` runs from stage ``start``.

    Args:
        stages: the modules applied in order (shared, not copied).
        head: maps the last stage's output to logits.
        names: a name per stage (figures and findings), default ``stage0..``.
    """

    def __init__(
        self, stages: Sequence[nn.Module], head: nn.Module, names: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.head = head
        self.names = list(names) if names is not None else [f"stage{i}" for i in range(len(stages))]
        if len(self.names) != len(self.stages):
            raise ValueError(f"{len(self.names)} names for {len(self.stages)} stages")

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        for stage in self.stages[start:]:
            x = stage(x)
        return self.head(x)

    def prefix(self, x: torch.Tensor, k: int, batch_size: int = 256) -> torch.Tensor:
        """The output of the first ``k`` stages on ``x`` (as they are: mode untouched)."""
        if k == 0:
            return x
        run = nn.Sequential(*self.stages[:k])
        return batched(run, x, batch_size)


def _classifier(width: int, classes: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(width, classes))


def simplecnn_stages(model: SimpleCNN) -> StageNet:
    """``model``'s five conv blocks (each conv, BatchNorm, ReLU and pooling if any) and its
    classifier (pooling, dropout, fc) as a :class:`StageNet` sharing its modules."""
    feats = model.features._modules
    keys = list(feats)
    stages, names, current = [], [], []
    for key in keys:
        current.append(feats[key])
        nxt = keys.index(key) + 1
        ends = key.startswith("relu") and (nxt == len(keys) or not keys[nxt].startswith("pool"))
        if ends or key.startswith("pool"):
            stages.append(nn.Sequential(*current))
            names.append(f"conv{len(stages)}")
            current = []
    head = nn.Sequential(model.pool, nn.Flatten(), model.dropout, model.fc)
    return StageNet(stages, head, names)


def lite_stages(module: nn.Module, classes: int, *, seed: int = 0) -> StageNet:
    """A copy of an EfficientNet-Lite ``module`` as a :class:`StageNet`: stage 0 its stem,
    then one stage per MBConv block, then its 1x1 head convolution; the head is its pooling,
    dropout and a new ``Linear(1280, classes)`` initialized under ``seed``. The network's
    own modules are deep-copied: ``module`` is left as it was."""
    for attr in ("_conv_stem", "_bn0", "_act_stem", "_blocks", "_conv_head", "_bn1", "_act_head"):
        if not hasattr(module, attr):
            raise TypeError(f"lite_stages needs an EfficientNet-Lite module (no {attr})")
    m = copy.deepcopy(module)
    stages = [nn.Sequential(m._conv_stem, m._bn0, m._act_stem), *m._blocks]
    stages.append(nn.Sequential(m._conv_head, m._bn1, m._act_head))
    names = ["stem", *(f"_blocks.{i}" for i in range(len(m._blocks))), "head"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        head = _classifier(m._conv_head.out_channels, classes, m._dropout.p)
    return StageNet(stages, head, names)


# --------------------------------------------------------------------------- training


def freeze(net: StageNet, frozen: int) -> StageNet:
    """``requires_grad`` off for the first ``frozen`` stages, on for every other parameter."""
    if not 0 <= frozen <= len(net.stages):
        raise ValueError(f"frozen must be in 0..{len(net.stages)}, got {frozen}")
    off = {id(p) for stage in net.stages[:frozen] for p in stage.parameters()}
    for p in net.parameters():
        p.requires_grad_(id(p) not in off)
    return net


def set_train_mode(net: StageNet, frozen: int) -> StageNet:
    """Train mode, except the first ``frozen`` stages (BatchNorm uses stored statistics)."""
    net.train()
    for stage in net.stages[:frozen]:
        stage.eval()
    return net


def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bs: int) -> torch.Tensor:
    """``fn`` over ``x`` in batches of ``bs``, without gradients, concatenated."""
    with torch.no_grad():
        return torch.cat([fn(x[i : i + bs]) for i in range(0, len(x), bs)])


def finetune(
    net: StageNet,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    frozen: int = 0,
    epochs: int | None = None,
    steps: int | None = None,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    cache_frozen: bool = True,
    bn_momentum: float | None = None,
    channels_last: bool = True,
    on_step: Callable[[], Any] | None = None,
) -> StageNet:
    """Train ``net`` on inputs ``x`` and labels ``y`` in place; returns it, in eval mode.

    Adam with a linear warm-up over the first 10% of the steps and cosine decay,
    cross-entropy, mini-batches drawn by a generator seeded with ``seed`` (the same order for
    every network trained with that seed). The budget is ``epochs`` passes over ``x``, or
    exactly ``steps`` optimizer steps (epochs as many as they take: a fixed budget whatever
    the data size). The first ``frozen`` stages are frozen; with ``cache_frozen`` their
    output is computed once and only the rest runs per step. ``bn_momentum`` sets the
    momentum of the trained stages' BatchNorm layers (kept afterwards), e.g. 0.1 for a
    network built with TensorFlow's 0.01, whose running statistics would otherwise lag far
    behind a short fine-tuning. With ``channels_last`` the network trains in that memory
    format (measured on one CPU core, a training step at 32 px: EfficientNet-Lite0, batch 32,
    209 -> 93-105 ms; SimpleCNN at width 0.5, batch 64, 40-47 -> 30-31 ms) and is given back
    in the standard one.
    """
    if (epochs is None) == (steps is None):
        raise ValueError("give epochs or steps")
    if channels_last:
        net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x
    freeze(net, frozen)
    if bn_momentum is not None:
        for stage in [*net.stages[frozen:], net.head]:
            for m in stage.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.momentum = bn_momentum
    params = [p for p in net.parameters() if p.requires_grad]
    start = frozen if cache_frozen else 0
    inputs = x
    if start:
        for stage in net.stages[:start]:
            stage.eval()
        inputs = net.prefix(x, start)
    per_epoch = math.ceil(len(y) / batch_size)
    total = steps if steps is not None else epochs * per_epoch  # type: ignore[operator]
    warm = max(1, total // 10)
    fit(
        net,
        (inputs, y),
        epochs=math.ceil(total / per_epoch),
        max_steps=total,
        batch_size=batch_size,
        lr=lr,
        params=params,
        schedule=lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * s / total)),
        generator=torch.Generator().manual_seed(int(seed)),
        forward=lambda h: net(h, start),
        train_mode=lambda m: set_train_mode(m, frozen),
        on_step=None if on_step is None else lambda _: on_step(),
    )
    if channels_last:
        net.to(memory_format=torch.contiguous_format)
    net.eval()
    return net


def correct(net: nn.Module, x: torch.Tensor, y: torch.Tensor, start: int = 0) -> np.ndarray:
    """Per-image correctness (bool array) of ``net`` in eval mode (``x`` enters at stage
    ``start`` of a :class:`StageNet`)."""
    net.eval()
    run = (lambda h: net(h, start)) if start else net
    logits = batched(run, x, 256)
    return (logits.argmax(1) == y).numpy()


def reestimate_bn(
    module: nn.Module, x: torch.Tensor, *, batch_size: int = 128, max_batches: int = 8
) -> nn.Module:
    """Recompute every BatchNorm's running statistics as the average over the first
    ``max_batches`` batches of ``x`` (:func:`interp.models.base.reestimate_batchnorm`: modes
    and momenta restored). Returns ``module``."""
    stop = min(len(x), batch_size * max_batches)
    reestimate_batchnorm(module, (x[i : i + batch_size] for i in range(0, stop, batch_size)))
    return module
