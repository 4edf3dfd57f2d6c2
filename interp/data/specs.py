"""Datasets behind one spec string, each with train/val/test splits.

* ``partsworld`` — procedural scenes with masks (:mod:`interp.data.partsworld`); the three
  splits are different seeds, so they never share an image.
* ``digits`` — scikit-learn's 1,797 handwritten 8x8 digits (shipped with scikit-learn),
  resized (default 32 px), split 70/15/15 by a fixed permutation.
* ``folder:PATH`` — an ImageFolder (one sub-folder per class); ``PATH/train``, ``PATH/val``
  and ``PATH/test`` are used when present, else the images are split 80/10/10.
* ``torchvision:MNIST|FashionMNIST|CIFAR10[:ROOT]`` — torchvision's datasets under ``ROOT``
  (default ``~/.cache/interp/datasets``); downloaded only with ``download=True``
  (``--download``); 10% of the training set is held out for validation.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from ..errors import InterpError

__all__ = ["DataSplits", "DatasetUnavailableError", "load_data", "DATA_SPECS"]

DATA_SPECS = ("partsworld", "digits", "folder:PATH", "torchvision:MNIST|FashionMNIST|CIFAR10")
_TV_DATASETS = {"MNIST": 1, "FashionMNIST": 1, "CIFAR10": 3}
_TV_FILES = {
    "MNIST": "MNIST/raw/train-images-idx3-ubyte (and the other three MNIST files)",
    "FashionMNIST": "FashionMNIST/raw/train-images-idx3-ubyte (and the other three files)",
    "CIFAR10": "cifar-10-batches-py/ (unpacked from cifar-10-python.tar.gz)",
}


class DatasetUnavailableError(InterpError, RuntimeError):
    """A dataset's files are not on disk and may not (or could not) be downloaded."""


@dataclass
class DataSplits:
    """Train/val/test datasets of ``(image (C, H, W) in [0, 1], label)`` pairs."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    channels: int
    size: int
    class_names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        """Number of images per split."""
        return {k: len(getattr(self, k)) for k in ("train", "val", "test")}  # type: ignore[arg-type]


class _TensorImages(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


class _Resized(Dataset):
    """A dataset of PIL images or tensors mapped to (C, size, size) tensors in [0, 1]."""

    def __init__(self, base: Dataset, size: int, channels: int) -> None:
        self.base, self.size, self.channels = base, size, channels

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from torchvision.transforms import functional as TF

        image, label = self.base[i]
        if not isinstance(image, torch.Tensor):
            image = image.convert("RGB" if self.channels == 3 else "L")
            image = TF.resize(image, self.size, antialias=True)
            image = TF.center_crop(image, [self.size, self.size])
            image = TF.to_tensor(image)
        return image, int(label)


def _split(n: int, fractions: tuple[float, float], seed: int) -> tuple[list[int], ...]:
    order = np.random.default_rng(seed).permutation(n).tolist()
    a = int(round(n * fractions[0]))
    b = a + int(round(n * fractions[1]))
    return order[:a], order[a:b], order[b:]


def _digits(size: int | None, seed: int) -> DataSplits:
    from sklearn.datasets import load_digits

    size = size or 32
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    images = torch.nn.functional.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False
    ).clamp(0, 1)
    labels = torch.tensor(data.target)
    full = _TensorImages(images, labels)
    train, val, test = _split(len(labels), (0.7, 0.15), seed=1234)
    return DataSplits(
        "digits",
        Subset(full, train),
        Subset(full, val),
        Subset(full, test),
        10,
        1,
        size,
        [str(d) for d in range(10)],
    )


def _partsworld(size: int | None, seed: int, n: int | None) -> DataSplits:
    from .partsworld import CLASSES, PartsWorld

    size = size or 64
    n_train = n or 20_000
    n_eval = max(500, n_train // 10)
    base = 1_000_003 * seed
    return DataSplits(
        "partsworld",
        PartsWorld(n_train, size, seed=base + 1),
        PartsWorld(n_eval, size, seed=base + 2),
        PartsWorld(n_eval, size, seed=base + 3),
        len(CLASSES),
        3,
        size,
        list(CLASSES),
        info={"seeds": [base + 1, base + 2, base + 3]},
    )


def _folder(path: str, size: int | None, seed: int) -> DataSplits:
    from torchvision.datasets import ImageFolder

    size = size or 64
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetUnavailableError(f"folder:{path}: {root} is not a folder of class folders")
    if all((root / s).is_dir() for s in ("train", "val", "test")):
        parts = [ImageFolder(str(root / s)) for s in ("train", "val", "test")]
        classes = parts[0].classes
        train, val, test = (_Resized(p, size, 3) for p in parts)
    else:
        full = ImageFolder(str(root))
        classes = full.classes
        a, b, c = _split(len(full), (0.8, 0.1), seed=1234)
        wrapped = _Resized(full, size, 3)
        train, val, test = Subset(wrapped, a), Subset(wrapped, b), Subset(wrapped, c)
    return DataSplits(f"folder:{path}", train, val, test, len(classes), 3, size, classes)


def _torchvision(
    name: str, root: str | None, size: int | None, download: bool, offline: bool | None
) -> DataSplits:
    import torchvision

    from ..models.download import DEFAULT_TIMEOUT, offline_requested

    if name not in _TV_DATASETS:
        raise DatasetUnavailableError(
            f"torchvision:{name} is not supported; use one of {', '.join(_TV_DATASETS)}"
        )
    where = Path(root or Path.home() / ".cache" / "interp" / "datasets").expanduser()
    cls = getattr(torchvision.datasets, name)
    want_download = download and not offline_requested(offline)
    previous = socket.getdefaulttimeout()
    try:
        if want_download:  # torchvision's downloader has no timeout of its own
            socket.setdefaulttimeout(DEFAULT_TIMEOUT)
        train_full = cls(str(where), train=True, download=want_download)
        test = cls(str(where), train=False, download=want_download)
    except (RuntimeError, OSError) as exc:
        how = (
            "offline mode is on"
            if download and not want_download
            else f"the download failed ({exc})"
            if want_download
            else "it is not on disk and --download was not given"
        )
        raise DatasetUnavailableError(
            f"torchvision:{name} is not available ({how}): place {_TV_FILES[name]} under "
            f"{where}, or pass --download (Python: download=True) on a machine with network "
            f"access, or give another root: torchvision:{name}:ROOT",
            detail=f"{type(exc).__name__}: {exc}",
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    channels = _TV_DATASETS[name]
    size = size or (28 if channels == 1 else 32)
    train_idx, val_idx, _ = _split(len(train_full), (0.9, 0.1), seed=1234)
    wrapped = _Resized(train_full, size, channels)
    return DataSplits(
        f"torchvision:{name}",
        Subset(wrapped, train_idx),
        Subset(wrapped, val_idx),
        _Resized(test, size, channels),
        len(train_full.classes),
        channels,
        size,
        list(train_full.classes),
        info={"root": str(where)},
    )


def load_data(
    spec: str,
    *,
    size: int | None = None,
    seed: int = 0,
    n: int | None = None,
    download: bool = False,
    offline: bool | None = None,
) -> DataSplits:
    """Train/val/test splits for a dataset spec (see the module docstring).

    Args:
        spec: ``partsworld``, ``digits``, ``folder:PATH`` or ``torchvision:NAME[:ROOT]``.
        size: image size (default per dataset: 64, 32, 64, 28/32).
        seed: PartsWorld's world seed (other specs split with a fixed permutation).
        n: PartsWorld training-set size (default 20,000; val and test a tenth, >= 500).
        download: allow torchvision downloads.
        offline: never download (default: ``INTERP_OFFLINE``).
    """
    if spec == "partsworld":
        return _partsworld(size, seed, n)
    if spec == "digits":
        return _digits(size, seed)
    if spec.startswith("folder:"):
        return _folder(spec.split(":", 1)[1], size, seed)
    if spec.startswith("torchvision:"):
        rest = spec.split(":", 2)
        return _torchvision(rest[1], rest[2] if len(rest) > 2 else None, size, download, offline)
    raise DatasetUnavailableError(f"unknown data spec {spec!r}: use one of {', '.join(DATA_SPECS)}")
