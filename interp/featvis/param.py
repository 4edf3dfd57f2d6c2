"""Image parametrizations: ``make_param(...) -> (params, image_fn)``, ``image_fn()`` giving a
batch ``(B, C, H, W)`` in ``[0, 1]``.

* ``fft`` (default): lucid/lucent's decorrelated-colour Fourier image — a spectrum scaled by
  1/frequency, inverse FFT, lucid's colour-decorrelation matrix, sigmoid. Same maths and the
  same parameter layout as ``lucent.optvis.param.image(w, fft=True, decorrelate=True)`` (the
  test suite checks equal images for equal parameters), but built on the model's device with
  one seeded generator per image, and grey for one-channel models.
* ``pixel``: plain pixels through a sigmoid.
* ``maco``: MACO (Fel et al. 2023): only the Fourier *phase* is optimized; the magnitude is
  fixed to the mean magnitude spectrum of natural photos (the ones in ``skimage.data``), so
  images keep natural-image energy at every frequency and cannot drift into high-frequency
  noise. No PyTorch anchor ships it.

lucent ``param_f`` functions (returning ``(params, image_f)``) are accepted by the renderer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..data.natural import PHOTO_NAMES, load_photo

__all__ = ["PARAMS", "make_param", "fft_image", "pixel_image", "maco_image", "natural_magnitude"]

ImageFn = Callable[[], torch.Tensor]
PARAMS = ("fft", "pixel", "maco")

# lucid's colour correlation (square root of the ImageNet colour covariance, SVD form)
_COLOR_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float32
)
_COLOR = _COLOR_SVD_SQRT / _COLOR_SVD_SQRT.norm(dim=0).max()


def _decorrelate(image: torch.Tensor) -> torch.Tensor:
    if image.shape[1] != 3:
        return image
    # element-wise sums, not einsum's batched matmul: cheaper on (B, 3, H, W) and bitwise
    # independent of the batch size (an image renders the same alone or in a batch); the
    # channels taken with one unbind, whose backward stacks three gradients, not with nine
    # selects, each of whose backward fills a whole zero batch
    weights = _COLOR.tolist()
    planes = image.unbind(1)
    return torch.stack(
        [planes[0] * w[0] + planes[1] * w[1] + planes[2] * w[2] for w in weights], dim=1
    )


def _randn(shape: Sequence[int], seeds: Sequence[int], sd: float) -> torch.Tensor:
    """One draw per image from its own generator: an image's start does not depend on the
    others in the batch."""
    parts = [
        torch.randn(*shape, generator=torch.Generator().manual_seed(int(s))) * sd for s in seeds
    ]
    return torch.stack(parts)


def _freqs(h: int, w: int) -> torch.Tensor:
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def fft_image(
    batch: int,
    channels: int,
    size: tuple[int, int],
    seeds: Sequence[int],
    device: torch.device,
    *,
    sd: float = 0.01,
    decay_power: float = 1.0,
    decorrelate: bool = True,
) -> tuple[list[torch.Tensor], ImageFn]:
    """lucid's decorrelated Fourier parametrization (see the module docstring)."""
    h, w = size
    freqs = _freqs(h, w)
    spectrum = _randn((channels, h, w // 2 + 1, 2), seeds, sd).to(device).requires_grad_(True)
    # lucid's constant 1/4 on the image, folded into the spectrum's scale (irfft is linear)
    scale = (0.25 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power).to(device)
    scale = scale[None, None, :, :, None]

    def image_fn() -> torch.Tensor:
        coeffs = torch.view_as_complex(scale * spectrum)
        img = torch.fft.irfftn(coeffs, s=(h, w), norm="ortho")
        if decorrelate:
            img = _decorrelate(img)
        return torch.sigmoid(img)

    return [spectrum], image_fn


def pixel_image(
    batch: int,
    channels: int,
    size: tuple[int, int],
    seeds: Sequence[int],
    device: torch.device,
    *,
    sd: float = 0.01,
    decorrelate: bool = False,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Plain pixels: ``sigmoid(t)`` (optionally colour-decorrelated first)."""
    tensor = _randn((channels, *size), seeds, sd).to(device).requires_grad_(True)

    def image_fn() -> torch.Tensor:
        return torch.sigmoid(_decorrelate(tensor) if decorrelate else tensor)

    return [tensor], image_fn


@functools.lru_cache(maxsize=16)
def natural_magnitude(size: tuple[int, int], channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean magnitude spectrum ``(C, H, W//2+1)`` and mean colour ``(C,)`` of random crops of
    the natural photos in ``skimage.data`` at ``size`` (cached)."""
    h, w = size
    rng = np.random.default_rng(0)
    mags, means = [], []
    colour_photos = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle")
    names = colour_photos if channels == 3 else PHOTO_NAMES
    for name in names:
        img = load_photo(name).convert("RGB" if channels == 3 else "L")
        arr = np.asarray(img, dtype=np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[..., None]
        scale = max(h / arr.shape[0], w / arr.shape[1], 1.0)
        if scale > 1.0:
            img = img.resize((math.ceil(arr.shape[1] * scale), math.ceil(arr.shape[0] * scale)))
            arr = np.asarray(img, dtype=np.float32) / 255.0
            arr = arr[..., None] if arr.ndim == 2 else arr
        for _ in range(8):
            y = rng.integers(0, arr.shape[0] - h + 1)
            x = rng.integers(0, arr.shape[1] - w + 1)
            crop = torch.from_numpy(arr[y : y + h, x : x + w]).permute(2, 0, 1)
            means.append(crop.mean(dim=(1, 2)))
            centred = crop - crop.mean(dim=(1, 2), keepdim=True)
            mags.append(torch.fft.rfft2(centred, norm="ortho").abs())
    return torch.stack(mags).mean(dim=0), torch.stack(means).mean(dim=0)


def maco_image(
    batch: int,
    channels: int,
    size: tuple[int, int],
    seeds: Sequence[int],
    device: torch.device,
    *,
    magnitude: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], ImageFn]:
    """MACO: optimize the phase only, magnitude fixed to natural images' mean spectrum.

    ``image = clamp(irfft2(|A| e^{i phi}) + mean_colour, 0, 1)``; the energy per frequency of
    the unclamped image is exactly ``|A|`` whatever the phase.
    """
    h, w = size
    mag, mean = natural_magnitude((h, w), channels) if magnitude is None else (magnitude, None)
    mag = mag.to(device)
    mean = (torch.full((channels,), 0.5) if mean is None else mean).to(device)[None, :, None, None]
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    phase = torch.stack(
        [(torch.rand(channels, h, w // 2 + 1, generator=g) * 2 - 1) * math.pi for g in gens]
    )
    phase = phase.to(device).requires_grad_(True)

    def image_fn() -> torch.Tensor:
        spectrum = torch.polar(mag.expand_as(phase), phase)
        return (torch.fft.irfft2(spectrum, s=(h, w), norm="ortho") + mean).clamp(0.0, 1.0)

    return [phase], image_fn


def make_param(
    kind: str,
    batch: int,
    channels: int,
    size: int | tuple[int, int],
    seeds: Sequence[int],
    device: torch.device,
) -> tuple[list[torch.Tensor], ImageFn]:
    """Build parametrization ``kind`` (``fft``, ``pixel``, ``maco``) for ``batch`` images."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(seeds) != batch:
        raise ValueError(f"need one seed per image ({batch}), got {len(seeds)}")
    builders = {"fft": fft_image, "pixel": pixel_image, "maco": maco_image}
    if kind not in builders:
        raise ValueError(f"unknown parametrization {kind!r}: choose one of {', '.join(PARAMS)}")
    return builders[kind](batch, channels, hw, seeds, device)  # type: ignore[arg-type]
