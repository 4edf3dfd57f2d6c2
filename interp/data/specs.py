"""The data registry: every data spec of interp, parsed in one place.

A spec is ``NAME[:ARG][?key=value&...]``. Each registered dataset says what it can give:

* **splits** (training, the experiments): :func:`load_data` → train/val/test;
* **images** (dataset examples, the unit card): :func:`data_images` → one split's images;
* **concepts** (dissection, the hierarchy): :func:`interp.data.concepts.load_concepts`.

``partsworld`` has one meaning everywhere: the PartsWorld *world* ``seed`` (default 0), whose
``train``, ``val`` and ``test`` splits are the PartsWorld seeds ``1_000_003 * seed + 1, 2, 3``
(so they never share an image). Jobs that look at images (examples, dissection, the
hierarchy) use its ``test`` split, which no ``interp train`` run of that world saw; give
``partsworld?split=val`` or ``partsworld?seed=2`` to choose another.

* ``partsworld[?seed=S&split=train|val|test]`` — procedural scenes with masks
  (:mod:`interp.data.partsworld`).
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
from ..models.download import DEFAULT_TIMEOUT, offline_requested
from .partsworld import CLASSES, PartsWorld
from .photos import PhotoCrops

__all__ = [
    "DATASETS",
    "DATA_SPECS",
    "DataSpec",
    "DataSplits",
    "DatasetUnavailableError",
    "data_images",
    "load_data",
    "parse_data_spec",
    "partsworld_seed",
]
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


_SPLITS = ("train", "val", "test")


def partsworld_seed(world: int = 0, split: str = "test") -> int:
    """The PartsWorld seed of ``split`` of world ``world`` (the one meaning of ``partsworld``)."""
    if split not in _SPLITS:
        raise DatasetUnavailableError(f"unknown split {split!r}: use train, val or test")
    return 1_000_003 * int(world) + 1 + _SPLITS.index(split)


def _partsworld(size: int | None, seed: int, n: int | None) -> DataSplits:
    size = size or 64
    n_train = n or 20_000
    n_eval = max(500, n_train // 10)
    seeds = [partsworld_seed(seed, split) for split in _SPLITS]
    return DataSplits(
        "partsworld",
        PartsWorld(n_train, size, seed=seeds[0]),
        PartsWorld(n_eval, size, seed=seeds[1]),
        PartsWorld(n_eval, size, seed=seeds[2]),
        len(CLASSES),
        3,
        size,
        list(CLASSES),
        info={"seeds": seeds},
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


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec: registry ``name``, its ``arg`` (a path, a dataset name) and
    ``options`` (``seed``, ``split``, ``n``...), and the text it came from."""

    name: str
    arg: str | None
    options: dict[str, str]
    text: str

    def option(self, key: str, default: Any = None, kind: type = str) -> Any:
        if key not in self.options:
            return default
        try:
            return kind(self.options[key])
        except ValueError:
            raise DatasetUnavailableError(
                f"data spec {self.text!r}: {key}={self.options[key]!r} is not a {kind.__name__}"
            ) from None


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: its spec syntax, what it is, and which uses it serves."""

    name: str
    usage: str
    description: str
    splits: bool = False  # training (load_data)
    images: bool = False  # dataset examples (data_images)
    concepts: bool = False  # dissection (load_concepts)
    options: tuple[str, ...] = ()


#: every data spec interp understands; the CLI's help and ``interp data`` list these
DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in (
        DatasetEntry(
            "partsworld",
            "partsworld[?seed=S&split=train|val|test]",
            "procedural scenes of 6 classes with colour, edge, part and object masks",
            splits=True,
            images=True,
            concepts=True,
            options=("seed", "split"),
        ),
        DatasetEntry(
            "digits",
            "digits[?split=train|val|test]",
            "scikit-learn's 1,797 handwritten digits (8x8, resized)",
            splits=True,
            images=True,
            options=("split",),
        ),
        DatasetEntry(
            "photos",
            "photos[?seed=S]",
            "random crops of the skimage.data photos",
            images=True,
            options=("seed",),
        ),
        DatasetEntry(
            "folder",
            "folder:PATH[?split=...]",
            "an ImageFolder: one sub-folder of images per class",
            splits=True,
            images=True,
            options=("split",),
        ),
        DatasetEntry(
            "torchvision",
            "torchvision:MNIST|FashionMNIST|CIFAR10[:ROOT][?split=...]",
            "torchvision's datasets, from ROOT (downloaded only with --download)",
            splits=True,
            images=True,
            options=("split",),
        ),
        DatasetEntry(
            "broden",
            "broden:PATH",
            "a folder in the Broden layout (index.csv, label.csv, images/)",
            concepts=True,
        ),
    )
}
DATA_SPECS = tuple(e.usage for e in DATASETS.values() if e.splits)


def parse_data_spec(spec: str, use: str | None = None) -> DataSpec:
    """Parse ``NAME[:ARG][?key=value&...]``; with ``use`` (``splits``, ``images`` or
    ``concepts``), check that the dataset serves it."""
    text = spec.strip()
    head, _, query = text.partition("?")
    name, _, arg = head.partition(":")
    entry = DATASETS.get(name)
    if entry is None:
        raise DatasetUnavailableError(
            f"unknown data spec {spec!r}: use one of "
            + ", ".join(e.usage for e in DATASETS.values() if use is None or getattr(e, use))
        )
    if use is not None and not getattr(entry, use):
        serve = [e.usage for e in DATASETS.values() if getattr(e, use)]
        what = {"splits": "training", "images": "dataset examples", "concepts": "dissection"}
        raise DatasetUnavailableError(
            f"{name} data cannot be used for {what.get(use, use)}: use one of {', '.join(serve)}"
        )
    options: dict[str, str] = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or key not in entry.options:
            allowed = ", ".join(entry.options) or "none"
            raise DatasetUnavailableError(
                f"data spec {spec!r}: unknown option {part!r} (options of {name}: {allowed})"
            )
        options[key] = value
    if name in ("folder", "torchvision", "broden") and not arg:
        raise DatasetUnavailableError(f"data spec {spec!r} needs an argument: {entry.usage}")
    spec_ = DataSpec(name, arg or None, options, text)
    if "split" in options and options["split"] not in _SPLITS:
        raise DatasetUnavailableError(f"data spec {spec!r}: split must be train, val or test")
    return spec_


def data_images(
    spec: str, *, size: int | None = None, n: int | None = None, seed: int = 0
) -> Dataset:
    """The images of a spec for dataset examples: one split (default ``test``) of a splits
    dataset, or the photo crops. ``seed`` is the world (partsworld) or crop (photos) seed
    unless the spec gives one; ``n`` caps the number of images."""
    parsed = parse_data_spec(spec, "images")
    split = parsed.option("split", "test")
    if parsed.name == "photos":
        return PhotoCrops(n or 1000, size or 224, seed=parsed.option("seed", seed, int))
    if parsed.name == "partsworld":
        world = parsed.option("seed", seed, int)
        return PartsWorld(n or 2000, size or 64, seed=partsworld_seed(world, split))
    base = parsed.text.partition("?")[0]
    images = getattr(load_data(base, size=size, seed=seed), split)
    if n is not None and n < len(images):
        images = Subset(images, range(n))
    return images


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
        spec: ``partsworld[?seed=S]``, ``digits``, ``folder:PATH`` or
            ``torchvision:NAME[:ROOT]`` (see :data:`DATASETS`).
        size: image size (default per dataset: 64, 32, 64, 28/32).
        seed: PartsWorld's world seed, unless the spec gives one (other specs split with a
            fixed permutation).
        n: PartsWorld training-set size (default 20,000; val and test a tenth, >= 500).
        download: allow torchvision downloads.
        offline: never download (default: ``INTERP_OFFLINE``).
    """
    parsed = parse_data_spec(spec, "splits")
    if "split" in parsed.options:
        raise DatasetUnavailableError(
            f"data spec {spec!r}: training uses all three splits; drop ?split="
        )
    if parsed.name == "partsworld":
        return _partsworld(size, parsed.option("seed", seed, int), n)
    if parsed.name == "digits":
        return _digits(size, seed)
    if parsed.name == "folder":
        return _folder(str(parsed.arg), size, seed)
    name, _, root = str(parsed.arg).partition(":")
    return _torchvision(name, root or None, size, download, offline)
