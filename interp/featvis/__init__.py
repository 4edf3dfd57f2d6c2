"""Feature visualization: objectives, parametrizations, transforms, the renderer, atlas."""

from . import objectives
from .jobs import atlas, default_layers, visualize
from .render import RenderResult, evaluate, render, render_channels, unit_seed

__all__ = [
    "RenderResult",
    "atlas",
    "default_layers",
    "evaluate",
    "objectives",
    "render",
    "render_channels",
    "unit_seed",
    "visualize",
]
