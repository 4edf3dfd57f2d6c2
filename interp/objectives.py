"""``interp.objectives``: feature-visualization objectives (see
:mod:`interp.featvis.objectives`)."""

from .featvis import objectives as _objectives
from .featvis.objectives import *  # noqa: F403

__all__ = list(_objectives.__all__)
