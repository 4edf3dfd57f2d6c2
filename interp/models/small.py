"""Small CNNs for fresh training: ``simplecnn``, a plain AlexNet-like network.

Five convolutions (the first two and the last followed by 2x2 max-pooling), optional
BatchNorm, ReLU, global average pooling and a linear classifier. Widths scale with ``width``;
every conv output is a module of its own (``features.convN`` / ``features.reluN``), so the
layers the hierarchy probes read have stable, readable names.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ._registry import LoadOptions, apply_weight_path, build_random, register_model
from .base import Model, Preprocessing

__all__ = ["SimpleCNN", "simplecnn"]

_WIDTHS = (32, 64, 96, 96, 64)
_POOL_AFTER = (1, 2, 5)


class SimpleCNN(nn.Module):
    """AlexNet-like: 5 conv layers (3x3, the first 5x5), optional BatchNorm, 3 max-pools."""

    def __init__(
        self,
        num_classes: int = 6,
        in_channels: int = 3,
        width: float = 1.0,
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        cin = in_channels
        for i, base in enumerate(_WIDTHS, start=1):
            cout = max(4, round(base * width))
            k = 5 if i == 1 else 3
            layers[f"conv{i}"] = nn.Conv2d(cin, cout, k, padding=k // 2, bias=not batchnorm)
            if batchnorm:
                layers[f"bn{i}"] = nn.BatchNorm2d(cout)
            layers[f"relu{i}"] = nn.ReLU()
            if i in _POOL_AFTER:
                layers[f"pool{i}"] = nn.MaxPool2d(2)
            cin = cout
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


def simplecnn(**kwargs: object) -> SimpleCNN:
    """Build a :class:`SimpleCNN` (``num_classes``, ``in_channels``, ``width``, ``batchnorm``)."""
    return SimpleCNN(**kwargs)  # type: ignore[arg-type]


@register_model(
    "simplecnn",
    "AlexNet-like 5-conv CNN for fresh training (random init; train it with `interp train`)",
)
def _load_simplecnn(name: str, options: LoadOptions) -> Model:
    kwargs = dict(options.kwargs)
    size = int(kwargs.pop("input_size", 64))
    channels = int(kwargs.get("in_channels", 3))
    module = build_random(lambda: simplecnn(**kwargs), options.seed)
    model = Model(
        module=module,
        name=name,
        preprocessing=Preprocessing(
            mean=(0.5,) * channels,
            std=(0.25,) * channels,
            channels=channels,
            input_size=(size, size),
            resize_size=size,
        ),
        weights_source="random init",
        info={"family": "SimpleCNN", "seed": options.seed},
    )
    if options.weights_mode == "path":
        return apply_weight_path(model, options)
    return model
