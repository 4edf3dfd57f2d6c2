"""Probes: measurements of what units respond to, each validated on known answers."""

import warnings
from typing import Any

from .dissect import Dissection, LayerDissection, dissect, selectivity_index
from .edges import EdgeResult, edge_probe, edge_units, gratings, orientation_selectivity
from .erf import erf_edge_units, erf_probe
from .filters import FilterAnalysis, analyse_filters, colour_fraction, fit_gabor
from .hierarchy import (
    Hierarchy,
    UnitScore,
    Verdict,
    edge_control_thresholds,
    random_control,
)
from .instruments import EDGE_INSTRUMENTS, Column, EdgeInstrument, register_edge_instrument
from .rules import AbsoluteRuleWarning

__all__ = [
    "AbsoluteRuleWarning",
    "Column",
    "EDGE_INSTRUMENTS",
    "EdgeInstrument",
    "Dissection",
    "EdgeResult",
    "FilterAnalysis",
    "Hierarchy",
    "UnitScore",
    "Verdict",
    "LayerDissection",
    "analyse_filters",
    "colour_fraction",
    "dissect",
    "edge_control_thresholds",
    "edge_probe",
    "edge_units",
    "erf_edge_units",
    "erf_probe",
    "fit_gabor",
    "gratings",
    "orientation_selectivity",
    "random_control",
    "register_edge_instrument",
    "selectivity_index",
]


def __getattr__(name: str) -> Any:
    if name == "HierarchyResult":  # the name before results had one shape
        warnings.warn(
            "interp.probes.HierarchyResult is deprecated: use Hierarchy",
            DeprecationWarning,
            stacklevel=2,
        )
        return Hierarchy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
