"""Dataset specs: splits, shapes, disjointness, and clear errors when files are missing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from interp.data.specs import DatasetUnavailableError, load_data


def test_digits_splits():
    d = load_data("digits")
    assert d.sizes() == {"train": 1258, "val": 270, "test": 269}
    image, label = d.train[0]
    assert image.shape == (1, 32, 32) and 0 <= image.min() and image.max() <= 1
    assert d.num_classes == 10 and d.channels == 1
    ids = [set(s.indices) for s in (d.train, d.val, d.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert load_data("digits", size=16).test[3][0].shape == (1, 16, 16)


def test_partsworld_splits_are_different_worlds():
    d = load_data("partsworld", n=1000, size=48)
    assert d.sizes() == {"train": 1000, "val": 500, "test": 500}
    assert d.train[0][0].shape == (3, 48, 48) and d.num_classes == 6
    assert not torch.equal(d.train[0][0], d.test[0][0])
    again = load_data("partsworld", n=1000, size=48)
    assert torch.equal(again.val[7][0], d.val[7][0])


def test_folder_spec(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            arr = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / cls / f"{i}.png")
    d = load_data(f"folder:{tmp_path}", size=16)
    assert d.class_names == ["cats", "dogs"] and sum(d.sizes().values()) == 20
    assert d.train[0][0].shape == (3, 16, 16)
    with pytest.raises(DatasetUnavailableError, match="not a folder"):
        load_data(f"folder:{tmp_path / 'none'}")


def test_torchvision_without_files_names_what_to_place(tmp_path):
    with pytest.raises(DatasetUnavailableError) as info:
        load_data(f"torchvision:MNIST:{tmp_path}")
    assert str(tmp_path) in str(info.value) and "train-images-idx3-ubyte" in str(info.value)
    with pytest.raises(DatasetUnavailableError, match="offline"):
        load_data(f"torchvision:CIFAR10:{tmp_path}", download=True)  # INTERP_OFFLINE=1 in tests
    with pytest.raises(DatasetUnavailableError, match="unknown data spec"):
        load_data("imagenet")
