"""Transformation robustness, drawn independently for every image of a batch.

lucent's standard set — pad 12 px (grey), jitter 8 px, scale 0.9..1.1, rotate -10..10 degrees
(0 five times as likely), jitter 4 px — is one random draw for the whole batch and five
separate image operations. Here each image gets its own draw, and pad, jitter, scale and
rotation are folded into one affine sampling grid per image, applied with a single batched
``grid_sample`` on the model's device. The output has the canvas size by default (so padding
shows as a zoom-out, as lucent with ``fixed_image_size`` does) or ``out_size``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["RobustTransform", "STANDARD", "NONE"]


@dataclass(frozen=True)
class RobustTransform:
    """Random pad/jitter/scale/rotate per image.

    Attributes:
        pad: pixels of padding around the canvas (filled with ``fill``).
        jitter: maximum translation in pixels (lucent's two jitters, 8 + 4, add up to 12;
            drawn as two uniform integer shifts like lucent's).
        scales: scale factors to draw from.
        angles: rotation angles (degrees) to draw from.
        fill: value of the padding (0.5: grey, as lucent).
    """

    pad: int = 12
    jitter: tuple[int, ...] = (8, 4)
    scales: tuple[float, ...] = tuple(1 + (i - 5) / 50.0 for i in range(11))
    angles: tuple[float, ...] = tuple(range(-10, 11)) + (0,) * 5
    fill: float = 0.5

    def sample(self, generators: Sequence[torch.Generator], size: tuple[int, int]) -> torch.Tensor:
        """Affine matrices ``(B, 2, 3)`` (normalized coordinates), one draw per generator."""
        h, w = size
        mats = []
        for gen in generators:

            def pick(values: Sequence[float], g: torch.Generator = gen) -> float:
                return float(values[int(torch.randint(len(values), (1,), generator=g))])

            scale = pick(self.scales) if self.scales else 1.0
            angle = math.radians(pick(self.angles)) if self.angles else 0.0
            dx = sum(int(torch.randint(d, (1,), generator=gen)) for d in self.jitter if d > 1)
            dy = sum(int(torch.randint(d, (1,), generator=gen)) for d in self.jitter if d > 1)
            # lucent shifts by 0..d-1 px: centre the range so the canvas is not pushed one way
            dx -= sum(d - 1 for d in self.jitter if d > 1) / 2
            dy -= sum(d - 1 for d in self.jitter if d > 1) / 2
            # output pixel -> padded-canvas pixel, in normalized coordinates of the canvas
            zoom_x, zoom_y = (w + 2 * self.pad) / w, (h + 2 * self.pad) / h
            cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
            mats.append(
                [
                    [cos * zoom_x, -sin * zoom_y * h / w, -2 * dx / w],
                    [sin * zoom_x * w / h, cos * zoom_y, -2 * dy / h],
                ]
            )
        return torch.tensor(mats, dtype=torch.float32)

    def __call__(
        self,
        images: torch.Tensor,
        generators: Sequence[torch.Generator],
        out_size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        """Transform ``images (B, C, H, W)``; one random draw per image."""
        b, c, h, w = images.shape
        if len(generators) != b:
            raise ValueError(f"need one generator per image ({b}), got {len(generators)}")
        theta = self.sample(generators, (h, w)).to(images.device, images.dtype)
        oh, ow = out_size or (h, w)
        grid = F.affine_grid(theta, [b, c, oh, ow], align_corners=False)
        out = F.grid_sample(
            images - self.fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
        return out + self.fill


STANDARD = RobustTransform()
NONE = RobustTransform(pad=0, jitter=(), scales=(), angles=())
