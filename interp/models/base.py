"""The :class:`Model` wrapper: a module plus everything needed to feed it and read it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..device import module_device, resolve_device
from ..errors import UnknownClassError

__all__ = ["Model", "Preprocessing", "IMAGENET_MEAN", "IMAGENET_STD", "module_device"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How pixels in ``[0, 1]`` become the model's input.

    ``input = (pixels - mean) / std`` per channel, on images of ``input_size`` (height, width)
    with ``channels`` (3: RGB, 1: grey). ``resize_size`` is the shorter side an image is resized
    to before a centre crop of ``input_size`` (classification-style evaluation).
    """

    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    input_size: tuple[int, int] = (224, 224)
    channels: int = 3
    resize_size: int | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"mean/std need {self.channels} values each, got {self.mean} and {self.std}"
            )

    @property
    def grey(self) -> bool:
        """True for single-channel (greyscale) models."""
        return self.channels == 1

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map a batch of ``[0, 1]`` images ``(N, C, H, W)`` to model input.

        Grey images given to a colour model are repeated to RGB; colour images given to a grey
        model are turned to luminance (ITU-R 601 weights), as :func:`load_image` would.
        """
        if pixels.dim() == 4 and pixels.shape[1] != self.channels:
            if pixels.shape[1] == 1 and self.channels == 3:
                pixels = pixels.expand(-1, 3, -1, -1)
            elif pixels.shape[1] == 3 and self.channels == 1:
                weights = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype)
                pixels = (pixels * weights.to(pixels.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=pixels.dtype, device=pixels.device).view(shape)
        std = torch.tensor(self.std, dtype=pixels.dtype, device=pixels.device).view(shape)
        return (pixels - mean) / std

    def denormalize(self, inputs: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize`."""
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.mean, dtype=inputs.dtype, device=inputs.device).view(shape)
        std = torch.tensor(self.std, dtype=inputs.dtype, device=inputs.device).view(shape)
        return inputs * std + mean

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "input_size": list(self.input_size),
            "channels": self.channels,
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        return cls(
            mean=tuple(float(v) for v in data.get("mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in data.get("std", IMAGENET_STD)),
            input_size=tuple(int(v) for v in data.get("input_size", (224, 224))),  # type: ignore[arg-type]
            channels=int(data.get("channels", 3)),
            resize_size=data.get("resize_size"),
            interpolation=str(data.get("interpolation", "bilinear")),
        )


@dataclass
class Model:
    """A loaded network: ``module`` (eval mode, on ``device``), its preprocessing, its classes.

    Attributes:
        module: the ``nn.Module`` itself.
        name: the spec it was loaded from (``"efficientnet_lite0"``, ``"torchvision:resnet18"``...).
        preprocessing: how ``[0, 1]`` pixels become input (see :class:`Preprocessing`).
        class_names: one name per output logit, or ``None`` when unknown.
        weights_source: where the weights came from (a file path, ``"random init"``...).
        info: free-form extra facts (architecture, parameter count, notes).
    """

    module: nn.Module
    name: str
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_names: Sequence[str] | None = None
    weights_source: str = "unknown"
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        """The device of the module's first parameter or buffer (CPU for parameter-free ones)."""
        return module_device(self.module)

    @property
    def input_size(self) -> tuple[int, int]:
        """Expected (height, width) of an input image."""
        return self.preprocessing.input_size

    @property
    def num_parameters(self) -> int:
        """Total number of parameters."""
        return sum(p.numel() for p in self.module.parameters())

    def to(self, device: str | torch.device) -> Model:
        """Move the module to ``device`` (``"auto"`` allowed); returns ``self``."""
        self.module.to(resolve_device(device))
        return self

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[0, 1]`` pixels → model input (see :meth:`Preprocessing.normalize`)."""
        return self.preprocessing.normalize(pixels)

    def example_input(self, batch: int = 1, seed: int = 0) -> torch.Tensor:
        """A normalized random-pixel batch of the model's input shape, on its device."""
        gen = torch.Generator().manual_seed(seed)
        height, width = self.input_size
        pixels = torch.rand(batch, self.preprocessing.channels, height, width, generator=gen)
        return self.normalize(pixels).to(self.device)

    def class_name(self, index: int) -> str:
        """Name of output ``index`` (``"class N"`` when names are unknown)."""
        if self.class_names is not None and 0 <= index < len(self.class_names):
            return str(self.class_names[index])
        return f"class {index}"

    def class_index(self, name_or_index: str | int) -> int:
        """Index of a class given by index or (case-insensitive, unique-prefix) name."""
        if isinstance(name_or_index, int):
            return name_or_index
        text = str(name_or_index).strip()
        if text.lstrip("-").isdigit():
            return int(text)
        if not self.class_names:
            raise UnknownClassError(
                f"model {self.name!r} has no class names; give a class index instead"
            )
        lowered = [str(n).lower() for n in self.class_names]
        if text.lower() in lowered:
            return lowered.index(text.lower())
        hits = [i for i, n in enumerate(lowered) if n.startswith(text.lower())]
        if len(hits) == 1:
            return hits[0]
        import difflib

        close = difflib.get_close_matches(text.lower(), lowered, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownClassError(f"no class named {text!r} in model {self.name!r}{hint}")

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.module(inputs)

    def summary(self) -> dict[str, Any]:
        """A JSON-friendly description of the model."""
        return {
            "name": self.name,
            "architecture": type(self.module).__name__,
            "parameters": self.num_parameters,
            "device": str(self.device),
            "preprocessing": self.preprocessing.to_dict(),
            "num_classes": len(self.class_names) if self.class_names is not None else None,
            "weights_source": self.weights_source,
            **{k: v for k, v in self.info.items() if isinstance(v, str | int | float | bool)},
        }


def reestimate_batchnorm(module: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Recompute every BatchNorm's running statistics as the plain average over ``batches``
    (model inputs): BatchNorm layers in train mode with ``momentum=None``, everything else in
    eval mode, no gradients. Modes and momenta are restored, also on error. Returns the number
    of batches used (0: the module has no BatchNorm and nothing was run)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return 0
    modes = [(m, m.training) for m in module.modules()]
    momenta = [(b, b.momentum) for b in bns]
    used = 0
    try:
        module.eval()
        for b in bns:
            b.reset_running_stats()
            b.momentum = None  # cumulative average over every batch
            b.train()
        with torch.no_grad():
            for x in batches:
                module(x)
                used += 1
    finally:
        for b, momentum in momenta:
            b.momentum = momentum
        for m, training in modes:
            m.training = training
    return used
