"""Natural reference images: how strongly do real images excite a unit?

A feature visualization is only convincing when it excites its unit more than natural images
do (Olah et al.'s sanity check). The reference set is random crops of the canvas size from the
photos in ``skimage.data`` (at three scales, so both details and whole objects appear), or
from a folder of the user's images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..data.images import load_image
from ..data.natural import PHOTO_NAMES, load_photo
from ..errors import ImageError

__all__ = ["reference_images", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def _sources(source: str | os.PathLike[str]) -> list[Image.Image]:
    if str(source) == "photos":
        return [load_photo(n) for n in PHOTO_NAMES]
    folder = Path(source)
    if not folder.is_dir():
        raise ImageError(f"reference {source!r}: give 'photos' or a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ImageError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {folder}")
    return [load_image(p) for p in files]


def reference_images(
    size: int,
    source: str | os.PathLike[str] = "photos",
    *,
    n: int = 256,
    channels: int = 3,
    seed: int = 0,
) -> torch.Tensor:
    """``n`` random ``size`` x ``size`` crops ``(n, channels, size, size)`` in ``[0, 1]``.

    Crops are spread evenly over the source images; each is taken from the image shrunk so its
    shorter side is 1, 2 or 4 crop sizes (chosen at random), so crops show whole objects as
    well as details.
    """
    rng = np.random.default_rng(seed)
    images = _sources(source)
    mode = "RGB" if channels == 3 else "L"
    crops = []
    for k in range(n):
        img = images[k % len(images)].convert(mode)
        factor = float(rng.choice([1, 2, 4]))
        short = min(img.size)
        target = max(size, min(short, int(size * factor)))
        scale = target / short
        resized = img.resize(
            (max(size, round(img.width * scale)), max(size, round(img.height * scale))),
            Image.BICUBIC,
        )
        x = int(rng.integers(0, resized.width - size + 1))
        y = int(rng.integers(0, resized.height - size + 1))
        arr = np.asarray(resized.crop((x, y, x + size, y + size)), dtype=np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[..., None]
        crops.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(crops)
