"""Image reading: modes, arrays, transparency, and the input tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from interp import ImageError
from interp.data.images import load_image, to_input
from interp.models.base import Preprocessing


def test_modes_become_rgb_or_grey(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # fully transparent -> white
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    grey = load_image(np.full((5, 6), 7, dtype=np.uint8))
    assert grey.mode == "RGB" and grey.size == (6, 5) and grey.getpixel((0, 0)) == (7, 7, 7)
    assert load_image(np.ones((3, 8, 8), dtype=np.float32), "L").getpixel((0, 0)) == 255
    path16 = tmp_path / "deep.png"
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(path16)
    assert load_image(path16).getpixel((1, 1)) == (255, 255, 255)
    palette = Image.new("P", (4, 4))
    assert load_image(palette).mode == "RGB"


def test_errors(tmp_path):
    with pytest.raises(ImageError, match="does not exist"):
        load_image(tmp_path / "none.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ImageError, match="cannot read"):
        load_image(bad)
    with pytest.raises(ImageError, match="shape"):
        load_image(np.zeros((2, 2, 2, 2)))


def test_to_input_shapes_and_normalization():
    pre = Preprocessing(mean=(0.5,), std=(0.5,), channels=1, input_size=(28, 28), resize_size=32)
    x = to_input([Image.new("RGB", (100, 50), (255, 255, 255))], pre)
    assert x.shape == (1, 1, 28, 28)
    assert torch.allclose(x, torch.ones_like(x))
    rgb = to_input(Image.new("L", (30, 40), 0), Preprocessing(), crop=False)
    assert rgb.shape == (1, 3, 224, 224)
