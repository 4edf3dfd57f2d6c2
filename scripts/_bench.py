"""Shared by the benchmark scripts (run as ``python scripts/<name>.py``, so this folder is on
``sys.path``)."""

from __future__ import annotations

from interp import Model, WeightsUnavailableError, load_model


def load_or_random(spec: str, device: str = "cpu") -> tuple[Model, bool]:
    """``spec`` with its trained weights, or at random init when they are not on this machine
    (torchvision's are downloads); ``(model, random)``. For benchmarks only: a measurement
    on a random network says nothing about what a trained one learned, so the scripts mark
    such rows."""
    try:
        return load_model(spec, device=device, quiet=True), False
    except WeightsUnavailableError:
        return load_model(spec, device=device, weights="none", quiet=True), True
