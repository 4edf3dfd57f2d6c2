"""``photos``: random crops of the photos inside scikit-image — natural images with no download.

Each item is a square crop of one of the 14 ``skimage.data`` photos (uniform photo, side
25–100% of the photo's shorter side, uniform position), resized to ``size``; a pure function
of ``(seed, index)``. The photo is the item's *source*: dataset examples keep at most one crop
per source in a unit's top-k unless asked otherwise, so one photo cannot fill it.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch
from PIL import Image

from .natural import PHOTO_NAMES, load_photo

__all__ = ["PhotoCrops"]


@cache
def _photo(name: str) -> Image.Image:
    return load_photo(name).convert("RGB")


class PhotoCrops(torch.utils.data.Dataset):
    """``n`` random square crops of the skimage photos, ``size`` pixels, seeded.

    ``dataset[i]`` is ``(image (3, size, size) in [0, 1], -1)``; :meth:`source` the photo's
    index and :meth:`describe` the photo and crop box.
    """

    def __init__(
        self,
        n: int = 1000,
        size: int = 224,
        seed: int = 0,
        names: tuple[str, ...] = PHOTO_NAMES,
        scale: tuple[float, float] = (0.25, 1.0),
    ) -> None:
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        self.names = tuple(names)
        self.scale = scale
        self.class_names: list[str] = []

    def __len__(self) -> int:
        return self.n

    def _box(self, index: int) -> tuple[int, tuple[int, int, int, int]]:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} photo crops")
        rng = np.random.default_rng([self.seed, index])
        p = int(rng.integers(len(self.names)))
        w, h = _photo(self.names[p]).size
        side = max(8, int(round(min(w, h) * rng.uniform(*self.scale))))
        x = int(rng.integers(0, w - side + 1))
        y = int(rng.integers(0, h - side + 1))
        return p, (x, y, x + side, y + side)

    def source(self, index: int) -> int:
        """Index of the photo the crop comes from."""
        return self._box(index)[0]

    def describe(self, index: int) -> dict[str, object]:
        p, box = self._box(index)
        return {"photo": self.names[p], "box": list(box)}

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        p, box = self._box(int(index))
        crop = _photo(self.names[p]).crop(box).resize((self.size, self.size), Image.BILINEAR)
        arr = np.asarray(crop, dtype=np.float32) / 255.0
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous(), -1
