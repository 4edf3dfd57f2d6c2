"""The photos that ship inside scikit-image (``skimage.data``): offline natural images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from ..utils import save_png

__all__ = ["PHOTO_NAMES", "load_photo", "save_photos"]

#: Natural photographs in ``skimage.data`` that need no download (colour first, then grey).
PHOTO_NAMES: tuple[str, ...] = (
    "chelsea",
    "coffee",
    "astronaut",
    "rocket",
    "motorcycle",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
)


def load_photo(name: str) -> Image.Image:
    """One photo of ``skimage.data`` by name, as a PIL image (RGB or L)."""
    import skimage.data as data

    if name not in PHOTO_NAMES:
        raise KeyError(f"unknown photo {name!r}; choose one of {', '.join(PHOTO_NAMES)}")
    if name == "motorcycle":
        array = data.stereo_motorcycle()[0]
    else:
        array = getattr(data, name)()
    return Image.fromarray(np.asarray(array))


def save_photos(
    out_dir: str | os.PathLike[str], names: tuple[str, ...] | list[str] = PHOTO_NAMES
) -> list[Path]:
    """Write the photos as PNG files into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = out / f"{name}.png"
        if not path.exists():
            save_png(load_photo(name), path)  # atomic
        paths.append(path)
    return paths
