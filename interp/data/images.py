"""Reading images (JPEG/PNG/..., grey, RGBA, palette, 16-bit) and turning them into input."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from ..models.base import Preprocessing

__all__ = ["load_image", "to_input", "image_files", "folder_images", "ImageLike", "IMAGE_SUFFIXES"]

ImageLike = str | os.PathLike[str] | Image.Image | np.ndarray

#: file suffixes taken as images when a folder is given
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm")


def image_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files directly in ``folder`` (by suffix), sorted by name.

    Raises:
        ImageError: ``folder`` is not a folder, or holds no image file.
    """
    return folder_images(folder)[0]


def folder_images(folder: str | os.PathLike[str]) -> tuple[list[Path], list[Path]]:
    """The files directly in ``folder`` split by suffix into images and the rest, each sorted
    by name, so that a caller can say what it skipped.

    Raises:
        ImageError: ``folder`` is not a folder, or holds no image file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder} is not a folder")
    images: list[Path] = []
    others: list[Path] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        (images if path.suffix.lower() in IMAGE_SUFFIXES else others).append(path)
    if not images:
        raise ImageError(
            f"folder {folder} holds no image file ({', '.join(IMAGE_SUFFIXES[:5])}, ...); "
            "give image files or a folder that holds some"
        )
    return images, others


def _from_array(array: np.ndarray) -> Image.Image:
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        if arr.max(initial=0) > 1.0:  # assume 0..255 (or 16-bit) ranges
            arr = arr / (65535.0 if arr.max() > 255 else 255.0)
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise ImageError(f"cannot read an image from an array of shape {arr.shape}")
    return Image.fromarray(arr)


def load_image(image: ImageLike, mode: str = "RGB") -> Image.Image:
    """Open ``image`` (path, PIL image or array) as a PIL image in ``mode`` (``RGB`` or ``L``).

    Transparent images (RGBA, LA, palette with transparency) are composited on white; grey
    images are repeated to RGB; 16-bit images are scaled to 8 bits.

    Raises:
        ImageError: the file is missing or not an image Pillow can decode.
    """
    if isinstance(image, Image.Image):
        img = image
    elif isinstance(image, np.ndarray):
        img = _from_array(image)
    else:
        path = Path(image)
        if path.is_dir():
            raise ImageError(
                f"{path} is a folder, not an image file; give an image file inside it"
                " (`interp classify MODEL FOLDER` classifies every image in a folder)"
            )
        if not path.is_file():
            raise ImageError(f"image file {path} does not exist")
        try:
            with Image.open(path) as opened:
                opened.load()
                img = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(
                f"cannot read {path} as an image (not a format Pillow decodes, or a damaged "
                "file); give a JPEG, PNG, BMP, TIFF or WebP file",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        img = _from_array(arr / max(arr.max(), 1.0))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    if img.mode != mode:
        img = img.convert(mode)
    return img


def to_input(
    images: ImageLike | Sequence[ImageLike],
    preprocessing: Preprocessing,
    *,
    crop: bool = True,
) -> torch.Tensor:
    """Images → a normalized batch ``(N, C, H, W)`` for a model with ``preprocessing``.

    With ``crop`` (classification-style evaluation): resize the shorter side to
    ``resize_size`` and take the centre ``input_size`` crop; without it, resize to
    ``input_size`` directly (the whole image, aspect ratio not kept).
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    if isinstance(images, str | os.PathLike | Image.Image | np.ndarray):
        images = [images]
    mode = "L" if preprocessing.grey else "RGB"
    interp = InterpolationMode(preprocessing.interpolation)
    height, width = preprocessing.input_size
    batch = []
    for image in images:
        img = load_image(image, mode)
        if crop:
            resize = preprocessing.resize_size or round(min(height, width) / 0.875)
            img = TF.resize(img, resize, interpolation=interp, antialias=True)
            img = TF.center_crop(img, [height, width])
        else:
            img = TF.resize(img, [height, width], interpolation=interp, antialias=True)
        batch.append(TF.to_tensor(img))
    return preprocessing.normalize(torch.stack(batch))
