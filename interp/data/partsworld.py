"""PartsWorld: procedurally drawn scenes with ground-truth colour, edge, part and object masks.

Network Dissection needs images whose parts are known; Broden and PASCAL-Part cannot be had
offline, so interp draws its own world. Each scene holds one object of six classes (face,
car, house, flower, robot, boat) built from part types, some of whose *shapes* are shared
between classes — a disc is an eye on a face or a robot, a wheel on a car, a pistil on a
flower; a triangle is a roof, a sail or a nose — so only a part's context tells what it is.
Position, scale, rotation and every colour are random and independent of the class; the
background is textured and cluttered with distractor shapes that belong to no object, and
objects are sometimes partly occluded.

Every sample is a pure function of ``(seed, index)`` (random access, nothing stored). Masks
come in four categories, as in Network Dissection's Broden:

* ``colour:<name>`` — pixels drawn in one of the named palette colours;
* ``edge:<angle>`` — thin masks along the contours between drawn regions, binned by the
  contour's orientation (0, 45, 90, 135 degrees);
* ``part:<type>`` — the visible pixels of each part type of the object;
* ``object:<class>`` — the visible pixels of the whole object.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..utils import atomic_path

__all__ = [
    "CLASSES",
    "COLOURS",
    "EDGE_BINS",
    "PART_TYPES",
    "PartsWorld",
    "Sample",
    "partsworld_tensors",
]

CLASSES = ("face", "car", "house", "flower", "robot", "boat")
PART_TYPES = (
    "eye",
    "mouth",
    "nose",
    "wheel",
    "window",
    "door",
    "roof",
    "petal",
    "pistil",
    "stem",
    "antenna",
    "head",
    "sail",
    "mast",
    "hull",
    "body",
)
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.12),
    "orange": (0.95, 0.55, 0.1),
    "yellow": (0.95, 0.9, 0.15),
    "green": (0.15, 0.7, 0.2),
    "cyan": (0.15, 0.8, 0.85),
    "blue": (0.15, 0.25, 0.85),
    "purple": (0.55, 0.2, 0.75),
    "pink": (0.95, 0.55, 0.75),
    "brown": (0.5, 0.3, 0.12),
    "white": (0.95, 0.95, 0.95),
    "grey": (0.5, 0.5, 0.5),
    "black": (0.08, 0.08, 0.08),
}
EDGE_BINS = (0, 45, 90, 135)
_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)

# per-class size factors that give every class about the same mean visible area (measured
# on 1,200 scenes), so that the amount of object colour does not tell the class
_AREA_SCALE = {
    "face": 0.81,
    "car": 0.92,
    "house": 0.86,
    "flower": 1.35,
    "robot": 1.12,
    "boat": 1.31,
}

# shape predicates in a part's local frame (u, v), unit size
_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "disc": lambda u, v: u * u + v * v <= 1.0,
    "box": lambda u, v: (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0),
    "triangle": lambda u, v: (v <= 1.0) & (v >= 2.0 * np.abs(u) - 1.0),
    "trapezoid": lambda u, v: (np.abs(v) <= 1.0) & (np.abs(u) <= 0.75 + 0.25 * v),
}


@dataclass(frozen=True)
class _Part:
    """A part in the object's frame: type, shape, centre (x, y), half-size (w, h), angle."""

    kind: str
    shape: str
    x: float
    y: float
    w: float
    h: float
    angle: float = 0.0
    colour_group: str = ""


def _layout(cls: str, rng: np.random.Generator) -> list[_Part]:
    """The parts of one object of class ``cls`` in its unit frame (object radius about 1)."""
    j = lambda s=0.06: float(rng.normal(0.0, s))  # noqa: E731  small shape variation
    if cls == "face":
        parts = [_Part("body", "disc", 0, 0, 0.85 + j(), 1.0 + j())]
        ex, ey, er = 0.35 + j(), -0.25 + j(), 0.16 + j(0.02)
        parts += [
            _Part("eye", "disc", -ex, ey, er, er, 0, "eye"),
            _Part("eye", "disc", ex, ey, er, er, 0, "eye"),
        ]
        parts += [_Part("nose", "triangle", 0, 0.1 + j(), 0.12, 0.15)]
        parts += [_Part("mouth", "box", 0, 0.5 + j(), 0.35 + j(), 0.07)]
    elif cls == "car":
        parts = [_Part("body", "box", 0, 0, 1.0, 0.35 + j(), 0, "body")]
        parts += [
            _Part("window", "box", -0.35, -0.42, 0.22, 0.12, 0, "window"),
            _Part("window", "box", 0.3, -0.42, 0.22, 0.12, 0, "window"),
        ]
        parts += [_Part("body", "box", 0, -0.42, 0.7, 0.2, 0, "body")]
        wr = 0.24 + j(0.02)
        parts += [
            _Part("wheel", "disc", -0.6, 0.38, wr, wr, 0, "wheel"),
            _Part("wheel", "disc", 0.6, 0.38, wr, wr, 0, "wheel"),
        ]
        # windows sit on the cabin: draw the cabin first
        parts = [parts[0], parts[3], parts[1], parts[2], parts[4], parts[5]]
    elif cls == "house":
        parts = [_Part("body", "box", 0, 0.25, 0.75 + j(), 0.6)]
        parts += [_Part("roof", "triangle", 0, -0.6, 0.95 + j(), 0.3 + j())]
        parts += [_Part("door", "box", 0.0, 0.62, 0.15, 0.23)]
        parts += [
            _Part("window", "box", -0.42, 0.1, 0.15, 0.14, 0, "window"),
            _Part("window", "box", 0.42, 0.1, 0.15, 0.14, 0, "window"),
        ]
    elif cls == "flower":
        n = int(rng.integers(5, 8))
        parts = [_Part("stem", "box", 0, 0.7, 0.06, 0.45)]
        for k in range(n):
            a = 2 * math.pi * k / n
            parts.append(
                _Part(
                    "petal",
                    "disc",
                    0.45 * math.sin(a),
                    -0.15 - 0.45 * math.cos(a),
                    0.28,
                    0.14,
                    a + math.pi / 2,
                    "petal",
                )
            )
        parts.append(_Part("pistil", "disc", 0, -0.15, 0.2, 0.2))
    elif cls == "robot":
        parts = [_Part("body", "box", 0, 0.35, 0.5 + j(), 0.45)]
        parts += [_Part("head", "box", 0, -0.4, 0.35, 0.28)]
        parts += [_Part("antenna", "box", 0, -0.8, 0.04, 0.14, 0, "antenna")]
        parts += [_Part("antenna", "disc", 0, -0.95, 0.08, 0.08, 0, "antenna")]
        er = 0.09
        parts += [
            _Part("eye", "disc", -0.15, -0.43, er, er, 0, "eye"),
            _Part("eye", "disc", 0.15, -0.43, er, er, 0, "eye"),
        ]
        parts += [_Part("mouth", "box", 0, -0.25, 0.15, 0.04)]
    elif cls == "boat":
        parts = [_Part("hull", "trapezoid", 0, 0.55, 0.95 + j(), 0.22)]
        parts += [_Part("mast", "box", 0.0, -0.1, 0.04, 0.5)]
        parts += [_Part("sail", "triangle", 0.35, -0.15, 0.3, 0.45, -math.pi / 2 * 0)]
        parts += [_Part("window", "disc", -0.45, 0.5, 0.07, 0.07, 0, "window")]
    else:  # pragma: no cover
        raise KeyError(cls)
    return parts


@dataclass
class Sample:
    """One PartsWorld scene: ``image`` (3, H, W) float32 in [0, 1], ``label``, and ``masks``
    (concept name -> (H, W) bool array, only concepts present in the scene)."""

    image: np.ndarray
    label: int
    masks: dict[str, np.ndarray]

    @property
    def class_name(self) -> str:
        """The class as a word."""
        return CLASSES[self.label]


class PartsWorld(torch.utils.data.Dataset):
    """``n`` procedurally drawn scenes of ``size`` pixels, deterministic per ``(seed, i)``.

    ``dataset[i]`` gives ``(image tensor (3, H, W), label)`` for training;
    :meth:`sample` gives the image, label and all concept masks. With ``cache_dir``, every
    generated scene is also stored there (one ``.npz`` per scene, written atomically) and
    read back instead of being drawn again.
    """

    classes = CLASSES

    def __init__(
        self,
        n: int = 10_000,
        size: int = 64,
        seed: int = 0,
        *,
        distractors: tuple[int, int] = (2, 5),
        occlusion: float = 0.2,
        noise: float = 0.02,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.n = int(n)
        self.size = int(size)
        self.seed = int(seed)
        self.distractors = distractors
        self.occlusion = occlusion
        self.noise = noise
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        self._xs, self._ys = xs + 0.5, ys + 0.5
        self.cache: Path | None = None
        if cache_dir is not None:  # one folder per world: every parameter is in its name
            key = f"pw-s{seed}-{size}px-d{distractors[0]}_{distractors[1]}-o{occlusion}-n{noise}"
            self.cache = Path(cache_dir) / key
            self.cache.mkdir(parents=True, exist_ok=True)

    def __len__(self) -> int:
        return self.n

    @staticmethod
    def concepts() -> list[tuple[str, str]]:
        """Every concept as ``(category, name)``, in a fixed order."""
        out = [("colour", c) for c in COLOURS]
        out += [("edge", str(b)) for b in EDGE_BINS]
        out += [("part", p) for p in PART_TYPES]
        out += [("object", c) for c in CLASSES]
        return out

    # ------------------------------------------------------------------------------ drawing
    def _shape_mask(
        self, shape: str, cx: float, cy: float, w: float, h: float, angle: float
    ) -> np.ndarray:
        c, s = math.cos(angle), math.sin(angle)
        dx, dy = self._xs - cx, self._ys - cy
        u = (c * dx + s * dy) / max(w, 0.5)
        v = (-s * dx + c * dy) / max(h, 0.5)
        return _SHAPES[shape](u, v)

    def _draw(self, index: int, with_masks: bool) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for PartsWorld of {self.n} images")
        rng = np.random.default_rng([self.seed, index])
        size = self.size
        label = int(rng.integers(len(CLASSES)))
        cls = CLASSES[label]
        colours = rng.permutation(len(_PALETTE))  # colours are independent of the class
        take = iter(colours.tolist())

        # background: a palette colour with a soft texture of a second one
        bg, tex = next(take), next(take)
        freq = rng.uniform(0.1, 0.5)
        theta = rng.uniform(0, math.pi)
        wave = 0.5 + 0.5 * np.sin(
            freq * (self._xs * math.cos(theta) + self._ys * math.sin(theta))
            + rng.uniform(0, 2 * math.pi)
        )
        alpha = (rng.uniform(0.1, 0.35) * wave)[None]
        image = (1 - alpha) * _PALETTE[bg][:, None, None] + alpha * _PALETTE[tex][:, None, None]
        segments = np.zeros((size, size), dtype=np.int32)  # which drawn region owns a pixel
        colour_of = np.full((size, size), -1, dtype=np.int32)  # palette index, -1: texture
        part_of = np.full((size, size), -1, dtype=np.int32)  # part type, -1: none
        in_object = np.zeros((size, size), dtype=bool)
        next_id = 1

        def paint(mask: np.ndarray, colour: int, part: int = -1, obj: bool = False) -> None:
            nonlocal next_id
            image[:, mask] = _PALETTE[colour][:, None]
            segments[mask] = next_id
            colour_of[mask] = colour
            part_of[mask] = part
            in_object[mask] = obj
            next_id += 1

        # distractors: loose shapes that belong to no object
        remaining = colours.tolist()
        for _ in range(int(rng.integers(self.distractors[0], self.distractors[1] + 1))):
            shape = str(rng.choice(list(_SHAPES)))
            r = rng.uniform(0.04, 0.1) * size
            paint(
                self._shape_mask(
                    shape,
                    rng.uniform(0, size),
                    rng.uniform(0, size),
                    r,
                    r * rng.uniform(0.5, 1.5),
                    rng.uniform(0, math.pi),
                ),
                int(rng.choice(remaining)),
            )

        # the object, with its own random frame
        radius = rng.uniform(0.22, 0.32) * size * _AREA_SCALE[cls]
        margin = min(radius, size / 2)
        cx = rng.uniform(margin, size - margin)
        cy = rng.uniform(margin, size - margin)
        angle = rng.uniform(-0.5, 0.5)
        ca, sa = math.cos(angle), math.sin(angle)
        group_colour: dict[str, int] = {}
        for part in _layout(cls, rng):
            key = part.colour_group or f"{part.kind}-{part.x}-{part.y}"
            if key not in group_colour:  # each part group its own colour, never the background
                group_colour[key] = next(take)
            px = cx + radius * (ca * part.x - sa * part.y)
            py = cy + radius * (sa * part.x + ca * part.y)
            mask = self._shape_mask(
                part.shape, px, py, radius * part.w, radius * part.h, angle + part.angle
            )
            paint(mask, group_colour[key], PART_TYPES.index(part.kind), True)

        if rng.random() < self.occlusion:  # an occluder over part of the object
            shape = str(rng.choice(["box", "disc"]))
            r = rng.uniform(0.15, 0.3) * size
            ox = cx + rng.uniform(-1, 1) * radius
            oy = cy + rng.uniform(-1, 1) * radius
            paint(
                self._shape_mask(
                    shape, ox, oy, r, r * rng.uniform(0.4, 1.0), rng.uniform(0, math.pi)
                ),
                int(rng.choice(colours)),
            )

        if self.noise:
            image = image + rng.normal(0, self.noise, image.shape).astype(np.float32)
        image = np.clip(image, 0, 1).astype(np.float32)
        masks: dict[str, np.ndarray] = {}
        if with_masks:
            names = list(COLOURS)
            for idx in np.unique(colour_of):
                if idx >= 0:
                    masks[f"colour:{names[idx]}"] = colour_of == idx
            for idx in np.unique(part_of):
                if idx >= 0:
                    masks[f"part:{PART_TYPES[idx]}"] = part_of == idx
            if in_object.any():
                masks[f"object:{cls}"] = in_object.copy()
            masks.update(_edge_masks(segments))
        return Sample(image=image, label=label, masks=masks)

    def sample(self, index: int) -> Sample:
        """Image, label and every concept mask of scene ``index`` (from the disk cache when
        one is set and holds it; written there atomically otherwise)."""
        if self.cache is None:
            return self._draw(index, with_masks=True)
        path = self.cache / f"{index:08d}.npz"
        if path.is_file():
            with np.load(path) as data:
                masks = {k[5:].replace("__", ":"): data[k] for k in data.files if k[:5] == "mask_"}
                return Sample(image=data["image"], label=int(data["label"]), masks=masks)
        sample = self._draw(index, with_masks=True)

        arrays = {f"mask_{k.replace(':', '__')}": v for k, v in sample.masks.items()}
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
            np.savez_compressed(handle, image=sample.image, label=sample.label, **arrays)
        return sample

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if self.cache is not None:
            s = self.sample(int(index))
        else:
            s = self._draw(int(index), with_masks=False)
        return torch.from_numpy(s.image), s.label


# offsets of a 5x5 neighbourhood (without the centre), for boundary orientation
_OFFSETS = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if (dy, dx) != (0, 0)]


def _edge_masks(segments: np.ndarray) -> dict[str, np.ndarray]:
    """Contours between regions, one mask per orientation bin.

    A pixel is on a contour when a 4-neighbour belongs to another region. Its contour normal
    is the mean offset towards the 5x5 neighbours that belong to other regions; the contour's
    orientation is perpendicular to it, binned to 0/45/90/135 degrees (0 = horizontal).
    """
    pad = np.pad(segments, 2, mode="edge")
    h, w = segments.shape
    centre = pad[2 : 2 + h, 2 : 2 + w]
    edge = np.zeros((h, w), dtype=bool)
    gx = np.zeros((h, w), dtype=np.float32)
    gy = np.zeros((h, w), dtype=np.float32)
    for dy, dx in _OFFSETS:
        other = pad[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w] != centre
        if abs(dy) + abs(dx) == 1:
            edge |= other
        norm = math.hypot(dx, dy)
        gx += other * (dx / norm)
        gy += other * (dy / norm)
    # image y grows downwards: flip it so angles are the usual counter-clockwise ones
    normal = np.degrees(np.arctan2(-gy, gx))
    orientation = (normal + 90.0) % 180.0
    bins = np.round(orientation / 45.0).astype(int) % 4
    return {
        f"edge:{EDGE_BINS[b]}": edge & (bins == b) for b in range(4) if (edge & (bins == b)).any()
    }


def partsworld_tensors(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` scenes of the world ``seed`` as one batch: ``[0, 1]`` images
    ``(n, 3, size, size)`` and labels ``(n,)`` int64 (the loader every experiment uses)."""
    world = PartsWorld(n, size, seed)
    items = [world[i] for i in range(n)]
    return torch.stack([im for im, _ in items]), torch.tensor([lab for _, lab in items])
