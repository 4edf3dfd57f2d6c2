"""Digests of a model's weights and of its architecture: the identity of a network for the
caches (the pipeline's stage cache, the user-level control cache, the shared layer geometry
of :mod:`interp.layer_geometry`)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from .base import Model

__all__ = ["architecture_digest", "weights_digest"]


def weights_digest(model: Model | nn.Module, length: int = 16) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, dtypes, shapes, bytes)."""
    module = model.module if isinstance(model, Model) else model
    h = hashlib.sha256()
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not isinstance(t, torch.Tensor):
                continue
            flat = t.detach().reshape(-1).contiguous().cpu()
            h.update(f"{name}|{flat.dtype}|{tuple(t.shape)}|".encode())
            h.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return h.hexdigest()[:length]


def architecture_digest(model: Model | nn.Module, length: int = 16) -> str:
    """SHA-256 of the names, dtypes and shapes of the parameters and buffers (not their values):
    the identity of a random-init control, whose weights come from its seed."""
    module = model.module if isinstance(model, Model) else model
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, t in module.state_dict().items():
        if isinstance(t, torch.Tensor):
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    return h.hexdigest()[:length]
