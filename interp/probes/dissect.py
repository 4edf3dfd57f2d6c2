"""Network Dissection (Bau et al. 2017) on any dataset with concept masks, plus class selectivity.

For every unit (channel) of every requested layer:

1. **threshold** ``T`` = the top ``quantile`` (default 0.5%) of the unit's activations over the
   whole dataset (every spatial position of every image). The quantile is kept exactly by a
   streaming top-k per unit (``k = quantile * images * positions``), so memory is
   ``quantile`` of the activations, not all of them; when ``k`` would pass ``max_topk`` the
   values are a fixed random subsample of positions (an unbiased estimate of the
   quantile);
2. **IoU**: the activation map is upsampled (bilinear, :func:`upsample`) to the mask size and
   thresholded,
   ``A = up > T`` (``up >= T`` when the values tied at ``T`` are few, see
   :meth:`StreamingQuantile.inclusive`: a plateau of equal top values, as a saturated ReLU6
   gives, is the region, but a unit zero almost everywhere is not credited with every zero);
   for every concept ``c`` of category ``k``,
   ``IoU = sum |A ∩ M_c| / sum |A ∪ M_c|`` over the images labelled for category ``k``;
3. the unit's label is its highest-IoU concept; it is a **detector** of that concept when the
   IoU passes ``iou_threshold`` (default 0.04).

The data are streamed twice — thresholds, then IoU — and each pass runs every layer at once
(one truncated forward pass per batch, stopped after the deepest layer asked for). The first
pass also accumulates the per-class mean of every unit's spatially averaged, rectified
activation, from which the **class selectivity index** (Morcos et al. 2018) follows:
``SI = (mu_max - mu_rest) / (mu_max + mu_rest)``, ``mu_rest`` the mean over the other classes.

Memory bound: ``sum over layers of units * k * 4`` bytes for the thresholds (``k`` as above,
at most ``max_topk``), plus ``units * concepts`` counters and at most 2**22 upsampled values
(16 MiB) at a time.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from ..activations import ActivationCapture, capture, resolve_layers
from ..checks import check_finite, check_fraction, check_int
from ..data.concepts import ConceptData, ConceptDataError, ConceptItem, load_concepts
from ..device import HalveOnOOM, default_batch, keeps_freed_memory, use_bf16
from ..inventory import default_layers
from ..models.base import Model
from ..models.registry import as_model
from ..streaming import Stream, object_state, restore_object
from .accumulators import IoUAccumulator, StreamingQuantile, upsample
from .dissection import Dissection, LayerDissection, selectivity_index

__all__ = [
    "Dissection",
    "LayerDissection",
    "StreamingQuantile",
    "IoUAccumulator",
    "dissect",
    "selectivity_index",
    "upsample",
]


def _fingerprint(model: Model) -> float:
    """A cheap identity of the weights (sum of every parameter), for checkpoint keys."""
    with torch.no_grad():
        return round(float(sum(p.double().sum() for p in model.module.parameters())), 6)


class _Items(torch.utils.data.Dataset):
    """This rank's items (all of them in a single process) after the first ``skip``, with
    their dataset indices."""

    def __init__(self, data: ConceptData, masks: bool, indices: list[int]) -> None:
        self.data, self.masks = data, masks
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[int, ConceptItem]:
        j = self.indices[i]
        return j, self.data.item(j, masks=self.masks)


def _collate(batch: list[tuple[int, ConceptItem]]) -> tuple[list[int], list[ConceptItem]]:
    return [b[0] for b in batch], [b[1] for b in batch]


def stream_activations(
    model: Model,
    layers: Sequence[str],
    data: ConceptData,
    *,
    masks: bool,
    batch_size: int = 32,
    precision: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
    desc: str = "",
    indices: Sequence[int] | None = None,
) -> Iterator[tuple[list[int], list[ConceptItem], dict[str, torch.Tensor]]]:
    """Yield ``(indices, items, {layer: activations})`` over ``data``, one truncated pass per
    batch for all ``layers``. Hooks and the model's state are restored when the iterator ends
    or is closed. A batch that runs out of device memory is split in halves (said on stderr)
    and the smaller size kept. ``indices``: the items to pass over (default: all of them)."""
    items = list(range(len(data))) if indices is None else list(indices)
    loader = torch.utils.data.DataLoader(
        _Items(data, masks, items),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=_collate,
    )
    device = model.device
    bf16 = use_bf16(precision, device)
    halver = HalveOnOOM(batch_size, "batch of images")
    with torch.no_grad(), ActivationCapture(model.module, list(layers)) as cap:
        for indices, items in tqdm(loader, desc=desc, disable=not progress, leave=False):
            # NCHW on purpose: channels_last input speeds up the forward (bench_speedups) but
            # slows the upsampling and IoU more (bench_dissect: 15.7-16.0x vs 13.0-14.3x)
            x = model.normalize(torch.stack([it.image for it in items])).to(device)

            def work(a: int, b: int, x: torch.Tensor = x) -> dict[str, torch.Tensor]:
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                    return cap.run(x[a:b])

            for a, b, acts in halver.chunks(len(items), work):  # halved on out-of-memory
                yield indices[a:b], items[a:b], acts


def _spatial_layers(
    model: Model, layers: Sequence[str], data: ConceptData
) -> tuple[list[str], dict[str, str]]:
    """Split ``layers`` into those with 4-D outputs and the rest (with the reason)."""
    item = data.item(0, masks=False)
    with torch.no_grad():
        acts = capture(model, model.normalize(item.image[None]).to(model.device), list(layers))
    keep, skipped = [], {}
    for name, a in acts.items():
        if isinstance(a, torch.Tensor) and a.dim() == 4:
            keep.append(name)
        else:
            shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            skipped[name] = f"output {shape} is not a 4-D (N, C, H, W) map"
    return keep, skipped


@keeps_freed_memory
def dissect(
    model: Model,
    data: ConceptData | str = "partsworld",
    layers: str | Sequence[str] | None = None,
    *,
    quantile: float = 0.005,
    iou_threshold: float = 0.04,
    batch_size: int | None = None,
    top_images: int = 8,
    max_topk: int = 100_000,
    precision: str = "auto",
    num_workers: int = 0,
    stream: Stream | None = None,
    progress: bool = True,
) -> Dissection:
    """Network Dissection of ``layers`` over ``data`` (see the module docstring).

    Args:
        model: the model (its preprocessing turns the [0, 1] images into input).
        data: a :class:`~interp.data.concepts.ConceptData` or a spec (``partsworld``,
            ``broden:PATH``).
        layers: layer names (default: the network's blocks, as the atlas uses).
        quantile: the activation quantile a unit's region is cut at (0.005: the top 0.5%).
        iou_threshold: a unit detects its best concept when the IoU exceeds this.
        batch_size: images per forward pass (default 32 on CPU, 128 on CUDA; halved on
            out-of-memory).
        top_images: images kept per unit (highest maximum activation), for figures.
        max_topk: bound on values kept per unit for the quantile (see :class:`StreamingQuantile`).
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``bf16`` or ``fp32``.
        num_workers: DataLoader workers producing images and masks.
        stream: the run this dissection is part of (:class:`~interp.streaming.Stream`):
            which items are this shard's, how the shards' passes are merged (exactly, after
            each pass) and where the running state is kept. The default is one process with
            nothing kept; the pipeline's :class:`~interp.pipeline.sharding.RankStream` shards
            over ``torchrun`` ranks and checkpoints every minute and between the passes, so
            that an interrupted run with the same model, data and settings resumes (a
            finished state, kept for the hierarchy's stages, is reused whole).
        progress: show progress bars.

    Returns:
        ``{layer: LayerDissection}`` (a :class:`Dissection`); layers whose output is not a
        4-D map are skipped and listed, with the reason, in its ``skipped``.
    """
    check_fraction("quantile", quantile)
    check_fraction("iou_threshold", iou_threshold)
    check_int("batch_size", batch_size, optional=True)
    check_int("top_images", top_images)
    check_int("max_topk", max_topk)
    model = as_model(model)
    if isinstance(data, str):
        data = load_concepts(data, size=model.input_size[0])
    if layers is None:
        layers = default_layers(model)
    names = resolve_layers(model, layers)
    names, skipped = _spatial_layers(model, names, data)
    if not names:
        raise ConceptDataError(
            "none of the layers has a 4-D (N, C, H, W) output, which dissection needs: "
            + "; ".join(f"{k}: {v}" for k, v in skipped.items())
        )
    n = len(data)
    n_classes = len(data.class_names)
    batch_size = batch_size or default_batch(model.device, 32, 128)
    kw = {"batch_size": batch_size, "precision": precision, "num_workers": num_workers}

    stream = stream or Stream()
    mine = stream.shard(n)
    state = _PassState(n_classes)
    saved = stream.resume(
        {
            "model": [model.name, _fingerprint(model)],
            "data": [data.name, n, data.image_size, data.mask_size],
            "layers": names,
            "settings": [quantile, iou_threshold, top_images, max_topk, precision],
        }
    )
    start_pass, done = (int(saved["pass"]), int(saved["done"])) if saved else (1, 0)
    for name, st in saved.get("quant", {}).items():
        state.quant[name] = StreamingQuantile(1, 1, quantile, max_topk)
        restore_object(state.quant[name], st)
    if saved:
        state.sums, state.class_count = dict(saved["sums"]), saved["class_count"]
        if progress and start_pass == 3:
            print("dissect: reusing the finished dissection of an interrupted run", file=sys.stderr)
        elif progress:
            print(f"dissect: resuming pass {start_pass} after {done} images", file=sys.stderr)

    passes = {"model": model, "names": names, "data": data, "progress": progress, **kw}
    if start_pass == 1:
        _threshold_pass(state, stream, mine[done:], done, quantile, max_topk, **passes)
        done = 0
        stream.save(lambda: state.snapshot(2, 0), now=True)  # a resumed run starts at pass 2

    for name, q in state.quant.items():  # NaN activations would make every threshold NaN
        check_finite(torch.as_tensor(q.result()), f"{name}'s activation thresholds")
    cat_of = data.category_of()
    accs = {
        name: IoUAccumulator(
            q.result(),
            cat_of,
            len(data.categories),
            data.mask_size,
            top_images,
            inclusive=q.inclusive(),
        )
        for name, q in state.quant.items()
    }
    for name, st in saved.get("accs", {}).items() if start_pass >= 2 else ():
        restore_object(accs[name], st)
    if start_pass <= 2:
        done = _iou_pass(state, stream, accs, mine[done:], done, **passes)
    stream.finish(lambda: state.snapshot(3, done, accs))  # this shard's finished pass 2

    if stream.distributed:
        gathered = stream.gather({n: a for n, a in accs.items()})
        for name, acc in accs.items():
            acc.merge([g[name] for i, g in enumerate(gathered) if i != stream.index])
    return _results(state, accs, names, data, skipped, quantile, iou_threshold)


class _PassState:
    """The running state of the first pass, kept between passes and in checkpoints: the
    quantile streams and the per-class activation sums of every layer."""

    def __init__(self, n_classes: int) -> None:
        self.n_classes = n_classes
        self.quant: dict[str, StreamingQuantile] = {}
        self.sums: dict[str, torch.Tensor] = {}
        self.class_count = torch.zeros(max(1, n_classes), dtype=torch.float64)

    def snapshot(
        self, pass_no: int, count: int, accs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "pass": pass_no,
            "done": count,
            "quant": {k: object_state(q) for k, q in self.quant.items()},
            "sums": self.sums,
            "class_count": self.class_count,
            "accs": {k: object_state(a) for k, a in (accs or {}).items()},
        }


def _threshold_pass(
    state: _PassState,
    stream: Stream,
    indices: Sequence[int],
    done: int,
    quantile: float,
    max_topk: int,
    *,
    model: Model,
    names: list[str],
    data: ConceptData,
    progress: bool,
    **kw: Any,
) -> None:
    """Pass 1: each unit's threshold (exact streaming quantile) and its class means (for
    selectivity), over ``indices`` (after ``done`` items of this shard); merged exactly over
    the shards."""
    n, n_classes = len(data), state.n_classes
    for _, items, acts in stream_activations(
        model,
        names,
        data,
        masks=False,
        progress=progress,
        desc="dissect 1/2",
        indices=indices,
        **kw,
    ):
        labels = torch.tensor([it.label for it in items])
        for name, a in acts.items():
            a = a.float()
            if name not in state.quant:
                b, c, h, w = a.shape
                state.quant[name] = StreamingQuantile(c, n * h * w, quantile, max_topk, seed=0)
                state.sums[name] = torch.zeros(c, max(1, n_classes), dtype=torch.float64)
            state.quant[name].update(a)
            if n_classes and (labels >= 0).all():
                means = a.clamp_min(0).mean(dim=(2, 3)).double().cpu()  # (B, C)
                state.sums[name].index_add_(1, labels, means.T)
        if n_classes and (labels >= 0).all():
            state.class_count.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64))
        done += len(items)
        stream.save(lambda done=done: state.snapshot(1, done))

    if stream.distributed:  # exact merge of every shard's first pass
        quant, sums = state.quant, state.sums
        gathered = stream.gather(
            {n: (quant[n], sums[n]) for n in quant} | {"__count": state.class_count}
        )
        others = [g for i, g in enumerate(gathered) if i != stream.index]
        for name in quant:
            quant[name].merge([g[name][0] for g in others])
            sums[name] = torch.stack([g[name][1] for g in gathered]).sum(dim=0)
        state.class_count = torch.stack([g["__count"] for g in gathered]).sum(dim=0)


def _iou_pass(
    state: _PassState,
    stream: Stream,
    accs: dict[str, IoUAccumulator],
    indices: Sequence[int],
    done: int,
    *,
    model: Model,
    names: list[str],
    data: ConceptData,
    progress: bool,
    **kw: Any,
) -> int:
    """Pass 2: every unit's IoU with every concept, over ``indices`` (after ``done`` items of
    this shard); returns the shard's items done."""
    for indices_, items, acts in stream_activations(
        model, names, data, masks=True, progress=progress, desc="dissect 2/2", indices=indices, **kw
    ):
        for name, a in acts.items():
            accs[name].update(a, items, indices_)
        done += len(items)
        stream.save(lambda done=done: state.snapshot(2, done, accs))
    return done


def _results(
    state: _PassState,
    accs: dict[str, IoUAccumulator],
    names: list[str],
    data: ConceptData,
    skipped: dict[str, str],
    quantile: float,
    iou_threshold: float,
) -> Dissection:
    """The :class:`Dissection` of the finished (merged) passes."""
    results = Dissection(skipped=skipped, data=data.name)
    class_count = state.class_count
    have_classes = state.n_classes >= 2 and bool((class_count > 0).all())
    cat_of = data.category_of()
    for name in names:
        acc = accs[name]
        means = (state.sums[name] / class_count.clamp_min(1)).numpy() if have_classes else None
        results[name] = LayerDissection(
            layer=name,
            concepts=data.concept_names(),
            categories=list(data.categories),
            concept_category=cat_of,
            thresholds=acc.t.cpu().numpy(),
            inclusive=acc.inclusive.cpu().numpy(),
            iou=acc.result(),
            iou_threshold=iou_threshold,
            quantile=quantile,
            top_images=acc.top_idx.cpu().numpy(),
            class_means=means,
            info={
                "quantile_sampled": state.quant[name].sampled,
                "values_kept_per_unit": state.quant[name].capacity,
            },
        )
    return results
