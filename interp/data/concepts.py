"""Datasets with concept masks, for Network Dissection.

A :class:`ConceptData` is a random-access dataset whose item ``i`` is a
:class:`ConceptItem`: the image (3, H, W) in [0, 1], its class label (-1 when unknown), the
masks of the concepts present in it (sparse: only those), and which categories are labelled
for it (an image without part annotation must not count against part detectors).

Two sources:

* ``partsworld`` — :class:`PartsWorldConcepts`, the procedural world with colour, edge, part
  and object masks (every category labelled in every image);
* ``broden:PATH`` — :class:`BrodenConcepts`, a folder in the Broden layout of Network
  Dissection (Bau et al. 2017): ``index.csv`` with the columns
  ``image,split,ih,iw,sh,sw,<category>...``, where a category cell holds ``;``-separated
  mask files (the label of a pixel is ``red + 256 * green``) or decimal numbers (image-level
  labels, e.g. scene and texture, which apply to every pixel); ``label.csv`` with
  ``number,name,...`` gives the names; images under ``images/``. Broden itself and
  PASCAL-Part exported in this layout run through the same code.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import InterpError
from .images import load_image
from .partsworld import CLASSES, PartsWorld
from .specs import DatasetUnavailableError, parse_data_spec, partsworld_seed

__all__ = [
    "BrodenConcepts",
    "ConceptData",
    "ConceptItem",
    "PartsWorldConcepts",
    "load_concepts",
]


class ConceptDataError(InterpError, ValueError):
    """A concept dataset is missing, malformed or inconsistent."""


@dataclass
class ConceptItem:
    """One image with its concept masks.

    ``masks`` is ``(P, S, S)`` bool (the ``P`` concepts present, at the dataset's mask size),
    ``concepts`` their indices into the dataset's concept list, ``labelled`` one bool per
    category (whether the image is annotated for it).
    """

    image: torch.Tensor
    label: int
    concepts: torch.Tensor
    masks: torch.Tensor
    labelled: torch.Tensor


class ConceptData:
    """Base class: ``concepts`` ``[(category, name)]``, ``categories``, ``mask_size``."""

    concepts: list[tuple[str, str]]
    categories: list[str]
    class_names: list[str]
    mask_size: int
    image_size: int
    name: str

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def item(self, index: int, masks: bool = True) -> ConceptItem:  # pragma: no cover
        raise NotImplementedError

    def concept_names(self) -> list[str]:
        """``category:name`` of every concept."""
        return [f"{c}:{n}" for c, n in self.concepts]

    def category_of(self) -> np.ndarray:
        """Index into ``categories`` of every concept."""
        return np.array([self.categories.index(c) for c, _ in self.concepts], dtype=np.int64)


class PartsWorldConcepts(ConceptData):
    """PartsWorld scenes with their colour, edge, part and object masks.

    The default world seed (3, as the ``test`` split of the ``partsworld`` data spec with seed
    0) is one a PartsWorld CNN trained by ``interp train`` never saw. Masks are drawn at the
    image size and, as in Broden (224 px images, 112 px masks), kept at half of it for images
    above 64 px (``mask_size``): a mask pixel is set when most of its block is (any of it, for
    the thin edge masks).

    Drawn scenes are kept in memory up to :attr:`memo_bytes`: a hierarchy check reads each
    one about ten times (two dissection passes per network, the BatchNorm statistics of every
    control), and drawing was a tenth of its time.
    """

    #: bytes of drawn scenes kept in memory (1,000 scenes of 128 px with their masks: ~240 MB)
    memo_bytes: int = 256 * 2**20

    def __init__(
        self, n: int = 1000, size: int = 64, seed: int = 3, mask_size: int | None = None
    ) -> None:
        self.world = PartsWorld(n, size, seed=seed)
        self.concepts = PartsWorld.concepts()
        self.categories = ["colour", "edge", "part", "object"]
        self.class_names = list(CLASSES)
        self.mask_size = int(mask_size or (size if size <= 64 else size // 2))
        if size % self.mask_size:
            raise ConceptDataError(f"mask size {self.mask_size} must divide the image size {size}")
        self.image_size = size
        self.name = f"partsworld(n={n}, size={size}, seed={seed})"
        self._index = {f"{c}:{n}": i for i, (c, n) in enumerate(self.concepts)}
        self._memo: dict[int, tuple[ConceptItem, bool]] = {}  # index -> (item, has masks)
        self._memo_used = 0

    def __len__(self) -> int:
        return len(self.world)

    def item(self, index: int, masks: bool = True) -> ConceptItem:
        """Scene ``index`` with its concept masks (``masks=False``: the image and label only).
        Drawn once while the memo has room (:attr:`memo_bytes`); every call returns its own
        tensors, so a caller that edits them in place changes no later item."""
        kept, has_masks = self._memo.get(index, (None, False))
        if kept is None or (masks and not has_masks):
            kept, has_masks = self._draw(index, masks), masks
            self._remember(index, kept, has_masks)
        if has_masks and not masks:
            kept = _without_masks(kept.image, kept.label, self.mask_size)
        return ConceptItem(
            kept.image.clone(),
            kept.label,
            kept.concepts.clone(),
            kept.masks.clone(),
            kept.labelled.clone(),
        )

    def _remember(self, index: int, item: ConceptItem, has_masks: bool) -> None:
        def nbytes(i: ConceptItem) -> int:
            return i.image.nbytes + i.masks.nbytes + i.concepts.nbytes

        old = self._memo.get(index)
        freed = 0 if old is None else nbytes(old[0])
        if self._memo_used - freed + nbytes(item) <= self.memo_bytes:
            self._memo[index] = (item, has_masks)
            self._memo_used += nbytes(item) - freed

    def _draw(self, index: int, masks: bool) -> ConceptItem:
        if not masks:
            image, label = self.world[index]
            return _without_masks(image, label, self.mask_size)
        s = self.world.sample(index)
        keys = [k for k in s.masks if k in self._index]
        f = self.image_size // self.mask_size
        arrays = []
        for k in keys:
            m = s.masks[k]
            if f > 1:
                blocks = m.reshape(self.mask_size, f, self.mask_size, f)
                m = (
                    blocks.any(axis=(1, 3))
                    if k.startswith("edge:")
                    else blocks.mean(axis=(1, 3)) >= 0.5
                )
            arrays.append(m)
        stack = (
            torch.from_numpy(np.stack(arrays))
            if keys
            else torch.zeros(0, self.mask_size, self.mask_size, dtype=torch.bool)
        )
        idx = torch.tensor([self._index[k] for k in keys], dtype=torch.long)
        return ConceptItem(torch.from_numpy(s.image), s.label, idx, stack, _ones(4))


def _without_masks(image: torch.Tensor, label: int, mask_size: int) -> ConceptItem:
    empty = torch.zeros(0, mask_size, mask_size, dtype=torch.bool)
    return ConceptItem(image, label, torch.zeros(0, dtype=torch.long), empty, _ones(4))


def _ones(n: int) -> torch.Tensor:
    return torch.ones(n, dtype=torch.bool)


_INDEX_FIXED = ("image", "split", "ih", "iw", "sh", "sw")


class BrodenConcepts(ConceptData):
    """A dataset in the Broden layout (see the module docstring).

    Args:
        root: the folder holding ``index.csv``, ``label.csv`` and ``images/``.
        size: the image size the model gets (images are resized to ``size`` x ``size``).
        mask_size: masks are resized (nearest) to this size (default: the first row's ``sh``).
        split: keep only rows of this split (``None``: all).
        limit: keep the first ``limit`` rows.
        categories: keep only these categories (default: all columns after ``sw``).
        min_images: concepts present in fewer images are dropped (Network Dissection used 10).
    """

    def __init__(
        self,
        root: str | Path,
        size: int = 224,
        *,
        mask_size: int | None = None,
        split: str | None = None,
        limit: int | None = None,
        categories: list[str] | None = None,
        min_images: int = 1,
    ) -> None:
        self.root = Path(root).expanduser()
        index_path = self.root / "index.csv"
        if not index_path.is_file():
            raise ConceptDataError(
                f"{self.root} is not a Broden-layout folder: {index_path} is missing "
                "(expected index.csv, label.csv and images/; see `interp hierarchy --help`)"
            )
        with open(index_path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in _INDEX_FIXED if c not in header]
            if missing:
                raise ConceptDataError(f"{index_path}: missing column(s) {', '.join(missing)}")
            rows = [r for r in reader if split is None or r["split"] == split]
        if limit is not None:
            rows = rows[:limit]
        if not rows:
            raise ConceptDataError(f"{index_path}: no rows (split={split!r})")
        all_categories = [c for c in header if c not in _INDEX_FIXED]
        if categories is not None:
            unknown = [c for c in categories if c not in all_categories]
            if unknown:
                raise ConceptDataError(
                    f"{index_path}: no category {', '.join(unknown)}; it has "
                    f"{', '.join(all_categories)}"
                )
        self.categories = list(categories or all_categories)
        self.rows = rows
        self.image_size = int(size)
        self.mask_size = int(mask_size or int(rows[0]["sh"]))
        self.names = self._label_names()
        self.class_names = []
        self.name = f"broden:{self.root} ({len(rows)} images)"
        # one scan over the labels of every row (reads the pixel-label files once) to find the
        # concepts present: (category, label number) pairs
        counts: dict[tuple[str, int], int] = {}
        self._row_labels: list[dict[str, list[tuple[str, int | str]]]] = []
        for row in rows:
            per_cat: dict[str, list[tuple[str, int | str]]] = {}
            for cat in self.categories:
                entries = []
                for cell in filter(None, (row.get(cat) or "").split(";")):
                    cell = cell.strip()
                    if cell.isdigit():
                        entries.append(("image", int(cell)))
                        found = {int(cell)}
                    else:
                        entries.append(("pixels", cell))
                        found = set(np.unique(self._read_labels(cell)).tolist()) - {0}
                    for number in found:
                        counts[(cat, number)] = counts.get((cat, number), 0) + 1
                per_cat[cat] = entries
            self._row_labels.append(per_cat)
        keys = sorted(
            (k for k, v in counts.items() if v >= min_images),
            key=lambda k: (self.categories.index(k[0]), k[1]),
        )
        self._keys = {k: i for i, k in enumerate(keys)}
        self.concepts = [(cat, self.names.get(num, f"label{num}")) for cat, num in keys]

    def _label_names(self) -> dict[int, str]:
        path = self.root / "label.csv"
        if not path.is_file():
            return {}
        with open(path, newline="") as handle:
            return {int(r["number"]): r["name"] for r in csv.DictReader(handle) if r.get("number")}

    def _read_labels(self, relative: str) -> np.ndarray:
        from PIL import Image

        path = self.root / "images" / relative
        try:
            with Image.open(path) as img:
                rgb = np.asarray(img.convert("RGB"), dtype=np.int64)
        except (OSError, ValueError) as exc:
            raise ConceptDataError(f"cannot read the label image {path}: {exc}") from exc
        return rgb[..., 0] + 256 * rgb[..., 1]

    def __len__(self) -> int:
        return len(self.rows)

    def item(self, index: int, masks: bool = True) -> ConceptItem:
        row = self.rows[index]
        pil = load_image(self.root / "images" / row["image"])
        image = torch.from_numpy(
            np.asarray(pil.resize((self.image_size,) * 2, resample=2), dtype=np.float32) / 255.0
        ).permute(2, 0, 1)
        labelled = torch.tensor([bool(self._row_labels[index][c]) for c in self.categories])
        s = self.mask_size
        found: dict[int, torch.Tensor] = {}
        if masks:
            for cat in self.categories:
                for kind, value in self._row_labels[index][cat]:
                    if kind == "image":
                        key = self._keys.get((cat, int(value)))
                        if key is not None:
                            found[key] = torch.ones(s, s, dtype=torch.bool)
                        continue
                    labels = torch.from_numpy(self._read_labels(str(value)))
                    if labels.shape != (s, s):
                        labels = torch.nn.functional.interpolate(
                            labels[None, None].float(), size=(s, s), mode="nearest"
                        )[0, 0].long()
                    for number in torch.unique(labels).tolist():
                        key = self._keys.get((cat, int(number)))
                        if number and key is not None:
                            mask = labels == number
                            found[key] = found[key] | mask if key in found else mask
        keys = sorted(found)
        stack = torch.stack([found[k] for k in keys]) if keys else torch.zeros(0, s, s).bool()
        return ConceptItem(image, -1, torch.tensor(keys, dtype=torch.long), stack, labelled)


def load_concepts(spec: str, *, size: int | None = None, n: int | None = None) -> ConceptData:
    """A concept dataset from a spec of the data registry (:mod:`interp.data.specs`).

    Args:
        spec: ``partsworld[?seed=S&split=...]`` (default: the test split of world 0, PartsWorld
            seed 3, which no ``interp train`` run of world 0 saw) or ``broden:PATH``.
        size: image size (PartsWorld default 64, Broden default 224).
        n: number of images (PartsWorld default 1,000; Broden: all rows).
    """
    try:
        parsed = parse_data_spec(spec, "concepts")
    except DatasetUnavailableError as exc:
        raise ConceptDataError(
            f"{exc} (Broden: a folder in the Broden layout: index.csv, label.csv, images/)"
        ) from None
    if parsed.name == "partsworld":
        seed = partsworld_seed(parsed.option("seed", 0, int), parsed.option("split", "test"))
        return PartsWorldConcepts(n=n or 1000, size=size or 64, seed=seed)
    return BrodenConcepts(str(parsed.arg), size=size or 224, limit=n)
