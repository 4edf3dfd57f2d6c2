"""Feature visualization: objectives, parametrizations, transforms and the renderer (the
jobs that write files, ``visualize`` and ``atlas``, are in :mod:`interp.pipeline`)."""

from . import objectives
from .render import RenderResult, evaluate, render, render_channels, render_defaults, unit_seed

__all__ = [
    "RenderResult",
    "evaluate",
    "objectives",
    "render",
    "render_channels",
    "render_defaults",
    "unit_seed",
]
