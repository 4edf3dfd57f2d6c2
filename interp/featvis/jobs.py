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
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import distributed as dist
from ..capture import capture, resolve_layer, resolve_layers
from ..device import HalveOnOOM, default_batch
from ..inventory import default_layers  # noqa: F401 - re-exported: featvis.default_layers
from ..models.base import Model
from ..models.registry import as_model
from ..settings import RENDER
from ..utils import atomic_write_text, make_dir, prepare_output, save_png, settings_digest
from .objectives import Objective, channel, neuron
from .reference import reference_images
from .render import check_render_args, evaluate, render, unit_seed
from .transforms import NONE, STANDARD

__all__ = ["visualize", "atlas", "default_layers", "parse_channels", "layer_channels"]

_LEAF_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.MaxPool2d, nn.Identity)


def safe_name(name: str) -> str:
    """A file-system-safe version of a layer name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "root"


def parse_channels(spec: str | Sequence[int] | None, n: int) -> list[int]:
    """``"0:16"``, ``"0:64:4"``, ``"3,5,9"``, ``"all"`` (or ``None``) → channel indices < ``n``."""
    from ..errors import ChannelError

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


# the arguments of visualize/atlas that change what is rendered (recorded, and compared on
# resume: a different value re-renders)
_SETTING_KEYS = (
    "objective",
    "steps",
    "size",
    "param",
    "batch",
    "lr",
    "amp",
    "seed",
    "transforms",
    "upsample",
    "reference",
    "n_reference",
)


#: bumped when the renderer changes what it draws for the same settings (2: dead starts are
#: restarted), so a resumed job does not mix images of two renderers
RENDERER_VERSION = 2


def _check_render_args(arguments: dict[str, Any]) -> None:
    """Range checks of visualize/atlas arguments, before any work."""
    from ..checks import check_int

    keys = ("steps", "size", "batch", "upsample", "lr")
    check_render_args(**{k: arguments[k] for k in keys}, min_size=8)
    check_int("n_reference", arguments["n_reference"])
    check_int("seed", arguments["seed"], low=0)


def _job_settings(model: Model, arguments: dict[str, Any]) -> dict[str, Any]:
    values = {k: arguments[k] for k in _SETTING_KEYS}
    return {
        "model": model.name,
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


def _render_group(
    model: Model,
    layer: str,
    group: list[int],
    folder: Path,
    settings: dict[str, Any],
    refs: torch.Tensor | None,
) -> list[dict[str, Any]]:
    """Render one batch of units of ``layer`` (halving the batch on out-of-memory) and write
    their PNGs; returns their records."""
    halver = HalveOnOOM(len(group), f"render batch ({layer})")  # said even with --quiet
    units: list[dict[str, Any]] = []

    def work(a: int, b: int) -> tuple[Any, torch.Tensor | None]:
        part = group[a:b]
        obj = _objective(settings["objective"], layer, part)
        result = render(
            model,
            obj,
            steps=settings["steps"],
            size=settings["size"],
            param=settings["param"],
            transforms=STANDARD if settings["transforms"] else NONE,
            lr=settings["lr"],
            amp=settings["amp"],
            seeds=[unit_seed(settings["seed"], layer, c) for c in part],
            upsample=settings["upsample"],
            progress=False,
        )
        return result, (evaluate(model, obj, refs) if refs is not None else None)

    for a, b, (result, natural) in halver.chunks(len(group), work):
        for i, c in enumerate(group[a:b]):
            png = f"{safe_name(layer)}_c{c:04d}.png"
            save_png(result.images[i], folder / png)
            unit = {
                "layer": layer,
                "channel": c,
                "objective": settings["objective"],
                "value": round(float(result.values[i]), 5),
                "png": png,
                "seed": unit_seed(settings["seed"], layer, c),
                # dead: zero gradient from every start tried; the image shows nothing
                "dead": bool(result.dead[i]) if result.dead else False,
                "restarts": int(result.restarts[i]) if result.restarts else 0,
            }
            if natural is not None:
                col = natural[:, i]
                unit["natural_max"] = round(float(col.max()), 5)
                unit["natural_best"] = int(col.argmax())
                unit["exceeds_natural"] = bool(result.values[i] > col.max())
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
    from tqdm.auto import tqdm

    digest = settings_digest(settings, 16)
    rank, world = dist.rank(), dist.world()
    own = "units.json" if world == 1 else f"units.rank{rank}of{world}.json"
    done: dict[str, dict[int, dict[str, Any]]] = {}
    groups: list[tuple[str, list[int]]] = []
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
        todo = [c for c in chans if c not in done[layer]]
        groups += [(layer, todo[i : i + batch]) for i in range(0, len(todo), batch)]
    dist.barrier()  # every rank has read the records before any rank writes one
    stats = {
        "reused": sum(sum(c in done[layer] for c in chans) for layer, chans, _ in plan),
        "rendered": sum(len(g) for _, g in groups),
    }
    mine = groups[rank::world]
    folders = {layer: folder for layer, _, folder in plan}
    order = {layer: chans for layer, chans, _ in plan}
    total = sum(len(g) for _, g in mine) + stats["reused"]
    label = desc if world == 1 else f"{desc} (rank {rank} of {world})"
    with tqdm(total=total, desc=label, unit="unit", disable=not progress) as bar:
        bar.update(stats["reused"])
        for layer, group in mine:
            for unit in _render_group(model, layer, group, folders[layer], settings, refs):
                done[layer][unit["channel"]] = unit
            units = [done[layer][c] for c in order[layer] if c in done[layer]]
            _write_record(folders[layer] / own, layer, settings, units)
            bar.update(len(group))
    dist.barrier()  # every rank's units are recorded
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


def _write_grid(model: Model, layer: str, units: list[dict[str, Any]], folder: Path) -> Path:
    from PIL import Image

    from ..report.figures import plot_image_grid, save_figure

    images, labels = [], []
    for u in units:
        arr = np.asarray(Image.open(folder / u["png"]), dtype=np.float32) / 255.0
        arr = arr[..., None] if arr.ndim == 2 else arr
        images.append(torch.from_numpy(arr).permute(2, 0, 1))
        nat = f" | nat {u['natural_max']:.3g}" if "natural_max" in u else ""
        value = "dead" if u.get("dead") else f"{u['value']:.3g}"
        labels.append(f"#{u['channel']}: {value}{nat}")
    title = f"{model.name}  {layer}  ({units[0]['objective'] if units else 'channel'} objective"
    title += "; value reached | best natural crop)" if units and "natural_max" in units[0] else ")"
    return save_figure(plot_image_grid(images, labels, title), folder / "grid.png")


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
    steps: int = RENDER.steps,
    size: int = RENDER.size,
    objective: str = RENDER.objective,
    param: str = RENDER.param,
    batch: int | None = None,
    lr: float = RENDER.lr,
    amp: bool | None = None,
    seed: int = 0,
    transforms: bool = RENDER.transforms,
    upsample: int | None = None,
    reference: str | None = RENDER.reference,
    n_reference: int = RENDER.n_reference,
    progress: bool = True,
) -> dict[str, Any]:
    """Render chosen units of one layer: a PNG per unit, ``grid.png`` and ``results.json``.

    Each unit's record holds the objective value its image reached and, with a reference set
    (``"photos"``: random crops of skimage.data photos; or a folder), the unit's highest value
    over the reference crops of the same size through the same preprocessing.
    """
    _check_render_args(locals())
    model = as_model(model)
    batch = batch or default_batch(model.device, 16, 64)
    dotted = resolve_layer(model, layer)
    chans = parse_channels(channels, layer_channels(model, dotted, upsample or size))
    out = Path(out)
    prepare_output(out)  # writable; no temp files of a killed run
    settings = _job_settings(model, locals())
    refs = _reference(model, reference, size, upsample, n_reference)
    log = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)
    rendered, stats = _render_plan(
        model,
        [(dotted, chans, out)],
        settings,
        refs,
        desc=dotted,
        progress=progress,
        log=log,
    )
    units = rendered[dotted]
    if not dist.is_main():
        return {"model": model.name, "layer": dotted, "settings": settings, "units": units}
    grid = _write_grid(model, dotted, units, out)
    doc = {
        "model": model.name,
        "layer": dotted,
        "settings": settings,
        "units": units,
        "grid": grid.name,
        "this_run": stats,
        **_summary(units),
    }
    atomic_write_text(out / "results.json", json.dumps(doc, indent=1))
    return doc


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
    per_layer: int | str = RENDER.per_layer,
    steps: int = RENDER.steps,
    size: int = RENDER.size,
    objective: str = RENDER.objective,
    param: str = RENDER.param,
    batch: int | None = None,
    lr: float = RENDER.lr,
    amp: bool | None = None,
    seed: int = 0,
    transforms: bool = RENDER.transforms,
    upsample: int | None = None,
    reference: str | None = RENDER.reference,
    n_reference: int = RENDER.n_reference,
    progress: bool = True,
) -> dict[str, Any]:
    """Feature visualizations of ``per_layer`` units (a seeded random sample, or ``"all"``)
    of every layer in ``layers`` (``"all"``: :func:`default_layers`; or names / globs).

    Writes ``out/<layer>/`` (unit PNGs, ``grid.png``, ``units.json``), ``out/index.json`` and
    ``out/overview.png``. Resumes after an interruption without redoing finished units.
    """
    _check_render_args(locals())
    if not (isinstance(per_layer, str) and per_layer == "all"):
        from ..checks import check_int

        check_int("per_layer", int(per_layer) if str(per_layer).isdigit() else per_layer)
    model = as_model(model)
    batch = batch or default_batch(model.device, 16, 64)
    chosen = _choose_layers(model, layers)
    out = Path(out)
    prepare_output(out)  # writable; no temp files of a killed run
    settings = _job_settings(model, locals())
    plan = []
    for layer in chosen:
        n = layer_channels(model, layer, upsample or size)
        if str(per_layer) == "all":
            chans = list(range(n))
        else:
            rng = np.random.default_rng(unit_seed(seed, layer, "sample") % (2**32))
            chans = sorted(rng.choice(n, size=min(int(per_layer), n), replace=False).tolist())
        plan.append((layer, n, chans))
    refs = _reference(model, reference, size, upsample, n_reference)
    log = (lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None)
    folders = [(layer, chans, out / safe_name(layer)) for layer, _, chans in plan]
    rendered, stats = _render_plan(
        model, folders, settings, refs, desc="atlas", progress=progress, log=log
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
    if dist.is_main():  # rank 0 writes the merged outputs
        for entry in entries:
            _write_grid(model, entry["layer"], entry["units"], out / entry["folder"])
        doc = {"model": model.name, "settings": settings, "layers": entries}
        atomic_write_text(out / "index.json", json.dumps(doc, indent=1))
        _write_overview(model, entries, out)
    dist.barrier()
    return {"model": model.name, "settings": settings, "layers": entries, "this_run": stats}


def _choose_layers(model: Model, layers: str | Sequence[str]) -> list[str]:
    from ..capture import layer_names

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
                from ..errors import UnknownLayerError

                raise UnknownLayerError(f"no layer matches {pattern!r}")
            chosen += hits
        else:
            chosen += resolve_layers(model, [pattern])
    return list(dict.fromkeys(chosen))


def _write_overview(model: Model, entries: list[dict[str, Any]], out: Path) -> None:
    import matplotlib.pyplot as plt
    from PIL import Image

    from ..report.figures import blank_axis, save_figure

    cols = min(8, max((len(e["units"]) for e in entries), default=1))
    rows = len(entries)
    if rows == 0:
        return
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.3 * cols + 1.6, 1.35 * rows + 0.5), squeeze=False
    )
    for r, entry in enumerate(entries):
        for c in range(cols):
            ax = axes[r, c]
            blank_axis(ax)
            if c < len(entry["units"]):
                unit = entry["units"][c]
                img = Image.open(out / entry["folder"] / unit["png"])
                ax.imshow(img, cmap="gray" if img.mode == "L" else None)
                ax.set_title(f"#{unit['channel']}", fontsize=6, pad=1)
        axes[r, 0].set_ylabel(entry["layer"], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{model.name}: feature visualizations, early (top) to late (bottom)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (1.35 * rows + 0.5)))
    save_figure(fig, out / "overview.png")
