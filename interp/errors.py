"""Exceptions raised by interp.

Every error interp raises on bad input is an :class:`InterpError` whose message says what
went wrong *and what to do instead*; the CLI prints the message without a traceback.
"""

from __future__ import annotations

__all__ = [
    "InterpError",
    "UnknownModelError",
    "UnknownLayerError",
    "ChannelError",
    "UnknownClassError",
    "WeightsUnavailableError",
    "CheckpointError",
    "DeviceError",
    "ImageError",
    "NonFiniteError",
    "RangeError",
    "OutputError",
]


class InterpError(Exception):
    """Base class of every user-facing interp error.

    The message is one line: what is wrong and what to do. ``detail`` (optional) holds what a
    developer may want besides (another library's own error text); the CLI prints it only with
    ``--verbose``.
    """

    def __init__(self, *args: object, detail: str | None = None) -> None:
        super().__init__(*args)
        self.detail = detail


class UnknownModelError(InterpError, KeyError):
    """The model spec names no registered model, known prefix or existing file."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownLayerError(InterpError, KeyError):
    """A layer name is not in the model; the message suggests the nearest names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownClassError(InterpError, KeyError):
    """A class name is not among the model's classes; the message suggests near names."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ChannelError(InterpError, IndexError):
    """A channel index is outside a layer's range."""


class WeightsUnavailableError(InterpError, RuntimeError):
    """Pretrained weights are neither cached nor downloadable (offline, or the download failed)."""


class CheckpointError(InterpError, RuntimeError):
    """A checkpoint file is unreadable, unsafe without explicit trust, or does not match."""


class DeviceError(InterpError, RuntimeError):
    """The requested device does not exist on this machine."""


class ImageError(InterpError, ValueError):
    """An image file could not be read."""


class NonFiniteError(InterpError, ValueError):
    """A weight, an output, an objective or a loss is NaN or infinite."""


class RangeError(InterpError, ValueError):
    """A numeric argument is outside the range it must lie in."""


class OutputError(InterpError, OSError):
    """An output could not be written (read-only folder, disk full); earlier outputs are kept."""
