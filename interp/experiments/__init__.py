"""The experiments on why units specialize, each registered in its own module.

Importing the package registers the built-in experiments, in this order (the order of
``interp experiment`` and of the suite); see :mod:`interp.experiments.registry` to add one.
"""

from . import multiclass, symmetry, convergence, redundancy, axis_alignment, transfer  # noqa: I001
from ._common import RunSpec, limited_threads
from .registry import EXPERIMENTS, Experiment, register
from .results import ExperimentResult

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ExperimentResult",
    "RunSpec",
    "axis_alignment",
    "convergence",
    "limited_threads",
    "multiclass",
    "redundancy",
    "register",
    "symmetry",
    "transfer",
]
