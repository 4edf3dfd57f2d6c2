"""Edge probe: evoked orientation tuning of units, measured with sinusoidal gratings.

For every unit (a channel at the centre of a layer's output map) full-field luminance
gratings are shown over ``n_orientations`` orientations (>= 12), a grid of spatial frequencies
suited to the layer's receptive field (RF), ``n_phases`` phases (>= 4) and a series of
``contrasts``, all centred exactly on the unit's RF centre (measured, not assumed: on an
even canvas the centre unit does not sit at the canvas centre). What is measured is the
**evoked** response, ``r(grating) - r(grey field)``, signed and never clipped at 0: a unit's
baseline (its answer to plain grey) and its sign carry no information about orientation.

Per unit and stimulus condition (contrast, orientation, frequency), over the phases:

* ``F0`` = mean evoked response and ``F1`` = amplitude of the first harmonic in phase;
* a unit is **simple-like** when ``F1 / |F0| > 1`` at its preferred condition (its answer
  follows the grating's phase: a linear or half-rectified filter) and **complex-like**
  otherwise (phase-invariant, energy-like); its tuning measure is ``F1`` for simple-like and
  the evoked ``F0`` (rectified: suppression is not a preference) for complex-like units;
* **saturation**, read per unit: every bounded activation upstream of the layer (ReLU6 at 0
  or 6, hardtanh, hardsigmoid) is watched inside the unit's RF window; an element counts as
  *clipped* when it sits at a bound under the grating but not under grey; and where the
  layer's own output is bounded, each unit's own responses are watched. The tuning of a unit
  is read at the highest contrast at which **its own tuning curve** (the preferred
  frequency, every orientation and phase) touches no saturating bound of its own and fewer
  than ``clip_limit`` (5%) of the upstream elements are clipped (the lowest contrast when
  every contrast fails; said in ``info``). A layer-wide fraction alone is not enough: a
  Gabor whose preferred gratings alone reach ReLU6's 6 clips 1-2% of its stimuli (0.2% of
  the layer), and read there its curve has a flat top whose ties put the argmax 10-19
  degrees off and lower its OSI by up to 0.08;
* **preferred orientation**: half the phase of the curve's second circular harmonic at the
  preferred frequency (the vector whose length is the OSI), so a peak between grid points
  or a flat top is placed where the curve's mass is; the grid's step is its resolution
  (``info["orientation_resolution"]``);
* **OSI** at the preferred frequency, ``|sum_k m_k e^{2 i theta_k}| / sum_k m_k`` over the
  measure ``m`` (1 - circular variance);
* **drive ratio**: the largest evoked response to any grating over the unit's evoked
  high percentile (99.5th, Network Dissection's quantile) on natural images, ``T - r(grey)``.
  A unit that gratings barely move (a colour-blob unit with a weak oriented leak) may have
  a needle-sharp tuning curve: its shape says nothing when its size is a tenth of what the
  unit does on real images.

A unit is an **edge unit** (:func:`edge_units`) when it is driven (drive ratio >=
``DRIVE_MIN``) and oriented (OSI >= ``OSI_MIN``, and above the random-init control's
threshold: the hierarchy check supplies one, :func:`~interp.probes.hierarchy.
edge_control_thresholds` measures one, and without one the absolute rule alone is applied
with an :class:`~interp.probes.rules.AbsoluteRuleWarning`, since it calls about half of a
random-init 11x11 layer edge units). The cut-offs were calibrated on planted
units (tests/test_edges.py), measured with this module's defaults on a 64-px canvas:

* planted Gabors (luminance, odd and even, 2-7 px period, with biases and gains that
  saturate ReLU6 at full contrast, and behind a second layer): OSI 0.45-0.95, drive ratio
  0.6-1.6; derivative-of-Gaussian edge filters, the broadest oriented filter, OSI ~0.33;
* isotropic difference-of-Gaussians: OSI < 0.06; colour-opponent blobs: OSI < 0.06 or no
  drive; deep colour-blob decoys with a weak oriented leak and a negative offset (which
  the former probe, rectified and without a baseline, scored OSI 0.4-0.5): drive ratio
  ~0.1;

so ``OSI_MIN = 0.2`` (between isotropic units' <= 0.06 and the broadest edge filter's 0.33)
and ``DRIVE_MIN = 0.3`` (between the decoys' ~0.1 and the Gabors' >= 0.6).

Orientations are those of the stripes (the edges), in degrees counter-clockwise from
horizontal, with the image's y axis pointing up — the convention of PartsWorld's edge bins.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..activations import ActivationCapture, preserved_state, resolve_layers
from ..checks import check_finite, check_fraction, check_int
from ..data.photos import PhotoCrops
from ..inventory import LayerInfo, rf_centres
from ..layer_geometry import LayerGeometry
from ..models.base import Model
from ..models.registry import as_model
from .accumulators import StreamingQuantile
from .edge_result import DRIVE_MIN, OSI_MIN, EdgeResult, driven, edge_mask, edge_units
from .edge_tuning import (
    CONTRASTS,
    FREQUENCIES,
    TuningRead,
    gratings,
    layer_frequencies,
    orientation_selectivity,
    preferred_orientation,
    read_tuning,
)
from .rules import AbsoluteRuleWarning

__all__ = [
    "AbsoluteRuleWarning",
    "CONTRASTS",
    "GRATINGS_VERSION",
    "DRIVE_MIN",
    "OSI_MIN",
    "EdgeResult",
    "driven",
    "edge_mask",
    "edge_probe",
    "edge_units",
    "gratings",
    "natural_reference",
    "orientation_selectivity",
    "preferred_orientation",
    "rf_centres",
]

#: the grating instrument's version (in the hierarchy's stage keys: a new reading recomputes):
#: 3 reads each unit where its own curve touches no bound, with the circular preferred
#: orientation
GRATINGS_VERSION = 3
_BOUNDED = (nn.Hardtanh, nn.Hardsigmoid)  # ReLU6 is a Hardtanh


# --------------------------------------------------------------- natural-image reference
def _image_batches(data: Any, n: int, batch_size: int) -> Iterable[torch.Tensor]:
    """Batches of ``[0, 1]`` images from a tensor, a ConceptData or a (image, ...) dataset."""
    if isinstance(data, torch.Tensor):
        for start in range(0, min(n, len(data)), batch_size):
            yield data[start : min(n, start + batch_size)]
        return
    count = min(n, len(data))
    for start in range(0, count, batch_size):
        imgs = []
        for i in range(start, min(count, start + batch_size)):
            if hasattr(data, "item") and callable(data.item) and not isinstance(data, dict):
                imgs.append(data.item(i, masks=False).image)
            else:
                it = data[i]
                imgs.append(it[0] if isinstance(it, tuple | list) else it)
        yield torch.stack(imgs)


def natural_reference(
    model: Model,
    data: Any,
    layers: Sequence[str],
    *,
    images: int = 256,
    quantile: float = 0.005,
    batch_size: int = 32,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Each unit's top-``quantile`` activation (every position of the first ``images``
    images of ``data``): the natural-image scale the drive ratio compares gratings with."""
    model = as_model(model)
    names = list(layers)
    quantiles: dict[str, StreamingQuantile] = {}
    count = min(images, len(data))
    with torch.no_grad(), ActivationCapture(model.module, names) as cap:
        batches = _image_batches(data, count, batch_size)
        for x in tqdm(batches, desc="natural reference", unit="batch", disable=not progress):
            acts = cap.run(model.normalize(x).to(model.device))
            for name in names:
                a = acts[name].float()
                if a.dim() != 4:
                    continue
                if name not in quantiles:
                    total = count * a.shape[-2] * a.shape[-1]
                    quantiles[name] = StreamingQuantile(a.shape[1], total, quantile)
                quantiles[name].update(a.cpu())
    return {name: q.result().numpy() for name, q in quantiles.items()}


# ----------------------------------------------------------------------------- the probe


class _ClipCounter:
    """Hooks on bounded activations (ReLU6, hardtanh, hardsigmoid). Per stimulus and layer,
    inside the layer's RF window: how many elements the stimulus moved away from their grey
    value (by more than 5% of the bound range), and how many of those it pushed onto a
    saturating bound they were not at under grey (ReLU6: 6; hardtanh and hardsigmoid: either
    end). Elements a stimulus leaves alone do not dilute the fraction."""

    def __init__(self, module: nn.Module, windows: dict[str, tuple[int, int, int, int]], size: int):
        self.module = module
        self.bounded = [(name, m) for name, m in module.named_modules() if isinstance(m, _BOUNDED)]
        self.windows = windows  # layer -> (y0, y1, x0, x1) in input pixels (inclusive)
        self.size = size
        self.grey: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.mode = "off"
        self.clipped: dict[str, torch.Tensor] = {}  # module -> (B, layers) clipped counts
        self.moved: dict[str, torch.Tensor] = {}  # module -> (B, layers) moved counts
        self.order: list[str] = []
        self._handles: list[Any] = []
        self._layers = list(windows)
        self.every = 3

    def _bounds(self, m: nn.Module) -> tuple[float, float]:
        if isinstance(m, nn.Hardtanh):
            return float(m.min_val), float(m.max_val)
        return 0.0, 1.0  # hardsigmoid

    def _window(self, layer: str, h: int, w: int) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.windows[layer]
        r0, c0 = int(y0 * h / self.size), int(x0 * w / self.size)
        r1 = max(r0 + 1, math.ceil((y1 + 1) * h / self.size))
        c1 = max(c0 + 1, math.ceil((x1 + 1) * w / self.size))
        return slice(r0, r1), slice(c0, c1)

    def _hook(self, name: str, m: nn.Module):  # noqa: ANN202
        lo, hi = self._bounds(m)
        tol = 0.05 * (hi - lo)
        # ReLU6's 0 is rectification, as in any ReLU (the F1 measure is exact for a
        # half-wave rectified sinusoid); its 6, and both ends of a clamp around 0, saturate
        lower = not (isinstance(m, nn.Hardtanh) and lo == 0.0)

        def fn(_m: nn.Module, _inputs: Any, output: Any) -> None:
            if self.mode == "off" or not isinstance(output, torch.Tensor) or output.dim() != 4:
                return
            y = output.detach().float()
            if self.mode == "grey":
                y = y[:1]
            else:
                # every third stimulus is enough for a fraction over thousands of elements,
                # and this hook would otherwise cost more than the forward pass
                y = y[:: self.every]
            at = y >= hi - 1e-6
            if lower:
                at |= y <= lo + 1e-6
            if self.mode == "grey":
                self.grey[name] = (y, at)
                if name not in self.order:
                    self.order.append(name)
                return
            grey, grey_at = self.grey[name]
            total = output.shape[0]
            moved = (y - grey).abs() > tol
            # summed over channels first: the windows are cut from (B, h, w) maps
            clipped = (moved & at & ~grey_at).sum(dim=1, dtype=torch.float32)
            moved = moved.sum(dim=1, dtype=torch.float32)
            h, w = y.shape[-2:]
            cs, ms = [], []
            for layer in self._layers:
                rows, cols = self._window(layer, h, w)
                cs.append(clipped[:, rows, cols].sum(dim=(1, 2)))
                ms.append(moved[:, rows, cols].sum(dim=(1, 2)))
            for store, part in ((self.clipped, cs), (self.moved, ms)):
                counts = torch.zeros(total, len(self._layers), dtype=torch.float64)
                counts[:: self.every] = torch.stack(part, dim=1).cpu().double()
                store[name] = torch.cat([store[name], counts]) if name in store else counts

        return fn

    def _order_hook(self, name: str):  # noqa: ANN202
        def fn(*_: Any) -> None:
            if self.mode == "grey" and name not in self.order:
                self.order.append(name)

        return fn

    def __enter__(self) -> _ClipCounter:
        try:
            bounded = {name for name, _ in self.bounded}
            for name in self._layers:  # execution order of the layers too (hooks run first)
                if name not in bounded:
                    sub = self.module.get_submodule(name)
                    self._handles.append(sub.register_forward_hook(self._order_hook(name)))
            for name, m in self.bounded:
                self._handles.append(m.register_forward_hook(self._hook(name, m)))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _output_bounds(module: nn.Module) -> tuple[float, float, bool] | None:
    """``(low, high, low_saturates)`` when ``module``'s output is a bounded activation (itself,
    or the last module of a ``Sequential``); ReLU6's 0 is rectification, not saturation."""
    while isinstance(module, nn.Sequential) and len(module):
        module = module[-1]
    if isinstance(module, nn.Hardtanh):
        lo, hi = float(module.min_val), float(module.max_val)
        return lo, hi, lo != 0.0
    if isinstance(module, nn.Hardsigmoid):
        return 0.0, 1.0, True
    return None


def _own_saturation(module: nn.Module, raw: np.ndarray, grey: np.ndarray) -> np.ndarray | None:
    """Bool ``raw.shape``: responses of a bounded layer's units that sit on a saturating bound
    they were not at under grey (``None`` when the layer's output is unbounded)."""
    bounds = _output_bounds(module)
    if bounds is None:
        return None
    lo, hi, low_saturates = bounds
    g = grey.reshape((-1,) + (1,) * (raw.ndim - 1))
    at = (raw >= hi - 1e-6) & (g < hi - 1e-6)
    if low_saturates:
        at |= (raw <= lo + 1e-6) & (g > lo + 1e-6)
    return at


def edge_probe(
    model: Model | nn.Module,
    layers: str | Sequence[str],
    *,
    reference: Any = "photos",
    n_orientations: int = 12,
    n_phases: int = 4,
    contrasts: Sequence[float] = CONTRASTS,
    frequencies: Sequence[float] = FREQUENCIES,
    clip_limit: float = 0.05,
    size: int | None = None,
    batch_size: int = 64,
    reference_images: int = 256,
    progress: bool = False,
    geometry: LayerGeometry | None = None,
) -> dict[str, EdgeResult]:
    """Evoked orientation tuning of every unit of ``layers`` (module docstring).

    Args:
        model: the model (its preprocessing turns the [0, 1] gratings into input).
        layers: layer names with 4-D outputs (others are skipped).
        reference: natural images for the drive ratio: ``"photos"`` (seeded crops of the
            skimage photos, at the canvas size), a tensor of ``[0, 1]`` images, a dataset or
            ConceptData, ``{layer: thresholds}`` already measured, or ``None`` (no drive ratio:
            :func:`edge_units` then finds none).
        n_orientations: >= 12 stripe orientations over 180 degrees.
        n_phases: >= 4 phases.
        contrasts: the contrast series (ascending, in (0, 1]).
        frequencies: the frequency grid (cycles/px); each layer uses those it can see.
        clip_limit: largest fraction of clipped upstream elements at the contrast read.
        size: canvas size (default: the model's input size).
        batch_size: gratings per forward pass.
        reference_images: natural images for the reference percentile.
        progress: progress bars.
        geometry: the model's :class:`~interp.layer_geometry.LayerGeometry`, shared with the
            other instruments that probe it (its inventory and smallest canvases are traced
            once); default a fresh one.
    """
    check_int("n_orientations", n_orientations, low=12)
    check_int("n_phases", n_phases, low=4)
    check_int("batch_size", batch_size)
    check_int("reference_images", reference_images)
    check_int("size", size, low=8, optional=True)
    contrasts = sorted(float(c) for c in contrasts)
    if not contrasts or contrasts[0] <= 0 or contrasts[-1] > 1:
        raise ValueError(f"contrasts must lie in (0, 1], got {contrasts}")
    check_fraction("clip_limit", clip_limit)

    model = as_model(model)
    names = resolve_layers(model, layers)
    size = int(size or model.input_size[0])
    geometry = LayerGeometry.of(model, geometry)
    with geometry.pinned():  # the weights are compared once for both questions
        infos = {i.name: i for i in geometry.layers(names, size)}
        names = [n for n in names if infos[n].output_shape and len(infos[n].output_shape) == 3]
        canvases = geometry.canvases([infos[n] for n in names], size)
    if not names:
        return {}
    orientations = [180.0 * k / n_orientations for k in range(n_orientations)]
    phases = [2 * math.pi * k / n_phases for k in range(n_phases)]
    if isinstance(reference, str) and reference == "photos":
        reference = PhotoCrops(n=reference_images, size=size, seed=0)
    grid = _Grid(orientations, phases, contrasts)
    results: dict[str, EdgeResult] = {}
    with preserved_state(model.module, eval_mode=True):
        if reference is None:
            ref: dict[str, np.ndarray] = {}
        elif isinstance(reference, dict):
            ref = {k: np.asarray(v) for k, v in reference.items()}
        else:
            ref = natural_reference(
                model, reference, names, images=reference_images, progress=progress
            )
        groups, centres = _plan_canvases(model, names, infos, canvases, size)
        layer_freqs = {
            n: layer_frequencies(
                (infos[n].rf_size or (size, size))[0], size, sorted(set(frequencies))
            )
            for n in names
        }
        for (canvas, *centre_), group in groups.items():
            freqs_all = sorted({f for n in group for f in layer_freqs[n]})
            shown = _show_gratings(
                model,
                group,
                infos,
                canvas,
                (centre_[0], centre_[1]),
                freqs_all,
                grid,
                size=size,
                batch_size=batch_size,
                progress=progress,
            )
            for gi, name in enumerate(group):
                results[name] = _read_layer(
                    model,
                    shown,
                    gi,
                    name,
                    [freqs_all.index(f) for f in layer_freqs[name]],
                    grid,
                    rf=(infos[name].rf_size or (size, size))[0],
                    centre=centres[name],
                    reference=ref.get(name),
                    clip_limit=clip_limit,
                )
    return {n: results[n] for n in names if n in results}


@dataclass
class _Grid:
    """The stimulus grid every layer is shown (frequencies are chosen per layer)."""

    orientations: list[float]
    phases: list[float]
    contrasts: list[float]


def _plan_canvases(
    model: Model,
    names: list[str],
    infos: dict[str, LayerInfo],
    canvases: dict[str, int],
    size: int,
) -> tuple[dict[tuple[int, float, float], list[str]], dict[str, tuple[float, float]]]:
    """Which canvas and grating centre each layer is shown: ``({(canvas, cy, cx): layers},
    {layer: RF centre})``.

    A layer whose RF fits the canvas is shown the gratings on the smallest canvas that still
    holds its whole RF (its centre unit then sees the same pixels: the same response, at a
    fraction of the cost); layers whose RF centres agree share a pass. A layer whose RF is
    clipped by the canvas has only an estimated centre (the gradient's centroid); it joins
    the deepest exact full-canvas layer before it (deeper maps are coarser grids around the
    same centre; they see low frequencies, where a pixel is a small phase offset, and F1 is
    phase-invariant) or, with none, keeps its centre measured on the full canvas.
    ``canvases``: each layer's smallest canvas (:meth:`LayerGeometry.canvases`).
    """
    centres = rf_centres(model, names, size)
    full = dict(centres)  # on the full canvas, before small canvases replace some
    for c in sorted(set(canvases.values()) - {size}):
        on = [n for n in names if canvases[n] == c]
        centres.update(rf_centres(model, on, c))
    groups: dict[tuple[int, float, float], list[str]] = {}
    last: tuple[float, float] | None = None
    for name in names:
        cy, cx = centres[name]
        key = (canvases[name], round(cy * 2) / 2, round(cx * 2) / 2)
        if infos[name].rf_clipped and last is not None:
            key = (size, *last)
            centres[name] = last
        elif not infos[name].rf_clipped:
            fy, fx = full[name]
            last = (round(fy * 2) / 2, round(fx * 2) / 2)
        groups.setdefault(key, []).append(name)
    return groups, centres


@dataclass
class _Shown:
    """One pass of gratings over a group of layers sharing a canvas and a centre."""

    canvas: int
    freqs: list[float]  # the union of the group's frequencies
    n_stim: int  # stimuli per contrast
    base: dict[str, torch.Tensor]  # per layer, the centre units' response to grey
    responses: dict[str, list[torch.Tensor]]  # per layer, the centre units' responses
    clip: _ClipCounter  # upstream clipping per stimulus and layer
    order: dict[str, int]  # execution order of the bounded modules and the layers


def _show_gratings(
    model: Model,
    group: list[str],
    infos: dict[str, LayerInfo],
    canvas: int,
    centre: tuple[float, float],
    freqs: list[float],
    grid: _Grid,
    *,
    size: int,
    batch_size: int,
    progress: bool,
) -> _Shown:
    """Show grey, then every grating of the grid (each contrast) centred on ``centre``, to
    the layers of ``group``: their centre units' responses and the upstream clipping inside
    each layer's RF window."""
    n_stim = len(grid.orientations) * len(freqs) * len(grid.phases)
    windows = {}
    for name in group:
        rf = infos[name].rf_size or (size, size)
        cy, cx = centre
        windows[name] = (
            max(0, int(math.floor(cy - (rf[0] - 1) / 2))),
            min(canvas - 1, int(math.ceil(cy + (rf[0] - 1) / 2))),
            max(0, int(math.floor(cx - (rf[1] - 1) / 2))),
            min(canvas - 1, int(math.ceil(cx + (rf[1] - 1) / 2))),
        )
    channels = model.preprocessing.channels
    grey = torch.full((1, channels, canvas, canvas), 0.5)
    with (
        torch.no_grad(),
        _ClipCounter(model.module, windows, canvas) as clip,
        ActivationCapture(model.module, group) as cap,
    ):
        clip.mode = "grey"
        base = {
            k: v.float()[0, :, v.shape[-2] // 2, v.shape[-1] // 2].cpu()
            for k, v in cap.run(model.normalize(grey).to(model.device)).items()
        }
        # upstream of a layer: bounded modules that ran before it (execution order)
        order = {m: k for k, m in enumerate(clip.order)}
        clip.mode = "stim"
        chunks: dict[str, list[torch.Tensor]] = {n: [] for n in group}
        steps = [(c, s) for c in grid.contrasts for s in range(0, n_stim, batch_size)]
        stims = {
            c: gratings(
                canvas,
                grid.orientations,
                freqs,
                grid.phases,
                channels,
                contrast=c,
                centre=centre,
            )
            for c in grid.contrasts
        }
        for c, start in tqdm(steps, desc="gratings", unit="batch", disable=not progress):
            x = stims[c][start : start + batch_size]
            acts = cap.run(model.normalize(x).to(model.device))
            for name in group:
                a = acts[name].float()
                h, w = a.shape[-2:]
                chunks[name].append(a[:, :, h // 2, w // 2].cpu())
    return _Shown(canvas, freqs, n_stim, base, chunks, clip, order)


def _read_layer(
    model: Model,
    shown: _Shown,
    gi: int,
    name: str,
    keep: list[int],
    grid: _Grid,
    *,
    rf: int,
    centre: tuple[float, float],
    reference: np.ndarray | None,
    clip_limit: float,
) -> EdgeResult:
    """The tuning of layer ``name`` (``gi``-th of its pass ``shown``) at its frequencies
    (``keep``: their indices in the pass's), read per unit at the highest contrast where its
    own curve touches no bound and upstream clipping is under ``clip_limit``."""
    contrasts, orientations, phases = grid.contrasts, grid.orientations, grid.phases
    n_orientations, n_phases, n_stim = len(orientations), len(phases), shown.n_stim
    clip, order, freqs_all = shown.clip, shown.order, shown.freqs
    base = shown.base[name].double().numpy()
    resp = torch.cat(shown.responses[name]).double().numpy()  # (C*O*F*P, units)
    check_finite(torch.from_numpy(resp), f"{name}'s response to the gratings")
    units = resp.shape[1]
    evoked = resp - base[None]
    evoked = evoked.T.reshape(units, len(contrasts), n_orientations, len(freqs_all), n_phases)
    # clipped fraction per contrast, over upstream bounded modules
    up = [
        m
        for m, _ in clip.bounded
        if m in clip.clipped and order.get(m, math.inf) <= order.get(name, -1)
    ]
    clipped = []
    for ci in range(len(contrasts)):
        rows = slice(ci * n_stim, (ci + 1) * n_stim)
        num = sum(float(clip.clipped[m][rows, gi].sum()) for m in up)
        den = sum(float(clip.moved[m][rows, gi].sum()) for m in up)
        clipped.append(num / den if den else 0.0)
    evoked = evoked[:, :, :, keep]  # (units, contrasts, O, F, P)
    # the unit's own bounds, when the layer's output is a bounded activation: which of its
    # responses sit on a saturating bound (not there under grey)
    own = _own_saturation(
        model.module.get_submodule(name),
        resp.T.reshape(units, len(contrasts), n_orientations, len(freqs_all), -1),
        base,
    )
    if own is not None:
        own = own[:, :, :, keep]
    reads = [read_tuning(evoked[:, ci], phases) for ci in range(len(contrasts))]
    # per unit, per contrast: the fraction of its tuning curve's responses (the preferred
    # frequency, every orientation and phase) on its own bound, and the layer's upstream
    # clipped fraction; the tuning is read at the highest contrast where the unit's curve
    # touches no bound of its own and upstream clipping is under the limit (the lowest
    # contrast when none is)
    unit_clip = np.zeros((units, len(contrasts)))
    curve_sat = np.zeros((units, len(contrasts)))
    rows_ = np.arange(units)
    for ci, rd in enumerate(reads):
        if own is not None:
            curve_sat[:, ci] = own[rows_, ci, :, rd.f_idx].mean(axis=(1, 2))
        unit_clip[:, ci] = np.maximum(curve_sat[:, ci], clipped[ci])
    fine = (curve_sat == 0) & (np.asarray(clipped)[None] < clip_limit)
    cidx = np.where(fine.any(axis=1), len(contrasts) - 1 - np.argmax(fine[:, ::-1], axis=1), 0)
    read = TuningRead.pick(reads, cidx)
    drive = np.clip(evoked.reshape(units, -1).max(axis=1), 0, None)
    if reference is not None:
        scale = reference.astype(np.float64) - base
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(scale > 0, drive / scale, np.where(drive > 0, np.inf, 0.0))
    else:
        ratio = np.full(units, np.nan)
    fl = [freqs_all[k] for k in keep]
    return EdgeResult(
        layer=name,
        orientations=orientations,
        frequencies=fl,
        contrasts=list(contrasts),
        contrast=np.asarray(contrasts)[cidx].astype(np.float32),
        unit_clipped=unit_clip[np.arange(units), cidx].astype(np.float32),
        baseline=shown.base[name].numpy().astype(np.float32),
        tuning=read.measure.astype(np.float32),
        modulation=read.modulation.astype(np.float32),
        simple=read.simple,
        preferred_orientation=preferred_orientation(read.curve, orientations),
        preferred_frequency=np.asarray(fl)[read.f_idx],
        osi=orientation_selectivity(read.curve, orientations),
        drive=drive.astype(np.float32),
        drive_ratio=ratio.astype(np.float32),
        clipped=clipped,
        info={
            "rf_size": rf,
            "canvas": shown.canvas,
            "phases": n_phases,
            "rf_centre": [round(v, 2) for v in centre],
            "bounded_upstream": len(up),
            "units_clipped_at_lowest_contrast": int((~fine.any(axis=1)).sum()),
            "units_on_own_bound": int((curve_sat > 0).any(axis=1).sum()),
            "orientation_resolution": 180.0 / n_orientations,
            "reference": reference is not None,
        },
    )
