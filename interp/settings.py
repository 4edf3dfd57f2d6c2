"""One source of defaults: the settings of each job, read by the API, the CLI and the report.

The API functions take their keyword defaults from these instances, the CLI takes its flags'
defaults from them, and the report's full preset is built from them (its quick preset only
shrinks sizes). ``tests/test_settings.py`` checks all three agree, flag by flag.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "RenderSettings",
    "HierarchySettings",
    "ExamplesSettings",
    "AttributionSettings",
    "RENDER",
    "HIERARCHY",
    "EXAMPLES",
    "ATTRIBUTION",
]


@dataclass(frozen=True)
class RenderSettings:
    """Feature visualization (``render``, ``visualize``, ``atlas``)."""

    steps: int = 256
    size: int = 128
    objective: str = "channel"
    #: ``auto``: pixel for receptive fields up to a quarter of the canvas, fft beyond
    #: (featvis.render_defaults; measured in docs/benchmarks.md)
    param: str = "auto"
    lr: float = 0.05
    transforms: bool = True
    reference: str = "photos"
    n_reference: int = 256
    per_layer: int = 8
    precision: str = "auto"
    #: fraction of the steps (from the start) with redirected ReLU/ReLU6 gradients
    #: (interp.featvis.redirect); measured in docs/benchmarks.md ("Early layers:
    #: parametrization and redirected gradients")
    redirect: float = 0.0
    redirect_mode: str = "unit"
    #: return each image at its best one-pixel translation (featvis.render's ``align``;
    #: measured in docs/benchmarks.md, "Pixel-grid alignment")
    align: bool = True


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
    """Dataset examples (``examples``)."""

    data: str = "photos"
    k: int = 9
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
