"""Device selection: ``auto`` picks CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch

from .errors import DeviceError

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` (or a ``torch.device``) into a ``torch.device``.

    ``"auto"`` (or ``None``) is CUDA when a GPU is visible, else CPU. Asking for CUDA on a
    machine without one raises :class:`DeviceError` instead of failing later inside torch.
    """
    if isinstance(device, torch.device):
        spec = str(device)
    else:
        spec = (device or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(
            f"unknown device {spec!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'"
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {spec!r} was asked for but no CUDA GPU is visible to torch "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
                "use --device cpu (or 'auto', which falls back to the CPU)"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise DeviceError(
                f"device {spec!r} was asked for but only {count} GPU(s) are visible "
                f"(cuda:0..cuda:{count - 1})"
            )
    elif dev.type != "cpu" and dev.type != "mps":
        raise DeviceError(f"unsupported device {spec!r}: use 'auto', 'cpu' or 'cuda'")
    return dev
