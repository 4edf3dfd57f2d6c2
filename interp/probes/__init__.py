"""Probes: measurements of what units respond to, each validated on known answers."""

from .dissect import Dissection, LayerDissection, dissect, selectivity_index
from .edges import EdgeResult, edge_probe, gratings, orientation_selectivity
from .filters import FilterAnalysis, analyse_filters, colour_fraction, fit_gabor
from .hierarchy import Hierarchy, HierarchyResult, Verdict, random_control

__all__ = [
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
    "edge_probe",
    "fit_gabor",
    "gratings",
    "orientation_selectivity",
    "random_control",
    "selectivity_index",
]
