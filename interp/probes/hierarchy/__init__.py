"""The hierarchy check: how edge-, colour-, part- and object-like each layer is, against a
random-initialization control, and whether "early edges, later parts" holds.

For the model and for random-init controls (the same architecture re-initialized with fixed
seeds; BatchNorm statistics of a control are re-estimated on the probe images, so that it is
not handicapped by statistics that belong to other weights), every layer's units are
measured with

* every registered **edge instrument** (:mod:`interp.probes.instruments`), each validated
  on planted units (tests/test_probes_edges.py, tests/test_erf.py):

  - **gratings** (:mod:`interp.probes.edges`): evoked (grey-subtracted, signed) tuning, F1
    or F0 by the unit's phase behaviour, read per unit at a contrast where its tuning touches
    no bound; an edge unit is *driven* (drive ratio >= 0.3 against its top-0.5% response on
    natural photo crops) and *oriented* (OSI >= 0.2 and above the controls' threshold);
  - **ERF fit** (:mod:`interp.probes.erf`): a Gabor fit of the effective receptive field (the
    gradient of the centre unit averaged over noise images) that is good (R^2 >= 0.8) and
    oriented, and above the controls' threshold of orientedness; layers with receptive fields
    under 5 px are not measured;
  - **dissection**: Network Dissection's edge-concept detectors;

* **Network Dissection** (:mod:`interp.probes.dissect`): each unit's best concept; it is a
  colour / edge / part / object detector when that IoU passes ``iou_threshold``;
* **class selectivity** (Morcos et al. 2018);
* and, for the first convolution, Gabor fits and the colour/luminance split
  (:mod:`interp.probes.filters`).

**Controls that are not noise.** The dissected controls (``control_seeds``) are joined, for
the edge instruments, by further edge-only seeds, each probed only in the layers that
still have fewer than ``min_control_units`` control units; an instrument's control threshold
is the ``control_quantile`` (95%) of its gated control units' values, with a bootstrap
interval, never the 99th percentile of a few dozen units.

**Verdict** (:mod:`interp.probes.verdict`): per edge instrument, the depth centroid of its
excess-over-control profile against the part detectors'; bootstrap over units and control
seeds; the headline says how many instruments support it or how they disagree.

The package, one job per module: :mod:`.layers` (which layers), :mod:`.control` (the
random-init control), :mod:`.network` (one network's arrays), :mod:`.thresholds` (control
thresholds and unit statuses), :mod:`.result` (:class:`Hierarchy`, :class:`Verdict`,
:class:`UnitScore`) and :mod:`.measure` (the measuring loop). Figures:
:mod:`interp.views.hierarchy_figures`.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..instruments import EDGE_INSTRUMENTS, EdgeInstrument, register_edge_instrument
from .control import random_control, untouched_batchnorm, with_settled_batchnorm
from .layers import default_hierarchy_layers
from .measure import (
    Compute,
    StageHook,
    compare,
    dissect_settings,
    edge_control_thresholds,
    measure_hierarchy,
    probe_network,
    reference_crops,
)
from .network import NetworkProbes
from .result import Hierarchy, UnitScore, Verdict, network_file
from .thresholds import control_thresholds, edge_statuses

__all__ = [
    "EDGE_INSTRUMENTS",
    "Compute",
    "EdgeInstrument",
    "Hierarchy",
    "NetworkProbes",
    "StageHook",
    "UnitScore",
    "Verdict",
    "compare",
    "control_thresholds",
    "default_hierarchy_layers",
    "dissect_settings",
    "edge_control_thresholds",
    "edge_statuses",
    "measure_hierarchy",
    "network_file",
    "probe_network",
    "random_control",
    "untouched_batchnorm",
    "with_settled_batchnorm",
    "reference_crops",
    "register_edge_instrument",
]


def __getattr__(name: str) -> Any:
    if name == "HierarchyResult":  # the name before results had one shape
        warnings.warn(
            "interp.probes.hierarchy.HierarchyResult is deprecated: use Hierarchy",
            DeprecationWarning,
            stacklevel=2,
        )
        return Hierarchy
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
