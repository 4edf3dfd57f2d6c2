"""Probes that measure what units respond to (edges first; dissection and selectivity next)."""

from .edges import EdgeResult, edge_probe, gratings, orientation_selectivity

__all__ = ["EdgeResult", "edge_probe", "gratings", "orientation_selectivity"]
