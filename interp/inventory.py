"""Layer inventory: every module's name, type, output shape, channels and receptive field.

The receptive field (RF) of a unit at the centre of a layer's output is *measured*: the
gradient of that unit with respect to the input is non-zero exactly on the pixels it can see,
so its bounding box is the RF, and the shift of that box between two neighbouring units is the
stride. That is right for any architecture (asymmetric "same" padding, dilations, branches)
without a table of layer rules. Deep layers whose RF exceeds the input are reported clipped
to the input (``rf_clipped``), which is what a unit can see of an image of the model's size.
Modules that cannot change the RF inherit it instead of being measured: element-wise ones
(BatchNorm in eval, activations, dropout, identity) and 1x1 stride-1 convolutions take the RF of
the module that produced their input, containers that of the child whose output they return.
Only the modules that change the spatial footprint cost a backward pass.

The same gradient serves the instruments that need a unit's receptive field
(:mod:`interp.probes.erf`, :mod:`interp.probes.edges`): :func:`rf_gradients` (the gradient of
a random positive mix of a layer's centre unit), :func:`support_box` (its bounding box),
:func:`rf_box` and :func:`smallest_canvas` (the smallest canvas that holds a layer's whole RF)
and :func:`rf_centres` (where in the input a layer's centre unit looks).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .activations import ActivationCapture, layer_names, preserved_state, resolve_layers
from .checks import check_hookable
from .models.base import Model
from .models.registry import as_model

__all__ = [
    "LayerInfo",
    "layers",
    "layers_table",
    "declared_stages",
    "default_layers",
    "rf_box",
    "rf_centres",
    "rf_gradients",
    "smallest_canvas",
    "support_box",
]

_ELEMENTWISE = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Softplus,
    nn.Dropout,
    nn.Dropout2d,
    nn.Identity,
)


@dataclass
class LayerInfo:
    """One module of a model, as seen with an input of the model's size.

    ``output_shape`` excludes the batch dimension (``None`` when the module did not run or
    returned no tensor). ``rf_size``/``rf_stride`` are (height, width) in input pixels for
    modules with a spatial ``(N, C, H, W)`` output, measured at the centre unit.
    """

    name: str
    type: str
    order: int | None
    output_shape: tuple[int, ...] | None
    channels: int | None
    params: int
    rf_size: tuple[int, int] | None = None
    rf_stride: tuple[int, int] | None = None
    rf_clipped: bool = False
    lucent_name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)


def _shape(output: Any) -> tuple[int, ...] | None:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape[1:])
    if isinstance(output, tuple | list) and output and isinstance(output[0], torch.Tensor):
        return tuple(output[0].shape[1:])
    return None


def support_box(mask: torch.Tensor) -> tuple[int, int, int, int] | None:
    """Bounding box ``(top, bottom, left, right)`` (inclusive) of the ``True`` pixels of an
    ``(H, W)`` mask; ``None`` when there are none."""
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def rf_gradients(
    module: nn.Module,
    layers: Sequence[str],
    x: torch.Tensor,
    generator: torch.Generator,
    *,
    neighbours: bool = False,
    inputs: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """The gradient, with respect to ``x``, of each layer's centre unit: for layer ``i``, a
    random positive mix of its channels (``rand + 0.5`` from ``generator``, drawn in layer
    order: channels that mirror each other, ``w`` and ``-w``, must not cancel) at the centre
    position ``(h // 2, w // 2)`` of batch element ``i``. With ``neighbours``, layer ``i`` owns
    elements ``2i`` (the centre unit) and ``2i + 1`` (its diagonal neighbour, the same mix),
    each on its own input (batch elements are independent in eval mode).

    ``x`` is a leaf that requires grad; ``inputs(x)`` (default ``x``) is what the module sees.
    The forward pass stops after the deepest layer; parameters are frozen meanwhile. The
    gradient's non-zero pixels are those the unit sees: its receptive field. Returns ``None``
    when no gradient reaches ``x``; raises ``ValueError`` for a layer without an
    ``(N, C, H, W)`` output.
    """
    per = 2 if neighbours else 1
    with torch.enable_grad(), ActivationCapture(module, list(layers), freeze=True) as cap:
        acts = cap.run(inputs(x) if inputs is not None else x)
        total = x.new_zeros(())
        for i, name in enumerate(layers):
            act = acts[name]
            if not isinstance(act, torch.Tensor) or act.dim() != 4:
                raise ValueError(f"layer {name!r} has no (N, C, H, W) output")
            h, w = act.shape[-2:]
            cy, cx = h // 2, w // 2
            mix = torch.rand(act.shape[1], generator=generator).to(act.device, act.dtype) + 0.5
            total = total + (act[per * i, :, cy, cx] * mix).sum()
            if neighbours:
                ny, nx = min(cy + 1, h - 1), min(cx + 1, w - 1)
                total = total + (act[per * i + 1, :, ny, nx] * mix).sum()
        if not total.requires_grad:
            return None
        (grad,) = torch.autograd.grad(total, x, allow_unused=True)
    return None if grad is None else grad.detach()


def _shift(a: tuple[int, int], b: tuple[int, int], extent: int) -> int | None:
    """Stride along one axis from the boxes ``a`` (centre) and ``b`` (next unit)."""
    if a[0] > 0 and b[0] > 0:
        return b[0] - a[0]
    if a[1] < extent - 1 and b[1] < extent - 1:
        return b[1] - a[1]
    return None


def _measure_rf(
    module: nn.Module,
    names: list[str],
    shapes: dict[str, tuple[int, ...] | None],
    sample: torch.Tensor,
    chunk: int,
    progress: bool = False,
) -> dict[str, tuple[tuple[int, int], tuple[int, int] | None, bool]]:
    """RF size, stride and clipping for each layer in ``names`` (all with 4-D outputs)."""
    _, channels, height, width = sample.shape
    results: dict[str, tuple[tuple[int, int], tuple[int, int] | None, bool]] = {}
    gen = torch.Generator().manual_seed(0)
    from tqdm.auto import tqdm

    starts = range(0, len(names), chunk)
    for start in tqdm(starts, desc="receptive fields", unit="chunk", disable=not progress):
        group = names[start : start + chunk]
        # two batch elements per layer: the centre unit and its diagonal neighbour, each on
        # its own random input
        noise = torch.randn(2 * len(group), channels, height, width, generator=gen)
        x = noise.to(sample.device, sample.dtype).requires_grad_(True)
        grad = rf_gradients(module, group, x, gen, neighbours=True)
        if grad is None:
            continue
        seen = grad.abs().sum(dim=1).cpu() > 0
        for i, name in enumerate(group):
            box = support_box(seen[2 * i])
            if box is None:
                continue
            r0, r1, c0, c1 = box
            size = (r1 - r0 + 1, c1 - c0 + 1)
            clipped = r0 == 0 or c0 == 0 or r1 == height - 1 or c1 == width - 1
            stride: tuple[int, int] | None = None
            nbox = support_box(seen[2 * i + 1])
            oh, ow = shapes[name][-2:]  # type: ignore[index]
            if nbox is not None:
                # the neighbour (h // 2 + 1, clamped to the map) is one row further unless
                # the map is too small for one
                sy = _shift((r0, r1), (nbox[0], nbox[1]), height) if oh // 2 < oh - 1 else None
                sx = _shift((c0, c1), (nbox[2], nbox[3]), width) if ow // 2 < ow - 1 else None
                # where the shift cannot be seen (RF covers the input), fall back to sizes
                sy = sy if sy is not None else max(1, round(height / oh))
                sx = sx if sx is not None else max(1, round(width / ow))
                stride = (sy, sx)
            results[name] = (size, stride, clipped)
    return results


class _TraceDone(Exception):
    """Raised by the trace hook once every wanted module has run."""


@torch.no_grad()
def _trace(
    module: nn.Module, x: torch.Tensor, until: Iterable[str] | None = None
) -> tuple[dict[str, tuple[int, ...] | None], dict[str, int], dict[str, str]]:
    """Output shape and execution order of every module, and for each module the module its
    receptive field equals when that is known without measuring: the module whose output it
    returns unchanged (containers), or the producer of its input (element-wise modules).

    With ``until``, the forward pass stops once all those modules have run: modules after
    them are not traced (nor run, so a later module that fails does not matter)."""
    pending = set(until) if until is not None else None
    produced: dict[int, str] = {}
    alive: list[torch.Tensor] = []  # keep outputs referenced so their id()s stay unique
    outputs: dict[str, tuple[int, ...] | None] = {}
    order: dict[str, int] = {}
    same_rf: dict[str, str] = {}
    handles = []

    def hook(name: str, sub: nn.Module):  # noqa: ANN202
        def fn(_m: nn.Module, inputs: Any, output: Any) -> None:
            if name in order:
                return
            order[name] = len(order)
            outputs[name] = _shape(output)
            if isinstance(output, torch.Tensor):
                if id(output) in produced and produced[id(output)] != name:
                    same_rf[name] = produced[id(output)]  # a container returning a child's output
                elif _pointwise(sub) and inputs and isinstance(inputs[0], torch.Tensor):
                    source = produced.get(id(inputs[0]))
                    if source is not None and inputs[0].shape[-2:] == output.shape[-2:]:
                        same_rf[name] = source
                produced[id(output)] = name
                alive.append(output)
            if pending is not None:
                pending.discard(name)
                if not pending:
                    raise _TraceDone

        return fn

    try:
        for name, sub in module.named_modules():
            if name:
                handles.append(sub.register_forward_hook(hook(name, sub)))
        module(x)
    except _TraceDone:
        pass
    finally:
        for h in handles:
            h.remove()
    return outputs, order, same_rf


def _pointwise(module: nn.Module) -> bool:
    """Modules whose output at a position depends on their input at that position only."""
    if isinstance(module, _ELEMENTWISE):
        return True
    if isinstance(module, nn.Conv2d):
        return (
            module.kernel_size == (1, 1)
            and module.stride == (1, 1)
            and module.padding in ((0, 0), "valid", "same")
        )
    return False


def layers(
    model: Model | nn.Module,
    *,
    receptive_field: bool = True,
    input_size: tuple[int, int] | None = None,
    names: Iterable[str] | None = None,
    chunk: int = 8,
    progress: bool = False,
) -> list[LayerInfo]:
    """Inventory of ``model``'s modules (all of them, or ``names``), in execution order.

    Args:
        model: a :class:`Model` (or ``nn.Module``, taken as a 224 px RGB ImageNet model).
        receptive_field: measure RF size and stride (one batched backward per ``chunk`` layers).
        input_size: (height, width) to trace at; default the model's input size.
        names: restrict to these layers (dotted or underscore names).
        chunk: layers measured per backward pass (memory vs. speed).
        progress: show a progress bar.

    Returns:
        One :class:`LayerInfo` per module; modules that did not run come last with
        ``order=None``.
    """
    model = as_model(model)
    module = model.module
    check_hookable(module, model.name)
    size = input_size or model.input_size
    device = model.device
    x = model.normalize(
        torch.rand(
            1, model.preprocessing.channels, *size, generator=torch.Generator().manual_seed(0)
        )
    ).to(device)
    wanted = resolve_layers(model, list(names)) if names is not None else layer_names(module)
    with preserved_state(module, eval_mode=True):
        # with names given, trace only as far as the last of them
        outputs, order, same_rf = _trace(module, x, wanted if names is not None else None)
    spatial = {n: outputs[n] for n in wanted if outputs.get(n) is not None and len(outputs[n]) == 3}

    rf: dict[str, tuple[tuple[int, int], tuple[int, int] | None, bool]] = {}
    if receptive_field and spatial:
        inherit = {n: src for n, src in same_rf.items() if src in outputs}

        def root(name: str) -> str:
            while name in inherit:
                name = inherit[name]
            return name

        shapes = {r: outputs[r] for r in map(root, spatial) if len(outputs[r] or ()) == 3}
        ordered = sorted(shapes, key=lambda n: order.get(n, 1 << 30))
        rf = _measure_rf(module, ordered, shapes, x, chunk, progress)
        for n in spatial:
            if root(n) in rf:
                rf[n] = rf[root(n)]

    result = []
    named = dict(module.named_modules())
    for n in wanted:
        shape = outputs.get(n)
        channels = None
        if shape is not None and len(shape) >= 1:
            channels = shape[0] if len(shape) == 3 else shape[-1]
        size_, stride_, clipped = rf.get(n, (None, None, False))
        result.append(
            LayerInfo(
                name=n,
                type=type(named[n]).__name__,
                order=order.get(n),
                output_shape=shape,
                channels=channels,
                params=sum(p.numel() for p in named[n].parameters()),
                rf_size=size_,
                rf_stride=stride_,
                rf_clipped=clipped,
                lucent_name=n.replace(".", "_"),
            )
        )
    result.sort(key=lambda info: (info.order is None, info.order or 0))
    return result


def rf_box(model: Model, layer: str, size: int) -> tuple[int, int, int, int] | None:
    """Bounding box ``(top, bottom, left, right)`` of the pixels that the centre unit of
    ``layer`` sees on a ``size`` px canvas (:func:`rf_gradients` on a noise input, as
    :func:`layers` measures it); ``None`` when the layer does not run at that size or no
    gradient reaches the input. The forward pass stops at ``layer``, so later layers
    (pooling) never see the canvas."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, model.preprocessing.channels, size, size, generator=gen)
    x = x.to(model.device).requires_grad_(True)
    try:
        grad = rf_gradients(model.module, [layer], x, gen)
    except (RuntimeError, ValueError):  # too small for some module
        return None
    if grad is None:
        return None
    return support_box(grad.abs().sum(dim=(0, 1)).cpu() > 0)


def smallest_canvas(model: Model, info: LayerInfo, size: int) -> int:
    """The smallest square canvas on which the centre unit of ``info``'s layer (measured on
    a ``size`` px canvas) sees its whole receptive field, unclipped and as large as on the
    full canvas: its activation is then the same function of the same pixels (no padding
    enters it), at a fraction of the cost. Candidates are multiples of the layer's stride
    with room for the RF plus a pixel on each side (three tried); ``size`` when none is
    smaller, or when the RF is clipped or unknown."""
    if info.rf_clipped or info.rf_size is None:
        return size
    rf = max(info.rf_size)
    step = max(1, max(info.rf_stride) if info.rf_stride else 1)
    first = int(math.ceil((rf + 2) / step) * step)
    for s in range(first, first + 3 * step, step):
        if s >= size:
            break
        box = rf_box(model, info.name, s)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        inside = r0 > 0 and c0 > 0 and r1 < s - 1 and c1 < s - 1
        if inside and max(r1 - r0 + 1, c1 - c0 + 1) == rf:
            return s
    return size


def _span(mask: torch.Tensor) -> tuple[int, int] | None:
    idx = torch.nonzero(mask).flatten()
    return (int(idx[0]), int(idx[-1])) if len(idx) else None


def rf_centres(model: Model, layers: Sequence[str], size: int) -> dict[str, tuple[float, float]]:
    """The input position ``(y, x)`` (pixels) of the RF centre of each layer's centre unit.

    From the support of the gradient of that unit (:func:`rf_gradients`) on a noise image
    around grey, through the model's preprocessing: the middle of its bounding box when the
    RF fits the canvas; else the centroid of the gradient's energy, with the box's free side
    where one side is clipped. On an even canvas the centre unit does not sit at the canvas
    centre: this measures where it is.
    """
    gen = torch.Generator().manual_seed(0)
    channels = model.preprocessing.channels
    out: dict[str, tuple[float, float]] = {}
    x = (0.5 + 0.1 * torch.randn(len(layers), channels, size, size, generator=gen)).to(model.device)
    x.requires_grad_(True)
    grad = rf_gradients(model.module, list(layers), x, gen, inputs=model.normalize)
    if grad is None:
        raise ValueError(f"no gradient of {list(layers)} reaches the input")
    energy = grad.float().pow(2).sum(dim=1).cpu()  # (layers, size, size)
    for i, name in enumerate(layers):
        e = energy[i]
        seen = e > 0
        centre = []
        for axis in (0, 1):
            profile = e.sum(dim=1 - axis)
            box = _span(seen.any(dim=1 - axis))
            if box is None:
                centre.append((size - 1) / 2.0)
                continue
            lo, hi = box
            if lo > 0 and hi < size - 1:
                centre.append((lo + hi) / 2.0)
            else:
                pos = torch.arange(size, dtype=torch.float64)
                centre.append(float((profile.double() * pos).sum() / profile.double().sum()))
        out[name] = (centre[0], centre[1])
    return out


def layers_table(infos: list[LayerInfo]) -> str:
    """A fixed-width text table of an inventory."""
    header = f"{'layer':<34} {'type':<18} {'output':<16} {'RF':>9} {'stride':>7}"
    lines = [header, "-" * len(header)]
    for info in infos:
        shape = "x".join(map(str, info.output_shape)) if info.output_shape else "-"
        rf = f"{info.rf_size[0]}x{info.rf_size[1]}" if info.rf_size else "-"
        if info.rf_clipped:
            rf += "+"
        stride = str(info.rf_stride[0]) if info.rf_stride else "-"
        lines.append(f"{info.name:<34} {info.type:<18} {shape:<16} {rf:>9} {stride:>7}")
    return "\n".join(lines)


def layers_json(model: Model, infos: list[LayerInfo]) -> str:
    """JSON document: the model summary and its inventory."""
    return json.dumps({"model": model.summary(), "layers": [i.to_dict() for i in infos]}, indent=1)


def declared_stages(model: Model | nn.Module) -> list[str]:
    """The stage outputs the model declares (``model.info["feature_layers"]``: timm's
    ``feature_info``) that name one of its modules, in the declared order; empty for models
    that declare none."""
    model = as_model(model)
    named = dict(model.module.named_modules())
    return [n for n in model.info.get("feature_layers") or () if n in named]


def default_layers(
    model: Model | nn.Module, traced: Sequence[LayerInfo] | None = None
) -> list[str]:
    """The layers an atlas covers by default: the network's blocks in execution order.

    A block is a composite module (it has children) that sits in a ``Sequential`` or
    ``ModuleList`` and is not inside another block, with a spatial output: ResNet's
    ``layerN.M``, EfficientNet's ``_blocks.N``, MobileNet's ``features.N``. Networks with no
    such blocks get the stages they declare (``model.info["feature_layers"]``: timm's
    ``feature_info``, e.g. RegNet's ``s1``..``s4``), else their activation modules that follow
    convolutions.

    ``traced``: the model's inventory without receptive fields (``layers(model,
    receptive_field=False)``) where the caller has it already: it is not traced again.
    """
    model = as_model(model)
    module = model.module
    named = dict(module.named_modules())
    containers = (nn.Sequential, nn.ModuleList)
    blocks = []
    for name, sub in named.items():
        if not name or not any(True for _ in sub.children()) or isinstance(sub, containers):
            continue
        parent = named[name.rsplit(".", 1)[0]] if "." in name else module
        if not isinstance(parent, containers):
            continue
        if any(name.startswith(b + ".") for b in blocks):
            continue
        blocks.append(name)
    if traced is None:
        traced = layers(model, receptive_field=False)
    infos = {i.name: i for i in traced}
    spatial = [b for b in blocks if infos[b].output_shape and len(infos[b].output_shape) == 3]
    if spatial:
        return sorted(spatial, key=lambda n: infos[n].order or 0)
    declared = declared_stages(model)
    if declared:  # the stages the model declares (timm's feature_info)
        return sorted(declared, key=lambda n: infos[n].order or 0)
    acts = []
    ordered = sorted(
        (
            i
            for i in infos.values()
            if i.order is not None and not isinstance(named[i.name], nn.Identity | nn.Dropout)
        ),
        key=lambda i: i.order,
    )
    for prev, cur in zip(ordered, ordered[1:], strict=False):
        if isinstance(named[prev.name], nn.Conv2d) and not isinstance(
            named[cur.name], (nn.Conv2d, nn.BatchNorm2d)
        ):
            acts.append(cur.name)
        elif isinstance(named[prev.name], nn.BatchNorm2d) and isinstance(
            named[cur.name], nn.ReLU | nn.ReLU6 | nn.SiLU | nn.GELU | nn.Hardswish
        ):
            acts.append(cur.name)
    return acts or [i.name for i in ordered if isinstance(named[i.name], nn.Conv2d)]
