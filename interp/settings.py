"""One source of defaults: the settings of each job, read by the API, the CLI and the report.

The API functions take their keyword defaults from these instances, the CLI takes its flags'
defaults from them, and the report's full preset is built from them (its quick preset only
shrinks sizes). ``tests/test_settings.py`` checks all three agree, flag by flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

#: the smallest image side any job accepts (the CLI's too)
MIN_SIZE = 8

S = TypeVar("S")

__all__ = [
    "RenderSettings",
    "HierarchySettings",
    "ExamplesSettings",
    "AttributionSettings",
    "RENDER",
    "HIERARCHY",
    "EXAMPLES",
    "ATTRIBUTION",
    "MIN_SIZE",
    "recorded",
    "setting",
    "with_overrides",
]


def setting(default: Any, help: str = "", **cli: Any) -> Any:
    """A settings field whose CLI flag is built from it (:func:`interp.cli._common.
    render_options`): ``help`` (the flag's help without its ``[default]``) and ``cli``:

    * ``low``, ``high`` (and ``closed=True``: both ends allowed) for numbers; ``choices``;
    * ``default_help``: the ``[...]`` of the help when the default is not the value itself;
    * ``flag``: a boolean's negative flag (``--no-align`` for ``align=True``);
    * ``what``: the precision's ``add_precision`` phrase;
    * ``cli=False``: no flag built here (another parser has it: ``seed``, ``per_layer``);
    * ``recorded=False``: not in the job's settings record (it chooses the units, not how
      each is made).
    """
    return field(default=default, metadata={"help": help, **cli})


def with_overrides(settings: S, /, *, job: str = "", **overrides: Any) -> S:
    """``settings`` with the fields named in ``overrides`` replaced (the keyword overrides of
    a job that takes a settings object: ``atlas(model, steps=64)``). A name that is not a
    field raises ``TypeError`` naming the settings class and its fields."""
    known = [f.name for f in fields(settings)]  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise TypeError(
            f"{job or 'the job'}() got unknown arguments {unknown}; its settings are the fields "
            f"of {type(settings).__name__}: {sorted(known)}"
        )
    return replace(settings, **overrides)  # type: ignore[type-var]


def recorded(settings: Any) -> dict[str, Any]:
    """The fields of ``settings`` a job records (and keys its cache by): every field but those
    marked ``recorded=False``, in field order."""
    return {
        f.name: getattr(settings, f.name)
        for f in fields(settings)
        if f.metadata.get("recorded", True)
    }


@dataclass(frozen=True)
class RenderSettings:
    """Feature visualization (``render``, ``visualize``, ``atlas``). The fields are the
    render flags of ``interp visualize`` and ``interp atlas`` (their defaults and help)."""

    steps: int = setting(256, "optimization steps", low=1)
    size: int = setting(128, "canvas size in pixels", low=MIN_SIZE)
    objective: str = setting(
        "channel",
        "channel: mean over positions; neuron: the centre position",
        choices=("channel", "neuron"),
    )
    #: ``auto``: pixel for receptive fields up to a quarter of the canvas, fft beyond
    #: (featvis.render_defaults; measured in docs/benchmarks.md)
    param: str = setting(
        "auto",
        "auto: pixel where the layer's receptive field is at most a quarter of the canvas, fft "
        "beyond; fft: lucid's decorrelated Fourier image; pixel; maco: phase-only Fourier "
        "with a natural magnitude spectrum",
        choices=("auto", "fft", "pixel", "maco"),
    )
    #: units optimized together (``None``: 16 on CPU, 64 on CUDA)
    batch: int | None = setting(
        None,
        "units optimized together",
        low=1,
        default_help="16 on CPU, 64 on CUDA; halved on out-of-memory",
    )
    lr: float = setting(0.05, "Adam learning rate", low=0)
    precision: str = setting("auto", what="of the optimization steps")
    #: fraction of the steps (from the start) with redirected ReLU/ReLU6 gradients
    #: (interp.featvis.redirect); measured in docs/benchmarks.md ("Early layers:
    #: parametrization and redirected gradients")
    redirect: float = setting(
        0.0,
        "fraction of the steps, from the start, with redirected ReLU/ReLU6 gradients (0: off)",
        low=0,
        high=1,
        closed=True,
    )
    #: return each image at its best one-pixel translation (featvis.render's ``align``;
    #: measured in docs/benchmarks.md, "Pixel-grid alignment")
    align: bool = setting(
        True,
        "return each image as optimized, not at the one-pixel translation where its unit is "
        "highest",
        flag="--no-align",
    )
    transforms: bool = setting(True, "no jitter/scale/rotate", flag="--no-transforms")
    upsample: int | None = setting(
        None, "resize the canvas to N px before the model", low=MIN_SIZE, default_help=""
    )
    reference: str | None = setting(
        "photos",
        "natural reference set: 'photos' (random crops of skimage.data photos), a folder of "
        "images, or 'none'",
    )
    n_reference: int = setting(256, "reference crops", low=1)
    #: the seed of every unit's start and transforms (the CLI's common ``--seed``)
    seed: int = setting(0, low=0, cli=False)
    per_layer: int = setting(8, cli=False, recorded=False)
    #: how redirected gradients pass a clamp (interp.featvis.redirect); no CLI flag, and
    #: recorded only when ``redirect`` is on (it changes nothing otherwise)
    redirect_mode: str = setting("unit", cli=False)


@dataclass(frozen=True)
class HierarchySettings:
    """The hierarchy check (``hierarchy``). ``precision`` everywhere: see
    :func:`interp.device.use_bf16`."""

    data: str = "partsworld"
    control_seeds: tuple[int, ...] = (0, 1)
    min_control_units: int = 500
    max_control_seeds: int = 48
    control_quantile: float = 0.95
    reference_images: int = 256
    quantile: float = 0.005
    iou_threshold: float = 0.04
    bootstrap: int = 1000
    bn_images: int = 512
    precision: str = "auto"


@dataclass(frozen=True)
class ExamplesSettings:
    """Dataset examples (``examples``; the stage of ``interp.pipeline.examples.examples_job``,
    whose record is every field but ``data``, which keys the stage on its own)."""

    data: str = setting("photos", recorded=False)
    k: int = 9
    #: also the k most negative images
    bottom: bool = False
    #: at most one crop per photo
    dedup: bool = True
    #: images (``None``: the data's default count)
    n: int | None = None
    #: image side (``None``: the data's, or the model's input for ``photos``)
    size: int | None = None
    seed: int = 0
    precision: str = "auto"


@dataclass(frozen=True)
class AttributionSettings:
    """Attribution (``attribute``; the unit card's "drives")."""

    method: str = "ig"
    n_steps: int = 50


RENDER = RenderSettings()
HIERARCHY = HierarchySettings()
EXAMPLES = ExamplesSettings()
ATTRIBUTION = AttributionSettings()
