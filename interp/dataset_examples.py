"""Dataset examples: the real images that excite each unit most, and where in them.

People predict which image activates a unit better from natural dataset examples than from
feature visualizations (Borowski et al., ICLR 2021), so interp shows both. One streaming pass
over a dataset serves every requested layer at once (one truncated forward per batch); for
every unit it keeps the top-``k`` images by the unit's maximal activation over positions
(optionally also the bottom-``k`` by its minimum), the position of that maximum, and the
receptive-field box around it. Memory is ``O(units * k)``, not ``O(dataset)``.

With ``dedup`` (default), an image *source* contributes at most one entry to a unit's top-k:
for ``photos`` the source is the photo, so one photo's many crops cannot fill it; for other
datasets every image is its own source.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .activations import ActivationCapture, resolve_layers
from .checks import check_finite, check_int
from .data.specs import data_images
from .device import HalveOnOOM, default_batch, keeps_freed_memory, use_bf16
from .errors import InterpError
from .inventory import default_layers
from .inventory import layers as inventory
from .models.base import Model
from .models.registry import as_model
from .settings import EXAMPLES
from .streaming import Stream, object_state, restore_object
from .utils import atomic_path, atomic_write_text, prepare_output

__all__ = [
    "Examples",
    "LayerExamples",
    "RunningTopK",
    "Units",
    "crop",
    "examples",
    "examples_data",
]

#: which units a grid or a JSON record shows: all (``None``), the same channels in every
#: layer, or each layer its own (``{layer: channels}``)
Units = Sequence[int] | Mapping[str, Sequence[int]] | None


class RunningTopK:
    """The ``k`` largest values per unit over a stream, with their item, source and position;
    with ``dedup``, at most one entry per source (its best). Ties keep the earlier item.
    ``largest=False`` keeps the ``k`` smallest instead. Rows with fewer than ``k`` entries
    (few sources so far) are padded with item ``-1``.
    """

    def __init__(self, units: int, k: int, *, largest: bool = True, dedup: bool = True):
        self.k, self.largest, self.dedup = int(k), largest, dedup
        self.key = torch.full((units, 0), -math.inf)  # value, or -value for the smallest
        self.items = torch.empty(units, 0, dtype=torch.long)
        self.sources = torch.empty(units, 0, dtype=torch.long)
        self.positions = torch.empty(units, 0, dtype=torch.long)

    def update(
        self,
        values: torch.Tensor,
        items: torch.Tensor,
        sources: torch.Tensor,
        positions: torch.Tensor,
    ) -> None:
        """Add a batch: ``values``/``positions`` ``(units, B)``, ``items``/``sources`` ``(B,)``."""
        units = values.shape[0]
        new = values.detach().float().cpu()
        key = torch.cat([self.key, new if self.largest else -new], dim=1)
        its = torch.cat([self.items, items.cpu().expand(units, -1)], dim=1)
        srcs = torch.cat([self.sources, sources.cpu().expand(units, -1)], dim=1)
        pos = torch.cat([self.positions, positions.cpu()], dim=1)
        self._select(key, its, srcs, pos)

    def _select(
        self, key: torch.Tensor, its: torch.Tensor, srcs: torch.Tensor, pos: torch.Tensor
    ) -> None:
        # best first, ties by item index (what streaming the items in order keeps)
        by_item = torch.argsort(torch.where(its < 0, its.max() + 1, its), dim=1, stable=True)
        key, its, srcs, pos = (t.gather(1, by_item) for t in (key, its, srcs, pos))
        order = torch.argsort(key, dim=1, descending=True, stable=True)
        key, its, srcs, pos = (t.gather(1, order) for t in (key, its, srcs, pos))
        if self.dedup:
            # a stable sort by source keeps the best-first order inside each source's group;
            # every entry after the first of its group is dropped (key -inf sorts it last)
            by_src = torch.argsort(srcs, dim=1, stable=True)
            grouped = srcs.gather(1, by_src)
            first = torch.ones_like(grouped, dtype=torch.bool)
            first[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
            keep = torch.zeros_like(first).scatter_(1, by_src, first) & (its >= 0)
            key = key.masked_fill(~keep, -math.inf)
            order = torch.argsort(key, dim=1, descending=True, stable=True)
            key, its, srcs, pos = (t.gather(1, order) for t in (key, its, srcs, pos))
        key, its, srcs, pos = (t[:, : self.k] for t in (key, its, srcs, pos))
        invalid = torch.isinf(key) & (key < 0)
        self.key = key
        self.items = its.masked_fill(invalid, -1)
        self.sources = srcs.masked_fill(invalid, -1)
        self.positions = pos.masked_fill(invalid, -1)

    def merge(self, others: list[RunningTopK]) -> None:
        """Merge other ranks' lists into this one, exactly as one process would have kept."""
        parts = [self, *others]
        self._select(
            torch.cat([p.key for p in parts], dim=1),
            torch.cat([p.items for p in parts], dim=1),
            torch.cat([p.sources for p in parts], dim=1),
            torch.cat([p.positions for p in parts], dim=1),
        )

    def result(self) -> torch.Tensor:
        """``(units, k)`` activation values (``nan`` where a row has fewer entries); their
        items, sources and positions are :attr:`items`, :attr:`sources` and
        :attr:`positions` (the read of every streaming accumulator is ``result()``)."""
        v = self.key if self.largest else -self.key
        return v.masked_fill(self.items < 0, math.nan)

    @property
    def values(self) -> torch.Tensor:
        """Deprecated: :meth:`result`."""
        warnings.warn(
            "RunningTopK.values is deprecated: use RunningTopK.result()",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.result()


def examples_data(
    spec: str | Dataset, *, size: int | None = None, n: int | None = None, seed: int = 0
) -> Dataset:
    """A dataset of ``(image in [0, 1], label)`` for a spec (the data registry's images:
    :func:`interp.data.specs.data_images`): ``photos`` (random crops of the skimage photos,
    default 1,000 at ``size``), ``partsworld`` (default 2,000 scenes of its test split, a world
    no ``interp train`` run saw), or any :func:`~interp.data.load_data` spec (its test split).
    A dataset is returned as it is.
    """
    if not isinstance(spec, str):
        return spec
    return data_images(spec, size=size, n=n, seed=seed)


def _source(data: Dataset, index: int) -> int:
    fn = getattr(data, "source", None)
    return int(fn(index)) if callable(fn) else index


@dataclass
class LayerExamples:
    """Top (and optionally bottom) dataset examples of every unit of one layer."""

    layer: str
    k: int
    grid: tuple[int, int]  # the layer's (h, w)
    image_size: tuple[int, int]
    rf_size: int
    top: RunningTopK
    bottom: RunningTopK | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def units(self) -> int:
        return int(self.top.items.shape[0])

    def box(self, position: int) -> list[int]:
        """Receptive-field box ``[x0, y0, x1, y1]`` (input pixels, clipped) of a position."""
        h, w = self.grid
        big_h, big_w = self.image_size
        y, x = divmod(int(position), w)
        cy = (y + 0.5) * big_h / h - 0.5
        cx = (x + 0.5) * big_w / w - 0.5
        half = self.rf_size / 2.0
        return [
            max(0, int(math.floor(cx - half + 0.5))),
            max(0, int(math.floor(cy - half + 0.5))),
            min(big_w, int(math.floor(cx + half + 0.5))),
            min(big_h, int(math.floor(cy + half + 0.5))),
        ]

    def unit(self, channel: int, which: str = "top") -> list[dict[str, Any]]:
        """The examples of one unit: item, source, value, position (y, x) and box."""
        keeper = self.top if which == "top" else self.bottom
        if keeper is None:
            raise ValueError("bottom examples were not collected (bottom=True)")
        out = []
        w = self.grid[1]
        values = keeper.result()[channel]
        for j in range(keeper.items.shape[1]):
            item = int(keeper.items[channel, j])
            if item < 0:
                continue
            pos = int(keeper.positions[channel, j])
            out.append(
                {
                    "item": item,
                    "source": int(keeper.sources[channel, j]),
                    "value": round(float(values[j]), 5),
                    "position": list(divmod(pos, w)),
                    "box": self.box(pos),
                }
            )
        return out


@keeps_freed_memory
def examples(
    model: Model,
    data: str | Dataset = EXAMPLES.data,
    layers: str | Sequence[str] | None = None,
    *,
    k: int = EXAMPLES.k,
    bottom: bool = False,
    dedup: bool = True,
    n: int | None = None,
    size: int | None = None,
    batch_size: int | None = None,
    precision: str = EXAMPLES.precision,
    num_workers: int = 0,
    seed: int = 0,
    receptive_fields: dict[str, int] | None = None,
    stream: Stream | None = None,
    progress: bool = True,
) -> Examples:
    """Top-``k`` dataset examples of every unit of ``layers`` (module docstring).

    Args:
        model: the model.
        data: ``photos``, ``partsworld``, a data spec, or a dataset of ``(image, label)``.
        layers: layer names (default: the network's blocks).
        k: examples per unit.
        bottom: also keep the ``k`` images with the most negative minimum.
        dedup: at most one example per source (photo) in a unit's list.
        n, size, seed: dataset size, image size (default: the model's input size for photos)
            and seed, for spec strings.
        batch_size, precision, num_workers: as for dissection (``precision``: see
            :func:`interp.device.use_bf16`; batches of 32 on CPU, 128 on CUDA, halved on
            out-of-memory).
        receptive_fields: ``{layer: RF size}`` when known (otherwise measured once, with the
            layer inventory, at the dataset's image size).
        stream: the run this pass is part of (:class:`~interp.streaming.Stream`): which
            items are this shard's, how the shards' lists are merged (exactly, on every
            shard) and where the running state is kept. The default is one process with
            nothing kept; the pipeline's :class:`~interp.pipeline.sharding.RankStream`
            shards over ``torchrun`` ranks and checkpoints, so that an interrupted pass with
            the same settings resumes.
        progress: progress bar.
    """
    check_int("k", k)
    check_int("n", n, optional=True)
    check_int("size", size, low=8, optional=True)
    check_int("batch_size", batch_size, optional=True)
    model = as_model(model)
    stream = stream or Stream()
    if size is None and data == "photos":
        size = model.input_size[0]
    dataset = examples_data(data, size=size, n=n, seed=seed)
    if layers is None:
        layers = default_layers(model)
    names = resolve_layers(model, layers)
    first = dataset[0][0]
    if receptive_fields is None or any(n not in receptive_fields for n in names):
        found = inventory(model, names=names, input_size=tuple(first.shape[-2:]))
        receptive_fields = {i.name: i.rf_size[0] for i in found if i.rf_size}
    batch_size = batch_size or default_batch(model.device, 32, 128)
    mine = stream.shard(len(dataset))  # every item in one process; this shard's otherwise
    device = model.device
    bf16 = use_bf16(precision, device)
    results: dict[str, LayerExamples] = {}
    skipped: dict[str, str] = {}
    key = {
        "model": model.name,
        "data": [type(dataset).__name__, len(dataset), data if isinstance(data, str) else ""],
        "first_image": hashlib.sha1(first.numpy().tobytes()).hexdigest(),
        "layers": names,
        "k": k,
        "bottom": bottom,
        "dedup": dedup,
        "n": n,
        "size": size,
        "seed": seed,
        "receptive_fields": {m: receptive_fields.get(m) for m in names},
    }
    start, results, skipped = _unpack(stream.resume(key))
    if start and progress:
        print(f"examples: resuming after {start} of this shard's images", file=sys.stderr)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, mine[start:]),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
    )
    halver = HalveOnOOM(batch_size, "batch of images")
    with (
        torch.no_grad(),
        ActivationCapture(model.module, names) as cap,
        tqdm(total=len(mine), initial=start, desc="examples", disable=not progress) as bar,
    ):
        for images, _ in loader:
            x_all = model.normalize(images).to(device)
            x_all = x_all.contiguous(memory_format=torch.channels_last)  # see bench_speedups

            def work(a: int, b: int, x_all: torch.Tensor = x_all) -> dict[str, Any]:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    return cap.run(x_all[a:b])

            for a, b, acts in halver.chunks(len(images), work):
                idx = torch.tensor(mine[start : start + (b - a)])
                src = torch.tensor([_source(dataset, int(i)) for i in idx])
                start += b - a
                for name, act in acts.items():
                    if not (isinstance(act, torch.Tensor) and act.dim() == 4):
                        skipped[name] = "output is not a 4-D (N, C, H, W) map"
                        continue
                    flat = act.float().flatten(2)  # (B, C, h*w)
                    if name not in results:
                        rf = receptive_fields.get(name) or int(first.shape[-1])
                        results[name] = LayerExamples(
                            layer=name,
                            k=k,
                            grid=(int(act.shape[2]), int(act.shape[3])),
                            image_size=(int(first.shape[-2]), int(first.shape[-1])),
                            rf_size=int(rf),
                            top=RunningTopK(act.shape[1], k, dedup=dedup),
                            bottom=RunningTopK(act.shape[1], k, largest=False, dedup=dedup)
                            if bottom
                            else None,
                        )
                    hi, hi_pos = flat.max(dim=2)
                    results[name].top.update(hi.T, idx, src, hi_pos.T)
                    if bottom:
                        lo, lo_pos = flat.min(dim=2)
                        results[name].bottom.update(lo.T, idx, src, lo_pos.T)  # type: ignore[union-attr]
                bar.update(b - a)
            stream.save(lambda start=start: _pack(start, results, skipped))
    if stream.distributed:  # exact merge of every shard's lists, on every shard
        gathered = stream.gather({n: (r.top, r.bottom) for n, r in results.items()})
        others = [g for i, g in enumerate(gathered) if i != stream.index]
        for name, r in results.items():
            r.top.merge([g[name][0] for g in others])
            if r.bottom is not None:
                r.bottom.merge([g[name][1] for g in others])
        start = len(dataset)
    if not results:
        raise InterpError("none of the layers has a 4-D (N, C, H, W) output: " + ", ".join(skipped))
    for r in results.values():
        r.info = {"images": start, "dedup": dedup, "skipped": skipped}
        filled = r.top.key[r.top.key != -math.inf]  # empty slots hold -inf
        check_finite(filled, f"{r.layer}'s activations")
    stream.finish(lambda: _pack(start, results, skipped))
    return Examples(results, data=dataset, data_name=data if isinstance(data, str) else "")


def _pack(done: int, results: dict[str, LayerExamples], skipped: dict[str, str]) -> dict:
    """The running state of an examples pass, for :meth:`interp.streaming.Stream.save`."""
    layers = {name: _pack_layer(r) for name, r in results.items()}
    return {"done": done, "layers": layers, "skipped": skipped}


def _unpack(saved: dict) -> tuple[int, dict[str, LayerExamples], dict[str, str]]:
    results = {n: _unpack_layer(n, r) for n, r in saved.get("layers", {}).items()}
    return int(saved.get("done", 0)), results, dict(saved.get("skipped", {}))


def crop(image: torch.Tensor, box: Sequence[int], size: int = 64) -> np.ndarray:
    """The ``box`` (``[x0, y0, x1, y1]``) of a ``(C, H, W)`` image, resized to ``size``, as an
    ``(size, size, 3)`` array in ``[0, 1]``."""
    x0, y0, x1, y1 = box
    part = image[:, y0:y1, x0:x1]
    part = torch.nn.functional.interpolate(
        part[None], size=(size, size), mode="bilinear", align_corners=False
    )[0]
    arr = part.clamp(0, 1).permute(1, 2, 0).numpy()
    return arr if arr.shape[2] == 3 else np.repeat(arr, 3, axis=2)


class Examples(dict):
    """What :func:`examples` returns: ``{layer: LayerExamples}``, with the dataset they
    index (``data``; ``None`` after :meth:`load`) and its spec (``data_name``).

    ``to_dict()`` is the JSON of ``examples.json``; ``save(folder)`` writes it and the lists
    themselves (``examples.pt``), which ``Examples.load(folder)`` reads back. The grids of top
    crops: :mod:`interp.views.examples_figures` (its ``save_examples`` writes them and calls
    ``save``).
    """

    STATE = "examples.pt"

    def __init__(
        self,
        layers: dict[str, LayerExamples] | None = None,
        *,
        data: Dataset | None = None,
        data_name: str = "",
    ) -> None:
        super().__init__(layers or {})
        self.data = data
        self.data_name = data_name

    def unit_indices(self, layer: str, units: Units = None) -> list[int]:
        """The units of ``layer`` among ``units``: all of them for ``None``; for a mapping,
        those it gives ``layer`` (none when it names other layers only)."""
        n = self[layer].units
        if units is None:
            return list(range(n))
        if isinstance(units, Mapping):
            units = units.get(layer, ())
        return [u for u in units if u < n]

    def to_dict(
        self,
        units: Units = None,
        *,
        figures: dict[str, list[str]] | None = None,
    ) -> dict[str, Any]:
        """Per layer: grid, receptive-field size and, per unit (all, or ``units``), its top
        (and bottom) examples: item, source, value, position and box (``units``: as
        :meth:`unit_indices` takes them); with ``figures``
        (``{layer: [grid PNG paths]}``), each layer's ``figures``."""
        doc: dict[str, Any] = {"data": self.data_name, "layers": []}
        for name, r in self.items():
            entry: dict[str, Any] = {
                "layer": name,
                "grid": list(r.grid),
                "rf_size": r.rf_size,
                "units": {},
            }
            for u in self.unit_indices(name, units):
                entry["units"][str(u)] = {"top": r.unit(u)}
                if r.bottom is not None:
                    entry["units"][str(u)]["bottom"] = r.unit(u, "bottom")
            if figures is not None:
                entry["figures"] = list(figures.get(name, []))
            doc["layers"].append(entry)
        return doc

    def crops(
        self, layer: str, unit: int, size: int = 64, cache: dict[int, Any] | None = None
    ) -> list[tuple[np.ndarray, float]]:
        """The top examples of ``layer:unit`` as receptive-field crops with their values
        (``cache``: images already read, by item, filled as it goes)."""
        if self.data is None:
            raise InterpError(
                "these examples were loaded without their dataset: give it as "
                "Examples.load(folder, data=examples_data(spec, ...)) to crop images"
            )
        cache = {} if cache is None else cache
        out = []
        for e in self[layer].unit(unit):
            if e["item"] not in cache:  # PartsWorld draws each scene: read each image once
                cache[e["item"]] = self.data[e["item"]][0]
            out.append((crop(cache[e["item"]], e["box"], size), e["value"]))
        return out

    def save(
        self,
        folder: str | Path,
        *,
        units: Units = None,
        figures: dict[str, list[str]] | None = None,
    ) -> Path:
        """Write ``examples.json`` (``units``: only those; ``figures``: each layer's grid
        PNGs, relative to ``folder``, as :func:`interp.views.examples_figures.save_examples`
        lists them; empty lists without) and ``examples.pt``, atomically; returns the JSON's
        path."""
        out = prepare_output(folder)
        doc = self.to_dict(units, figures=figures or {name: [] for name in self})
        state = {
            "data": self.data_name,
            "layers": {n: _pack_layer(r) for n, r in self.items()},
        }
        with atomic_path(out / self.STATE, suffix=".pt") as tmp:
            torch.save(state, tmp)
        return atomic_write_text(out / "examples.json", json.dumps(doc, indent=1))

    @classmethod
    def load(cls, folder: str | Path, *, data: Dataset | None = None) -> Examples:
        """The examples saved by :meth:`save` (with ``data``, the dataset they index, for
        crops and figures)."""
        state = torch.load(Path(folder) / cls.STATE, map_location="cpu", weights_only=True)
        layers = {n: _unpack_layer(n, r) for n, r in state["layers"].items()}
        return cls(layers, data=data, data_name=state.get("data", ""))


def _pack_layer(r: LayerExamples) -> dict[str, Any]:
    return {
        "meta": {
            "grid": list(r.grid),
            "image_size": list(r.image_size),
            "rf_size": r.rf_size,
            "info": {k: v for k, v in r.info.items() if isinstance(v, int | float | bool)},
        },
        "top": object_state(r.top),
        **({"bottom": object_state(r.bottom)} if r.bottom is not None else {}),
    }


def _unpack_layer(name: str, r: dict[str, Any]) -> LayerExamples:
    keepers = [
        restore_object(RunningTopK(1, 1), r[which]) if which in r else None
        for which in ("top", "bottom")
    ]
    return LayerExamples(
        layer=name,
        k=keepers[0].k,  # type: ignore[union-attr]
        grid=tuple(r["meta"]["grid"]),
        image_size=tuple(r["meta"]["image_size"]),
        rf_size=r["meta"]["rf_size"],
        top=keepers[0],  # type: ignore[arg-type]
        bottom=keepers[1],
        info=dict(r["meta"].get("info", {})),
    )
