"""Many render jobs, packed into full batches: the units of a whole layer (or of several) are
optimized together instead of two or three images at a time.

A :class:`RenderJob` is a few images of one objective, each from its own seed (the extra
starts of a unit; a diversity set, whose term couples the set's own images). :func:`pack`
cuts a list of jobs, in order, into batches of at most ``batch_size`` images, never splitting
a job and never mixing jobs for which :func:`~interp.featvis.render.render_defaults` chooses
another parametrization or precision; :func:`render_jobs` renders each batch as one
:func:`~interp.featvis.objectives.stack` of its jobs' objectives and hands every job its own
rows of the result.

Each image depends only on its own objective and seed, never on its batch neighbours: the
stacked objective gives every part its own rows, the starts and random transforms are drawn
per seed, BatchNorm runs in eval mode and Adam updates each element alone. What does differ
is float rounding (a convolution over 40 images sums in another order than over 2), and an
optimization of a hundred steps amplifies it: measured on EfficientNet-Lite0 ``_blocks.10``
(fft, 96 px), a unit alone and inside a batch of 16 agree to 6e-8 after 1 step, 2e-7 after 8,
6e-4 after 32, and after 128 steps differ by 0.025 on average (0.17 at most, on a [0, 1]
scale): the same picture, not the same bits. On ``_blocks.2`` (pixel) they were identical.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..device import HalveOnOOM
from ..models.base import Model
from .objectives import INPUT, LOGITS, Objective, stack
from .render import render, render_defaults
from .render_result import RenderResult

__all__ = ["RenderJob", "RenderStats", "pack", "render_jobs"]


@dataclass
class RenderJob:
    """``len(seeds)`` images of ``objective`` (which defines that many, or any number);
    ``tag`` is the caller's, handed back with the job's result."""

    objective: Objective
    seeds: list[int]
    tag: Any = None

    @property
    def size(self) -> int:
        return len(self.seeds)

    def layer(self) -> str | None:
        """The one layer the objective reads (``None``: the logits, none or several)."""
        names = [n for n in self.objective.layers if n not in (INPUT, LOGITS)]
        if LOGITS in self.objective.layers or len(set(names)) != 1:
            return None
        return names[0]


@dataclass
class RenderStats:
    """The render calls of a job: their number and images (mean batch: images / calls),
    and the seconds spent per layer (each call's time shared out by its images' layers)."""

    calls: int = 0
    images: int = 0
    sizes: list[int] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, n: int, seconds: float = 0.0, layers: dict[str, int] | None = None) -> None:
        self.calls += 1
        self.images += n
        self.sizes.append(n)
        for layer, k in (layers or {}).items():
            self.charge(layer, seconds * k / max(1, n))

    def charge(self, layer: str, seconds: float) -> None:
        """Add ``seconds`` of work to ``layer``'s account."""
        self.seconds[layer] = self.seconds.get(layer, 0.0) + seconds

    @property
    def mean_batch(self) -> float:
        return self.images / self.calls if self.calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "images": self.images,
            "mean_batch": round(self.mean_batch, 2),
            "seconds_by_layer": {k: round(v, 2) for k, v in self.seconds.items()},
        }

    @classmethod
    def merged(cls, docs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """:meth:`to_dict` of several ranks' stats, summed."""
        calls = sum(d["calls"] for d in docs)
        images = sum(d["images"] for d in docs)
        seconds: dict[str, float] = {}
        for d in docs:
            for k, v in d["seconds_by_layer"].items():
                seconds[k] = round(seconds.get(k, 0.0) + v, 2)
        mean = round(images / calls, 2) if calls else 0.0
        return {"calls": calls, "images": images, "mean_batch": mean, "seconds_by_layer": seconds}


def _choice(
    model: Model,
    job: RenderJob,
    canvas: int,
    memo: dict[Any, dict[str, Any]],
    param: str,
    precision: str,
) -> tuple[str, str]:
    """What ``render`` resolves ``param`` and ``precision`` to for ``job`` alone."""
    if param != "auto" and precision != "auto":
        return param, precision
    layer = job.layer()
    if layer not in memo:
        memo[layer] = render_defaults(model, layer, canvas=canvas)
    chosen = memo[layer]
    return (
        chosen["param"] if param == "auto" else param,
        chosen["precision"] if precision == "auto" else precision,
    )


def pack(
    model: Model,
    jobs: Sequence[RenderJob],
    batch_size: int,
    *,
    canvas: int,
    param: str = "auto",
    precision: str = "auto",
) -> list[tuple[list[int], tuple[str, str]]]:
    """``[(job indices, (param, precision))]``: batches of at most ``batch_size`` images
    (a larger job is a batch of its own; a job is never cut), each of jobs for which
    ``render`` would choose the same parametrization and precision alone (``"auto"``:
    :func:`~interp.featvis.render.render_defaults` for the job's layer). The jobs keep their
    order within a choice; a batch is closed when the next job of its choice would overflow
    it, so batches come out roughly in the jobs' order."""
    memo: dict[Any, dict[str, Any]] = {}
    batches: list[tuple[list[int], tuple[str, str]]] = []
    open_: dict[tuple[str, str], tuple[list[int], int]] = {}
    for i, job in enumerate(jobs):
        k = _choice(model, job, canvas, memo, param, precision)
        current, images = open_.get(k, ([], 0))
        if current and images + job.size > batch_size:
            batches.append((current, k))
            current, images = [], 0
        open_[k] = (current + [i], images + job.size)
    leftovers = sorted(open_.items(), key=lambda kv: kv[1][0][0])  # by their first job
    batches += [(idx, k) for k, (idx, _) in leftovers]
    return batches


def _rows(result: RenderResult, a: int, b: int) -> RenderResult:
    info = dict(result.info)
    info["seeds"] = list(info.get("seeds", []))[a:b]
    info["shifts"] = list(info.get("shifts", []))[a:b]
    return RenderResult(
        images=result.images[a:b],
        values=result.values[a:b],
        history=result.history,
        objective=result.objective,
        units=result.units[a:b] if result.units else None,
        info=info,
        dead=list(result.dead[a:b]),
        restarts=list(result.restarts[a:b]),
    )


def render_jobs(
    model: Model,
    jobs: Sequence[RenderJob],
    *,
    batch_size: int,
    size: int,
    upsample: int | None = None,
    param: str = "auto",
    precision: str = "auto",
    stats: RenderStats | None = None,
    log: Any = None,
    **kwargs: Any,
) -> Iterator[tuple[RenderJob, RenderResult]]:
    """Render ``jobs`` packed by :func:`pack`; yield each job with its rows of its batch's
    result, batch by batch (a caller can write each as it comes). ``kwargs`` go to
    :func:`~interp.featvis.render.render` (``steps``, ``lr``, ``transforms``...); ``param``
    and ``precision`` ``"auto"`` resolve per job as ``render`` resolves them for the job
    alone. A batch that runs out of device memory is halved at job boundaries and retried."""
    for key in ("seeds", "batch", "seed"):
        if key in kwargs:
            raise TypeError(f"render_jobs() takes the seeds from the jobs, not {key}=")
    kwargs.setdefault("progress", False)
    packed = pack(
        model, jobs, batch_size, canvas=upsample or size, param=param, precision=precision
    )
    for indices, chosen in packed:
        group = [jobs[i] for i in indices]
        layers = ", ".join(dict.fromkeys(str(j.layer() or j.objective.name) for j in group))
        halver = HalveOnOOM(len(group), f"render batch ({layers})", log)

        def work(
            a: int, b: int, group: list[RenderJob] = group, chosen: tuple[str, str] = chosen
        ) -> RenderResult:
            part = group[a:b]
            n = sum(j.size for j in part)
            objective = stack([(j.objective, j.size) for j in part])
            t = time.perf_counter()
            result = render(
                model,
                objective,
                batch=n,
                seeds=[s for j in part for s in j.seeds],
                size=size,
                upsample=upsample,
                param=chosen[0],
                precision=chosen[1],
                **kwargs,
            )
            if stats is not None:
                layers: dict[str, int] = {}
                for j in part:
                    name = j.layer() or j.objective.name
                    layers[name] = layers.get(name, 0) + j.size
                stats.add(n, time.perf_counter() - t, layers)
            return result

        for a, b, result in halver.chunks(len(group), work):
            row = 0
            for job in group[a:b]:
                yield job, _rows(result, row, row + job.size)  # type: ignore[arg-type]
                row += job.size
