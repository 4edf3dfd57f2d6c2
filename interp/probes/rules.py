"""What every per-unit rule of the probes shares: a unit rule measured on one network is
judged against a random-init control of the same architecture, and a caller who applies its
absolute cut-offs alone is told so.

Measured on a random-init 11x11 conv layer (torch's default init), the grating rule's
absolute cut-offs (OSI >= 0.2, drive ratio >= 0.3) call 52% of the units edge units: their
OSIs are 0.25-0.55. The hierarchy check supplies the control's threshold; a direct caller
of :func:`~interp.probes.edges.edge_units` or :func:`~interp.probes.erf.erf_edge_units`
passes one (from :func:`~interp.probes.hierarchy.edge_control_thresholds`) or says
``absolute=True``; otherwise :class:`AbsoluteRuleWarning` is raised as a warning.
"""

from __future__ import annotations

import warnings

__all__ = ["AbsoluteRuleWarning", "warn_absolute"]


class AbsoluteRuleWarning(UserWarning):
    """A unit rule was applied with its absolute cut-offs alone, without the random-init
    control's threshold that tells a trained unit's tuning from what random weights give."""


def warn_absolute(rule: str, cut: str, stacklevel: int = 3) -> None:
    """Warn that ``rule`` ran without a control threshold (``cut``: its absolute cut-offs)."""
    warnings.warn(
        f"{rule} without a control threshold applies the absolute rule alone ({cut}); random "
        "weights pass it too (52% of the units of a random-init 11x11 conv layer pass the "
        "grating rule). Pass the threshold that "
        "interp.probes.edge_control_thresholds(model, layers) measures on random-init "
        "controls of the same architecture (interp.hierarchy does this for you), or "
        "absolute=True to apply the absolute rule knowingly.",
        AbsoluteRuleWarning,
        stacklevel=stacklevel,
    )
