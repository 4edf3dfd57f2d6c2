"""Probes: measurements of what units respond to, each validated on known answers."""

from .dissect import Dissection, LayerDissection, dissect, selectivity_index
from .edges import EdgeResult, edge_probe, edge_units, gratings, orientation_selectivity
from .erf import erf_edge_units, erf_probe
from .filters import FilterAnalysis, analyse_filters, colour_fraction, fit_gabor
from .hierarchy import (
    Hierarchy,
    HierarchyResult,
    Verdict,
    edge_control_thresholds,
    random_control,
)
from .rules import AbsoluteRuleWarning

__all__ = [
    "AbsoluteRuleWarning",
    "Dissection",
    "EdgeResult",
    "FilterAnalysis",
    "Hierarchy",
    "HierarchyResult",
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
    "selectivity_index",
]
