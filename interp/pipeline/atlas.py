"""Jobs on top of the renderer: ``visualize`` (chosen units of one layer) and ``atlas``
(a sample of units of every layer), writing PNGs, labelled grids and JSON.

Both resume: each layer's folder keeps ``units.json``, rewritten atomically after every batch
together with the batch's PNGs, so an interrupted run redoes at most the batch in flight and
never leaves a half-written file. A rerun with different settings re-renders.

Both shard over ``torchrun`` ranks (``interp.distributed``): the unfinished units are cut
into batches as one process would cut them and the batches are dealt to the ranks in turn,
so every unit renders in the same batch from the same seed as in a single process; ranks
record their units in ``units.rankRofW.json`` and rank 0 merges them into ``units.json``
and writes the grids, ``index.json`` and ``overview.png``. A batch that runs out of GPU
memory is halved and retried (said on stderr)::

    interp atlas efficientnet_lite0 --per-layer all --steps 256 --size 128     # one GPU
    torchrun --standalone --nproc_per_node=8 -m interp atlas efficientnet_lite0 \
        --per-layer all --steps 256 --size 128                                 # 8 GPUs
    torchrun --nnodes=2 --node_rank=R --master_addr=HOST --master_port=29500 \
        --nproc_per_node=8 -m interp atlas resnet50 --per-layer all             # 2 nodes
"""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm.auto import tqdm

from .. import distributed as dist
from ..activations import capture, layer_names, resolve_layer, resolve_layers
from ..checks import check_int
from ..device import default_batch
from ..errors import ChannelError, UnknownLayerError
from ..featvis.batches import RenderJob, RenderStats, pack, render_jobs
from ..featvis.objectives import Objective, channel, neuron, stack
from ..featvis.redirect import check_mode as check_redirect_mode
from ..featvis.reference import reference_images
from ..featvis.render import check_render_args, evaluate, unit_seed
from ..featvis.transforms import NONE, STANDARD
from ..inventory import default_layers
from ..models.base import Model
from ..models.registry import as_model
from ..settings import RENDER, RenderSettings, recorded, with_overrides
from ..utils import atomic_write_text, make_dir, prepare_output, save_png, settings_digest
from ..views.atlas_figures import save_atlas
from .cache import weights_digest

__all__ = ["Atlas", "visualize", "atlas", "parse_channels", "layer_channels"]


@dataclass
class Atlas:
    """What :func:`atlas` and :func:`visualize` return: the rendered units of each layer.

    Attributes:
        model: the model's name.
        settings: every setting that changes an image (with the weights' digest).
        layers: one entry per layer: ``layer``, ``channels_total``, ``folder``, ``grid`` and
            ``units`` (per unit: ``channel``, ``value`` reached, ``png``, ``seed``, ``dead``,
            ``restarts`` and, with a reference set, ``natural_max``/``exceeds_natural``).
        folder: where the unit PNGs, grids and ``index.json`` are.
        this_run: ``{"rendered": n, "reused": m}`` units of this call, and its render
            calls over every rank: ``render_calls``, ``render_images`` and
            ``render_seconds_by_layer`` (the units are packed into full batches across
            neighbouring layers: ``interp.featvis.batches.pack``).
    """

    model: str
    settings: dict[str, Any]
    layers: list[dict[str, Any]]
    folder: Path
    this_run: dict[str, int] = field(default_factory=dict)
    index: str = "index.json"  # visualize's single layer: results.json

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of ``index.json``."""
        return {"model": self.model, "settings": self.settings, "layers": self.layers}

    def _entry(self, layer: str) -> dict[str, Any]:
        for entry in self.layers:
            if entry["layer"] == layer:
                return entry
        raise UnknownLayerError(
            f"layer {layer!r} is not in this atlas: it has {[e['layer'] for e in self.layers]}"
        )

    def units(self, layer: str) -> list[dict[str, Any]]:
        """The unit records of ``layer``."""
        return self._entry(layer)["units"]

    def image(self, layer: str, channel: int) -> np.ndarray:
        """The feature visualization of ``layer:channel`` as an ``(H, W[, 3])`` uint8 array."""
        entry = self._entry(layer)
        for unit in entry["units"]:
            if unit["channel"] == channel:
                return np.asarray(Image.open(self.folder / entry["folder"] / unit["png"]))
        raise ChannelError(f"channel {channel} of {layer} was not rendered in this atlas")

    def save(self, folder: str | Path | None = None) -> Path:
        """Write the index (``index.json``; ``results.json`` for :func:`visualize`) into the
        atlas folder (the unit PNGs are written while rendering); returns its path. Another
        ``folder`` receives copies of the unit PNGs too. The grids and the overview:
        :func:`interp.views.atlas_figures.save_atlas`, which calls this last."""
        target = make_dir(folder if folder is not None else self.folder)
        if target.resolve() != self.folder.resolve():
            for entry in self.layers:
                sub = make_dir(target / entry["folder"])
                for unit in entry["units"]:
                    image = Image.open(self.folder / entry["folder"] / unit["png"])
                    save_png(image, sub / unit["png"])
        return atomic_write_text(target / self.index, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, folder: str | Path) -> Atlas:
        """The atlas saved in ``folder`` (by :func:`atlas`, :func:`visualize` or :meth:`save`)."""
        folder = Path(folder)
        index = "index.json" if (folder / "index.json").is_file() else "results.json"
        doc = json.loads((folder / index).read_text())
        return cls(doc["model"], doc["settings"], doc["layers"], folder, index=index)


_LEAF_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.Identity)


def safe_name(name: str) -> str:
    """A file-system-safe version of a layer name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "root"


def parse_channels(spec: str | Sequence[int] | None, n: int) -> list[int]:
    """``"0:16"``, ``"0:64:4"``, ``"3,5,9"``, ``"all"`` (or ``None``) → channel indices < ``n``."""

    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "all"):
        return list(range(n))
    if not isinstance(spec, str):
        out = [int(c) for c in spec]
    elif not re.fullmatch(r"[\d\s,:-]+", spec):
        raise ChannelError(
            f"channels {spec!r}: use 'all', a range '0:16' (or '0:64:4') or a list '3,5,9'"
        )
    else:
        out = []
        for part in spec.split(","):
            part = part.strip()
            if ":" in part:
                bits = [int(b) if b else None for b in part.split(":")]
                start, stop = bits[0] or 0, bits[1] if len(bits) > 1 else None
                if start >= n or (stop is not None and stop > n):
                    raise ChannelError(
                        f"channels {part!r} out of range: the layer has {n} channels (0..{n - 1})"
                    )
                out.extend(range(n)[slice(*bits)])
            elif part:
                out.append(int(part))
    bad = [c for c in out if not 0 <= c < n]
    if bad:
        raise ChannelError(
            f"channel(s) {bad} out of range: the layer has {n} channels (0..{n - 1})"
        )
    return list(dict.fromkeys(out))


def layer_channels(model: Model, layer: str, size: int | None = None) -> int:
    """Number of channels of ``layer`` (one truncated forward at ``size`` px)."""
    h, w = (size, size) if size else model.input_size
    x = model.normalize(torch.rand(1, model.preprocessing.channels, h, w)).to(model.device)
    with torch.no_grad():
        return int(capture(model, x, [layer])[layer].shape[1])


#: bumped when the renderer changes what it draws for the same settings (2: dead starts are
#: restarted; 3: BatchNorm folded while optimizing, and precision "auto" means bf16 on AMX
#: CPUs for networks without depthwise convolutions; 4: param "auto", pixel for receptive
#: fields up to a quarter of the canvas; 5: precision "auto" means bf16 on AMX CPUs and on
#: Zen 5 or later with AVX512-BF16; 6: the transforms centred on the canvas, no longer zoomed
#: out by lucent's pad, and the colour decorrelation, sampling grid and Adam (fused) computed
#: with other kernels; 7: each image returned at its best one-pixel translation, ``align``),
#: so a resumed job does not mix images of two renderers
RENDERER_VERSION = 7


def _check_render_args(s: RenderSettings) -> None:
    """Range checks of visualize/atlas settings, before any work."""
    check_render_args(
        steps=s.steps,
        size=s.size,
        batch=s.batch,
        upsample=s.upsample,
        lr=s.lr,
        redirect=s.redirect,
        min_size=8,
    )
    check_redirect_mode(s.redirect_mode)
    check_int("n_reference", s.n_reference)
    check_int("seed", s.seed, low=0)


def _job_settings(model: Model, s: RenderSettings) -> dict[str, Any]:
    """The settings record (kept with the images, and compared on resume: a different value
    re-renders): the identity of the model and renderer, then every recorded field of ``s``
    (:func:`interp.settings.recorded`; ``redirect_mode`` only while ``redirect`` is on)."""
    values = recorded(s)
    if not s.redirect:
        del values["redirect_mode"]  # no redirected step: the mode changes nothing
    return {
        "model": model.name,
        # the stage cache's identity of the weights: a retrained checkpoint re-renders
        "weights": weights_digest(model),
        "renderer": RENDERER_VERSION,
        **{k: str(v) if isinstance(v, Path) else v for k, v in values.items()},
    }


def _objective(kind: str, layer: str, chans: list[int]) -> Objective:
    if kind == "channel":
        obj = channel(layer, chans)
    elif kind == "neuron":
        obj = neuron(layer, chans)
    else:
        raise ValueError(f"objective kind {kind!r}: use 'channel' or 'neuron'")
    obj.batch = len(chans)
    return obj


def _records(folder: Path) -> list[Path]:
    """The unit records of a layer's folder: the merged ``units.json`` and, from a sharded run
    that has not been merged yet, one ``units.rankRofW.json`` per rank."""
    return [folder / "units.json", *sorted(folder.glob("units.rank*of*.json"))]


def _load_done(folder: Path, digest: str) -> tuple[dict[int, dict[str, Any]], bool]:
    """Finished units (their PNG present) recorded under the same settings, from every record
    in ``folder``; and whether a record with other settings was found."""
    done: dict[int, dict[str, Any]] = {}
    stale = False
    for path in _records(folder):
        if not path.is_file():
            continue
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if saved.get("settings_digest") != digest:
            stale = True
            continue
        for u in saved.get("units", []):
            if (folder / u["png"]).is_file():
                done.setdefault(int(u["channel"]), u)
    return done, stale


def _drop_stale(
    folder: Path, digest: str, layer: str, settings: dict[str, Any], units: list[dict[str, Any]]
) -> None:
    """Replace the records of ``folder`` made under other settings: ``units.json`` by one
    under ``settings`` holding ``units``, other ranks' files are removed."""
    for path in _records(folder):
        try:
            saved = json.loads(path.read_text()) if path.is_file() else None
        except (json.JSONDecodeError, OSError):
            saved = {}
        if saved is None or saved.get("settings_digest") == digest:
            continue
        if path.name == "units.json":
            _write_record(path, layer, settings, units)
        else:
            path.unlink(missing_ok=True)


def _write_record(
    path: Path, layer: str, settings: dict[str, Any], units: list[dict[str, Any]]
) -> None:
    doc = {
        "layer": layer,
        "settings": settings,
        "settings_digest": settings_digest(settings, 16),
        "units": units,
    }
    atomic_write_text(path, json.dumps(doc, indent=1))


def _unit_job(settings: dict[str, Any], layer: str, c: int) -> RenderJob:
    obj = _objective(settings["objective"], layer, [c])
    return RenderJob(obj, [unit_seed(settings["seed"], layer, c)], (layer, c))


def _render_group(
    model: Model,
    group: list[tuple[str, int]],
    settings: dict[str, Any],
    refs: torch.Tensor | None,
    folders: dict[str, Path],
    stats: RenderStats,
) -> list[dict[str, Any]]:
    """Render one batch of units (of one layer or of neighbouring ones, packed by
    :func:`interp.featvis.batches.pack`; halved on out-of-memory) and write their PNGs;
    returns their records."""
    jobs = [_unit_job(settings, layer, c) for layer, c in group]
    rendered = render_jobs(
        model,
        jobs,
        batch_size=len(jobs),
        size=settings["size"],
        upsample=settings["upsample"],
        param=settings["param"],
        precision=settings["precision"],
        stats=stats,
        steps=settings["steps"],
        transforms=STANDARD if settings["transforms"] else NONE,
        lr=settings["lr"],
        redirect=settings["redirect"],
        # recorded only while redirect is on; off, the mode changes nothing
        redirect_mode=settings.get("redirect_mode", RENDER.redirect_mode),
        align=settings["align"],
    )
    results = {job.tag: r for job, r in rendered}  # every job's rows
    natural = None
    if refs is not None:
        natural = evaluate(model, stack([(j.objective, 1) for j in jobs]), refs)
    units: list[dict[str, Any]] = []
    for i, job in enumerate(jobs):
        layer, c = job.tag
        result = results[job.tag]
        png = f"{safe_name(layer)}_c{c:04d}.png"
        save_png(result.images[0], folders[layer] / png)
        unit = {
            "layer": layer,
            "channel": c,
            "objective": settings["objective"],
            "value": round(float(result.values[0]), 5),
            "png": png,
            "seed": job.seeds[0],
            # the parametrization used ("auto" resolves per layer: render_defaults)
            "param": result.info["param"],
            # dead: zero gradient from every start tried; the image shows nothing
            "dead": bool(result.dead[0]) if result.dead else False,
            "restarts": int(result.restarts[0]) if result.restarts else 0,
        }
        if natural is not None:
            col = natural[:, i]
            unit["natural_max"] = round(float(col.max()), 5)
            unit["natural_best"] = int(col.argmax())
            unit["exceeds_natural"] = bool(result.values[0] > col.max())
        units.append(unit)
    return units


def _render_plan(
    model: Model,
    plan: list[tuple[str, list[int], Path]],
    settings: dict[str, Any],
    refs: torch.Tensor | None,
    *,
    desc: str,
    progress: bool,
    log: Any,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Render the units of ``plan`` (``[(layer, channels, folder)]``), resuming from the
    folders' records, and return ``{layer: unit records in channel order}`` and counts.

    Under torchrun the unfinished units are cut into batches of ``settings["batch"]`` exactly
    as one process cuts them, and the batches are dealt to the ranks in turn over all layers;
    so each unit is rendered in the same batch, from the same seed, as in a single process.
    Each rank records its units in its own file (``units.rankRofW.json``, rewritten atomically
    after every batch), rank 0 merges them into ``units.json`` once every rank is done. A
    rerun, with any number of ranks, reuses every recorded unit.
    """
    digest = settings_digest(settings, 16)
    rank, world = dist.rank(), dist.world()
    own = "units.json" if world == 1 else f"units.rank{rank}of{world}.json"
    done: dict[str, dict[int, dict[str, Any]]] = {}
    todo_units: list[tuple[str, int]] = []
    batch = max(1, int(settings["batch"]))
    for layer, chans, folder in plan:
        make_dir(folder)
        done[layer], stale = _load_done(folder, digest)
        if stale and not done[layer]:
            log(f"{layer}: settings changed since the last run; re-rendering")
        if stale and dist.is_main():
            # forget the other settings' records before any PNG of theirs is overwritten: a
            # run interrupted now must not reuse new images under the old settings
            _drop_stale(
                folder, digest, layer, settings, [done[layer][c] for c in sorted(done[layer])]
            )
        todo_units += [(layer, c) for c in chans if c not in done[layer]]
    # batches across neighbouring layers where render would choose the same parametrization
    # and precision for each unit alone (featvis.batches.pack): full batches even with a few
    # units per layer
    jobs = [_unit_job(settings, layer, c) for layer, c in todo_units]
    packed = pack(
        model,
        jobs,
        batch,
        canvas=settings["upsample"] or settings["size"],
        param=settings["param"],
        precision=settings["precision"],
    )
    groups = [[todo_units[i] for i in idx] for idx, _ in packed]
    dist.barrier()  # every rank has read the records before any rank writes one
    stats = {
        "reused": sum(sum(c in done[layer] for c in chans) for layer, chans, _ in plan),
        "rendered": sum(len(g) for g in groups),
    }
    mine = groups[rank::world]
    folders = {layer: folder for layer, _, folder in plan}
    order = {layer: chans for layer, chans, _ in plan}
    total = sum(len(g) for g in mine) + stats["reused"]
    label = desc if world == 1 else f"{desc} (rank {rank} of {world})"
    renders = RenderStats()
    with tqdm(total=total, desc=label, unit="unit", disable=not progress) as bar:
        bar.update(stats["reused"])
        for group in mine:
            for unit in _render_group(model, group, settings, refs, folders, renders):
                done[unit["layer"]][unit["channel"]] = unit
            for layer in dict.fromkeys(layer for layer, _ in group):
                units = [done[layer][c] for c in order[layer] if c in done[layer]]
                _write_record(folders[layer] / own, layer, settings, units)
            bar.update(len(group))
    # every rank's render calls, summed (waits for every rank: its units are recorded)
    merged = RenderStats.merged(dist.all_gather(renders.to_dict()))
    stats |= {
        "render_calls": merged["calls"],
        "render_images": merged["images"],
        "render_seconds_by_layer": merged["seconds_by_layer"],
    }
    if dist.is_main():
        for layer, chans, folder in plan:
            merged, _ = _load_done(folder, digest)
            _write_record(folder / "units.json", layer, settings, [merged[c] for c in chans])
            for path in _records(folder)[1:]:
                path.unlink(missing_ok=True)
    dist.barrier()  # units.json is complete
    result = {}
    for layer, chans, folder in plan:
        merged, _ = _load_done(folder, digest)
        result[layer] = [merged[c] for c in chans if c in merged]
    return result, stats


def _reference(
    model: Model, reference: str | None, size: int, upsample: int | None, n: int
) -> torch.Tensor | None:
    if reference in (None, "none"):
        return None
    return reference_images(upsample or size, reference, n=n, channels=model.preprocessing.channels)


def visualize(
    model: Model,
    layer: str,
    channels: str | Sequence[int] | None = "0:16",
    out: str | Path = "out/visualize",
    *,
    settings: RenderSettings = RENDER,
    progress: bool = True,
    **overrides: Any,
) -> Atlas:
    """Render chosen units of one layer: a PNG per unit, ``grid.png`` and ``results.json``.

    Each unit's record holds the objective value its image reached and, with a reference set
    (``"photos"``: random crops of skimage.data photos; or a folder), the unit's highest value
    over the reference crops of the same size through the same preprocessing.

    ``settings``: a :class:`~interp.settings.RenderSettings` (default ``RENDER``);
    ``**overrides``: fields of it to replace (``steps=64``, ``seed=1``...; not ``per_layer``,
    an atlas setting: the units are ``channels``).
    """
    if "per_layer" in overrides:
        raise TypeError("visualize() renders the units in channels; per_layer is atlas's")
    s = with_overrides(settings, job="visualize", **overrides)
    _check_render_args(s)
    model = as_model(model)
    s = with_overrides(s, batch=s.batch or default_batch(model.device, 16, 64))
    size, upsample = s.size, s.upsample
    dotted = resolve_layer(model, layer)
    chans = parse_channels(channels, layer_channels(model, dotted, upsample or size))
    out = Path(out)
    prepare_output(out)  # writable; no temp files of a killed run
    record = _job_settings(model, s)
    refs = _reference(model, s.reference, size, upsample, s.n_reference)
    log = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)
    rendered, stats = _render_plan(
        model,
        [(dotted, chans, out)],
        record,
        refs,
        desc=dotted,
        progress=progress,
        log=log,
    )
    units = rendered[dotted]
    entry = {
        "layer": dotted,
        "channels_total": layer_channels(model, dotted, upsample or size),
        "folder": ".",
        "grid": "grid.png",
        "units": units,
        **_summary(units),
    }
    result = Atlas(model.name, record, [entry], out, stats, index="results.json")
    if dist.is_main():
        save_atlas(result)
    return result


def _summary(units: list[dict[str, Any]]) -> dict[str, Any]:
    dead = [u["channel"] for u in units if u.get("dead")]
    out: dict[str, Any] = {"dead_units": dead}
    if not units or "natural_max" not in units[0]:
        return out
    beats = sum(u["exceeds_natural"] for u in units)
    return {
        **out,
        "exceeds_natural": beats,
        "units_total": len(units),
        "exceeds_natural_fraction": round(beats / len(units), 4),
    }


def atlas(
    model: Model,
    out: str | Path = "out/atlas",
    *,
    layers: str | Sequence[str] = "all",
    settings: RenderSettings = RENDER,
    progress: bool = True,
    **overrides: Any,
) -> Atlas:
    """Feature visualizations of ``per_layer`` units (a seeded random sample, or ``"all"``)
    of every layer in ``layers`` (``"all"``: :func:`default_layers`; or names / globs).

    Writes ``out/<layer>/`` (unit PNGs, ``grid.png``, ``units.json``), ``out/index.json`` and
    ``out/overview.png``. Resumes after an interruption without redoing finished units.

    ``settings``: a :class:`~interp.settings.RenderSettings` (default ``RENDER``; its
    ``per_layer`` may also be ``"all"``); ``**overrides``: fields of it to replace
    (``steps=64``, ``per_layer="all"``...).
    """
    s = with_overrides(settings, job="atlas", **overrides)
    _check_render_args(s)
    per_layer, seed, size, upsample = s.per_layer, s.seed, s.size, s.upsample
    if not (isinstance(per_layer, str) and per_layer == "all"):
        check_int("per_layer", int(per_layer) if str(per_layer).isdigit() else per_layer)
    model = as_model(model)
    s = with_overrides(s, batch=s.batch or default_batch(model.device, 16, 64))
    chosen = _choose_layers(model, layers)
    out = Path(out)
    prepare_output(out)  # writable; no temp files of a killed run
    record = _job_settings(model, s)
    plan = []
    for layer in chosen:
        n = layer_channels(model, layer, upsample or size)
        if str(per_layer) == "all":
            chans = list(range(n))
        else:
            rng = np.random.default_rng(unit_seed(seed, layer, "sample") % (2**32))
            chans = sorted(rng.choice(n, size=min(int(per_layer), n), replace=False).tolist())
        plan.append((layer, n, chans))
    refs = _reference(model, s.reference, size, upsample, s.n_reference)
    log = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)
    folders = [(layer, chans, out / safe_name(layer)) for layer, _, chans in plan]
    rendered, stats = _render_plan(
        model, folders, record, refs, desc="atlas", progress=progress, log=log
    )
    entries = []
    for (layer, n, _), (_, _, folder) in zip(plan, folders, strict=True):
        units = rendered[layer]
        entries.append(
            {
                "layer": layer,
                "channels_total": n,
                "folder": folder.name,
                "grid": f"{folder.name}/grid.png",
                "units": units,
                **_summary(units),
            }
        )
    result = Atlas(model.name, record, entries, out, stats)
    if dist.is_main():  # rank 0 writes the merged outputs
        save_atlas(result)
    dist.barrier()
    return result


def _choose_layers(model: Model, layers: str | Sequence[str]) -> list[str]:
    if isinstance(layers, str):
        if layers.strip().lower() == "all":
            return default_layers(model)
        layers = [p.strip() for p in layers.split(",") if p.strip()]
    names = layer_names(model.module)
    chosen: list[str] = []
    for pattern in layers:
        if any(ch in pattern for ch in "*?["):
            hits = [n for n in names if fnmatch.fnmatch(n, pattern)]
            if not hits:
                raise UnknownLayerError(f"no layer matches {pattern!r}")
            chosen += hits
        else:
            chosen += resolve_layers(model, [pattern])
    return list(dict.fromkeys(chosen))
