"""The edge instruments of the hierarchy check, each declared in its own module
(:mod:`.gratings`, :mod:`.erf_fit`, :mod:`.dissection_edges`) against the protocol of
:mod:`.base`, and registered here in the order the hierarchy runs them. Another instrument
registers itself with :func:`register_edge_instrument` from its own module."""

from .base import (
    EDGE_INSTRUMENTS,
    Column,
    EdgeInstrument,
    InstrumentRegistry,
    ProbeContext,
    Probed,
    quantiles,
    register_edge_instrument,
)
from .dissection_edges import DISSECTION
from .erf_fit import ERF
from .gratings import GRATINGS

for _instrument in (GRATINGS, ERF, DISSECTION):
    if _instrument.name not in EDGE_INSTRUMENTS:
        register_edge_instrument(_instrument)

__all__ = [
    "DISSECTION",
    "EDGE_INSTRUMENTS",
    "ERF",
    "GRATINGS",
    "Column",
    "EdgeInstrument",
    "InstrumentRegistry",
    "ProbeContext",
    "Probed",
    "quantiles",
    "register_edge_instrument",
]
