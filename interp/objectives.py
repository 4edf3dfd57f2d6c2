"""``interp.objectives``: feature-visualization objectives (see
:mod:`interp.featvis.objectives`)."""

from .featvis.objectives import (
    INPUT,
    LOGITS,
    Objective,
    as_objective,
    channel,
    direction,
    diversity,
    l2,
    logit,
    neuron,
    total_variation,
)

__all__ = [
    "INPUT",
    "LOGITS",
    "Objective",
    "as_objective",
    "channel",
    "direction",
    "diversity",
    "l2",
    "logit",
    "neuron",
    "total_variation",
]
