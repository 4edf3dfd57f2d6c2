"""The renderer: optimize a batch of images so each maximizes its objective.

Differences from lucent's ``render_vis`` that make it faster and safer:
  * only the layers the objective reads are hooked, and the forward pass stops after the
    deepest of them (an objective on an early layer never runs the rest of the network);
  * the canvas is fed at its own size (no upsampling to 224 unless ``upsample`` is given);
  * random transforms are drawn per image, as one batched affine warp on the model's device;
  * each image is returned at the one-pixel translation its unit prefers (``align``);
  * bf16 autocast and channels_last on CUDA; deterministic on CPU for a given seed;
  * hooks are removed and mode / ``requires_grad`` restored afterwards, also on error.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..activations import ActivationCapture, capture, preserved_state, resolve_layer
from ..checks import check_finite, check_float, check_int
from ..device import cpu_bf16_fast, keeps_freed_memory, use_bf16
from ..inventory import layers as inventory_layers
from ..models.base import Model
from ..models.registry import as_model
from ..settings import RENDER
from .objectives import INPUT, LOGITS, Objective, as_objective, channel
from .param import PARAMS, make_param
from .redirect import check_mode as check_redirect_mode
from .redirect import redirect_gradients
from .render_result import RenderResult
from .render_steps import (
    ALIGN_SHIFTS,
    RESTARTS,
    Getter,
    Run,
    ToInput,
    adam,
    check_units,
    discover_layers,
    forward_pass,
    restart_dead_starts,
    unit_seed,
)
from .transforms import NONE, STANDARD, RobustTransform

__all__ = [
    "RenderResult",
    "render",
    "render_channels",
    "render_defaults",
    "unit_seed",
    "evaluate",
    "ALIGN_SHIFTS",
    "RESTARTS",
]


def render_defaults(
    model: Model, layer: str | None = None, *, canvas: int = RENDER.size
) -> dict[str, Any]:
    """What :func:`render` chooses with ``precision="auto"``, ``channels_last=None`` and
    ``param="auto"`` for ``model`` (truncated at ``layer``, or whole) on its device, for a
    ``canvas``-pixel input.

    * CUDA: bf16 autocast where the GPU has native bf16 (:func:`interp.device.use_bf16`).
    * CPU: bf16 autocast only on CPUs whose dense bf16 convolutions are clearly faster than
      fp32 ones (:func:`interp.device.cpu_bf16_fast`: AMX tiles, or AVX512-BF16 on a Zen 5
      or later; decided from the CPU's identity, not a timing, so every process draws the
      same images) and only when the network up to ``layer`` has no depthwise convolution;
      fp32 otherwise. Measured side by
      side (docs/benchmarks.md, "The feature-visualization matrix"): bf16 renders resnet18,
      vgg11 and densenet121 1.3-1.8x faster than fp32 on a Sapphire Rapids Xeon (AMX) and
      1.3-1.8x on a Zen 5 EPYC (AVX512-BF16), but mobilenet_v2 and efficientnet_lite0
      (depthwise convolutions, memory-bound ops) 1.1-2.0x slower on both; on a Zen 4 EPYC
      bf16 did not pay at all (1.06x). The final values are evaluated in fp32 either way;
      rendering is an optimization whose gradients only steer the image, so unlike the
      measuring instruments (examples, dissection), its CPU default may take bf16.
    * channels_last input everywhere: faster than NCHW in every case of the matrix (fp32 and
      bf16, 0.54-0.99x the NCHW time).
    * parametrization: ``pixel`` when ``layer``'s measured receptive field
      (:func:`interp.inventory.layers`) spans at most a quarter of the canvas, ``fft``
      otherwise (and for the logits or a whole-network objective). Measured
      (docs/benchmarks.md, "Parametrization by receptive field"): on EfficientNet-Lite0 the
      Fourier image's slowly moving low frequencies cannot reach the saturated flat colours
      and fine periodic patterns small-field units want (stem: 2/8 images beat the best
      natural crop, pixel 7/8 with the eighth unit dead); pixel reaches 5-12% more on
      fields of 3-19 px, the two tie at 35-67 px and fft leads from 83 px.
    """
    model = as_model(model)
    device = model.device
    if device.type == "cuda":
        bf16 = use_bf16("auto", device)
    elif device.type == "cpu":
        bf16 = cpu_bf16_fast() and not _has_depthwise(model, layer)
    else:
        bf16 = False
    rf = receptive_field(model, layer) if layer else None
    param = "pixel" if rf is not None and 4 * rf <= canvas else "fft"
    return {"precision": "bf16" if bf16 else "fp32", "channels_last": True, "param": param}


_RF_CACHE: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, int | None]] = (
    weakref.WeakKeyDictionary()
)


def receptive_field(model: Model, layer: str) -> int | None:
    """The larger side of ``layer``'s measured receptive field in input pixels (``None``
    for a layer without a spatial output); measured once per module and layer."""
    model = as_model(model)
    name = resolve_layer(model, layer)
    known = _RF_CACHE.setdefault(model.module, {})
    if name not in known:
        (info,) = inventory_layers(model, names=[name])
        known[name] = max(info.rf_size) if info.rf_size else None
    return known[name]


def _has_depthwise(model: Model, layer: str | None) -> bool:
    """A depthwise (or other grouped) convolution among the modules registered before
    ``layer`` (registration order is execution order in the models interp ships and in
    torchvision's; a grouped conv registered later only makes the rule conservative)."""
    last = resolve_layer(model, layer) if layer else None
    for name, module in model.module.named_modules():
        if isinstance(module, torch.nn.Conv2d) and module.groups > 1:
            return True
        if last is not None and name == last:
            break
    return False


def check_render_args(
    *,
    steps: int,
    size: int,
    batch: int | None,
    upsample: int | None,
    lr: float,
    redirect: float = 0.0,
    min_size: int = 1,
) -> None:
    """Range checks of the renderer's arguments (``min_size``: the smallest canvas and
    upsampled size; the jobs, which jitter and scale, ask for 8)."""
    check_int("steps", steps, low=0)
    check_int("size", size, low=min_size)
    check_int("batch", batch, optional=True)
    check_int("upsample", upsample, low=min_size, optional=True)
    check_float("lr", lr, low=0, open_low=True)
    check_float("redirect", redirect, low=0, high=1)


@keeps_freed_memory
def render(
    model: Model,
    objective: Objective | str | Any,
    *,
    steps: int = RENDER.steps,
    size: int = RENDER.size,
    batch: int | None = None,
    param: str | Callable[[], tuple[list[torch.Tensor], Callable[[], torch.Tensor]]] = RENDER.param,
    transforms: RobustTransform | None = STANDARD,
    lr: float = RENDER.lr,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    upsample: int | None = None,
    precision: str = RENDER.precision,
    channels_last: bool | None = None,
    amp: bool | None = None,
    redirect: float = RENDER.redirect,
    redirect_mode: str = RENDER.redirect_mode,
    fold_bn: bool = True,
    align: bool = RENDER.align,
    progress: bool = True,
    desc: str = "render",
) -> RenderResult:
    """Optimize images to maximize ``objective``.

    Args:
        model: a loaded :class:`Model` (its device is used).
        objective: an :class:`Objective`, ``"layer:channel"``, or a lucent objective.
        steps: Adam steps.
        size: canvas size in pixels (square).
        batch: number of images (default: what the objective defines, else 1).
        param: ``"auto"`` (default: what :func:`render_defaults` chooses from the layer's
            measured receptive field: ``pixel`` for a field of at most a quarter of the
            canvas, ``fft`` beyond), ``"fft"`` (lucid's decorrelated Fourier image),
            ``"pixel"``, ``"maco"``, or a lucent ``param_f`` returning ``(params, image_f)``.
        transforms: transformation robustness (default
            :data:`~interp.featvis.transforms.STANDARD`: lucent's jitter, scale and rotation
            centred on the canvas; ``LUCENT``: lucent's geometry, its 12 px pad a zoom-out;
            ``None``: none).
        lr: Adam learning rate (lucent's default 0.05).
        seed: seed of the run; image ``i`` starts from ``seeds[i]`` when given, else from
            ``unit_seed(seed, i)``.
        upsample: resize the transformed canvas to this size before the model (lucent
            upsamples to 224; default: no resizing).
        precision: ``auto`` (what :func:`render_defaults` chooses: bf16 autocast for the
            optimization steps on a CUDA GPU with bf16 and on AMX CPUs for networks without
            depthwise convolutions, fp32 elsewhere), ``bf16`` or ``fp32``; final values are
            always evaluated in float32.
        channels_last: channels_last input (default: :func:`render_defaults`, on: measured
            faster than NCHW on every case of the benchmark matrix).
        redirect: fraction of the steps, from the start, with redirected gradients through
            ReLU, ReLU6, Hardtanh, Hardsigmoid and Hardswish modules
            (:mod:`interp.featvis.redirect`; 0: off). The forward pass and the final values
            are the true ones.
        redirect_mode: ``image`` (lucid's rule: redirect at a clamp only for images whose
            true gradient there is zero) or ``unit`` (every clamped element pushed back in).
        fold_bn: optimize on the network with eval-mode BatchNorm folded into the
            convolutions that feed it (:mod:`interp.featvis.fold`; checked to agree with the
            true network, else nothing is folded); the final values come from the true one.
        align: return each image at the one of its four one-pixel translations (none,
            right, down, both; circular) at which its objective is highest. A network whose
            first layer has stride 2 sees only every other pixel row and column, so an image
            that the random jitter has made good on average over both pixel grids can be good
            on one and poor on the other: measured on EfficientNet-Lite0 ``_blocks.0``, the
            value of the same image varied up to 5x between its translations, and which one
            the canvas happened to show decided whether it beat the best natural crop
            (docs/benchmarks.md, "Pixel-grid alignment"). The translated images look the same;
            three more forward passes at the end (``False``: the canvas as optimized).
        progress: show a progress bar.
        amp: deprecated: ``precision="bf16"`` (``True``) or ``"fp32"`` (``False``).

    Returns:
        :class:`RenderResult`.
    """
    check_render_args(
        steps=steps, size=size, batch=batch, upsample=upsample, lr=lr, redirect=redirect
    )
    check_redirect_mode(redirect_mode)
    model = as_model(model)
    obj = as_objective(objective)
    device = model.device
    precision = _precision(precision, amp)
    param, amp, channels_last = _choices(
        model, obj, param, precision, channels_last, canvas=upsample or size
    )
    params, image_fn, seeds = _parametrize(
        model, obj, param, batch=batch, seed=seed, seeds=seeds, size=size
    )
    generators = [torch.Generator().manual_seed(unit_seed(s, "transforms")) for s in seeds]
    to_input = ToInput(model, transforms or NONE, generators, upsample, channels_last)
    with torch.no_grad():
        probe = to_input(image_fn(), train=False)
    layer_names = list(obj.layers) or discover_layers(model, obj, probe)
    names = {n: resolve_layer(model, n) for n in layer_names if n not in (INPUT, LOGITS)}
    need_logits = LOGITS in layer_names
    hooked = list(dict.fromkeys(names.values()))
    optimizer = adam(params, lr)
    history: list[torch.Tensor] = []
    autocast = (
        torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        if amp
        else contextlib.nullcontext()
    )

    from tqdm.auto import tqdm

    with preserved_state(model.module, eval_mode=True, freeze=True):
        cap = (
            ActivationCapture(model.module, hooked, stop=not need_logits, eval_mode=True)
            if hooked
            else None
        )
        run = Run(obj, model, cap, need_logits, Getter(model, names), image_fn, to_input)
        redirect_steps = round(redirect * steps)
        with contextlib.ExitStack() as stack:
            if cap is not None:
                stack.enter_context(cap)
            with torch.no_grad():  # check indices before spending steps
                run.getter.acts, run.getter.output = forward_pass(model, cap, probe, need_logits)
                check_units(obj, run.getter)
            # the optimization runs with BatchNorm folded into the convolutions' swapped-in
            # parameters (checked to agree); the final values on the true network below
            folding = contextlib.ExitStack()
            stack.enter_context(folding)
            folded = folding.enter_context(run.folding(probe, hooked)) if fold_bn else 0
            switch = folding.enter_context(_redirecting(model, redirect_mode, redirect_steps))
            if switch is not None:  # dead starts are judged on the true gradients
                switch.on = False
            restarts = restart_dead_starts(run, params, param, seeds, size, device)
            for step in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
                if switch is not None:
                    switch.on = step < redirect_steps
                history.append(run.step(optimizer, autocast))
            redirected_modules = switch.modules if switch is not None else 0
            folding.close()  # the true network again: redirected and folded modules restored
            final, values, shifts = run.final(align)
    info = {"steps": steps, "size": size, "param": param if isinstance(param, str) else "custom"}
    info |= {"lr": lr, "seeds": seeds, "layers": hooked, "device": str(device)}
    info |= {"redirect": redirect if redirect_steps else 0.0}
    info |= {"redirected_modules": redirected_modules, "folded_batchnorms": folded}
    info["shifts"] = shifts
    return _result(obj, final, values, history, restarts, info)


def _precision(precision: str, amp: bool | None) -> str:
    """``precision``, or what the deprecated ``amp`` flag meant (with a warning)."""
    if amp is None:
        return precision
    warnings.warn(
        "render(amp=...) is deprecated: use precision='bf16' or 'fp32'",
        DeprecationWarning,
        stacklevel=4,  # the caller of render, past render and keeps_freed_memory's wrapper
    )
    return "bf16" if amp else "fp32"


def _redirecting(model: Model, mode: str, steps: int) -> Any:
    """The redirected-gradient switch (:func:`redirect_gradients`) when ``steps`` use it,
    else a context without one."""
    return redirect_gradients(model.module, mode) if steps else contextlib.nullcontext(None)


def _choices(
    model: Model,
    obj: Objective,
    param: Any,
    precision: str,
    channels_last: bool | None,
    *,
    canvas: int,
) -> tuple[Any, bool, bool]:
    """``(param, bf16 autocast, channels_last)``: the ``"auto"`` and ``None`` choices
    resolved by :func:`render_defaults` for the objective's layer (its one layer; the whole
    network when it reads the logits or several layers)."""
    obj_layers = [n for n in obj.layers if n not in (INPUT, LOGITS)]
    # with the logits read, the whole network runs: its rules, not one layer's
    deepest = obj_layers[-1] if len(obj_layers) == 1 and LOGITS not in obj.layers else None
    if isinstance(param, str) and param not in ("auto", *PARAMS):
        raise ValueError(
            f"unknown parametrization {param!r}: choose one of auto, {', '.join(PARAMS)}"
        )
    auto = precision == "auto" or channels_last is None or param == "auto"
    chosen = render_defaults(model, deepest, canvas=canvas) if auto else {}
    if param == "auto":
        param = chosen["param"]
    if precision == "auto":
        amp = chosen["precision"] == "bf16"
    else:
        amp = use_bf16(precision, model.device)
    if channels_last is None:
        channels_last = chosen["channels_last"]
    return param, amp, channels_last


def _parametrize(
    model: Model,
    obj: Objective,
    param: Any,
    *,
    batch: int | None,
    seed: int,
    seeds: Sequence[int] | None,
    size: int,
) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor], list[int]]:
    """``(params, image_fn, seeds)``: the images' parametrization, one start per seed
    (``seeds``, else ``unit_seed(seed, i)``), or a lucent ``param_f``'s."""
    b = batch or obj.batch or 1
    if obj.batch is not None and b != obj.batch:
        raise ValueError(f"objective {obj.name} defines {obj.batch} images; batch={b}")
    seeds = list(seeds) if seeds is not None else [unit_seed(seed, i) for i in range(b)]
    if callable(param):
        params, image_fn = param()
        first = image_fn()
        b = first.shape[0]
        seeds = seeds[:b] if len(seeds) >= b else [unit_seed(seed, i) for i in range(b)]
    else:
        channels = model.preprocessing.channels
        params, image_fn = make_param(param, b, channels, size, seeds, model.device)
    return params, image_fn, seeds


def _result(
    obj: Objective,
    final: torch.Tensor,
    values: torch.Tensor,
    history: list[torch.Tensor],
    restarts: list[int],
    info: dict[str, Any],
) -> RenderResult:
    """The :class:`RenderResult`, after checking that no value is NaN or inf."""
    if values.dim() == 0:  # a whole-batch objective (lucent): one value for all
        values = values.expand(final.shape[0]).clone()

    curve = torch.stack(history) if history else torch.zeros(0)
    check_finite(
        torch.cat([values.flatten().cpu(), curve.cpu()]),
        f"the objective {obj.name}",
        "the model's weights, the objective or the learning rate produce NaN or inf; check "
        "the model (interp checks its weights at load) and try a lower --lr",
    )
    dead = [r < 0 for r in restarts] if restarts else [False] * final.shape[0]
    return RenderResult(
        images=final.float().cpu(),
        values=values.cpu(),
        history=[float(v) for v in torch.stack(history).cpu()] if history else [],
        objective=obj.name,
        units=obj.units,
        info=info,
        dead=dead,
        restarts=[r if r >= 0 else RESTARTS for r in restarts],
    )


def evaluate(
    model: Model, objective: Objective | str, images: torch.Tensor, *, batch_size: int = 64
) -> torch.Tensor:
    """Value of each image of the objective's batch on every image of ``images``.

    ``objective`` defines ``B`` units (one per image); returns ``(N, B)``: row ``n`` holds every
    unit's value on image ``n`` (``[0, 1]`` pixels, already at the size to evaluate).
    """
    model = as_model(model)
    obj = as_objective(objective)
    b = obj.batch or 1
    names = {n: resolve_layer(model, n) for n in obj.layers if n not in (INPUT, LOGITS)}
    need_logits = LOGITS in obj.layers
    hooked = list(dict.fromkeys(names.values()))
    rows = []
    with torch.no_grad(), preserved_state(model.module, eval_mode=True):
        cap = ActivationCapture(model.module, hooked, stop=not need_logits) if hooked else None
        with cap if cap is not None else contextlib.nullcontext():
            for start in range(0, images.shape[0], batch_size):
                chunk = images[start : start + batch_size].to(model.device)
                acts, out = forward_pass(model, cap, model.normalize(chunk), need_logits)
                for n in range(chunk.shape[0]):
                    getter = Getter(model, names)
                    getter.acts = {k: v[n : n + 1].expand(b, *v.shape[1:]) for k, v in acts.items()}
                    getter.output = None if out is None else out[n : n + 1].expand(b, -1)
                    getter.image = chunk[n : n + 1].expand(b, *chunk.shape[1:])
                    rows.append(obj(getter).float().cpu())
    return torch.stack(rows)


def render_channels(
    model: Model,
    layer: str,
    channels: Sequence[int] | None = None,
    *,
    batch: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> RenderResult:
    """One image per channel of ``layer`` (all channels by default), ``batch`` images
    optimized together (default: all at once; the same name as :func:`render`'s). Each
    channel's start and transforms come from ``unit_seed(seed, layer, channel)``, so a
    channel renders the same in any batch."""
    model = as_model(model)
    dotted = resolve_layer(model, layer)
    if channels is None:
        probe = model.example_input(1)
        with torch.no_grad():
            channels = list(range(capture(model, probe, [dotted])[dotted].shape[1]))
    channels = [int(c) for c in channels]
    step = batch or len(channels)
    results = []
    for start in range(0, len(channels), step):
        group = channels[start : start + step]
        results.append(
            render(
                model,
                channel(dotted, group),
                batch=len(group),
                seeds=[unit_seed(seed, dotted, c) for c in group],
                **kwargs,
            )
        )
    if len(results) == 1:
        return results[0]
    return RenderResult(
        images=torch.cat([r.images for r in results]),
        values=torch.cat([r.values for r in results]),
        history=[float(sum(v) / len(v)) for v in zip(*(r.history for r in results), strict=True)]
        if all(r.history for r in results)
        else [],
        objective=f"channel({dotted}:[{len(channels)} channels])",
        units=[u for r in results for u in (r.units or [])],
        info={**results[0].info, "batches": len(results)},
    )
