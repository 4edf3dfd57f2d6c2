"""Device selection: ``auto`` picks CUDA when present, CPU otherwise."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import torch

from .errors import DeviceError

__all__ = [
    "PRECISIONS",
    "HalveOnOOM",
    "default_batch",
    "is_out_of_memory",
    "resolve_device",
    "synchronize",
    "use_bf16",
]


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


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is the accelerator running out of memory (CUDA's OutOfMemoryError, or
    the plain RuntimeError older kernels raise with "out of memory" in it)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom | torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


class HalveOnOOM:
    """Work through ``n`` items in chunks of at most ``size``; when a chunk runs out of device
    memory, halve ``size``, say so (once per halving) and retry that chunk. The size stays
    halved for the rest of the job. A chunk of one item that still does not fit is an error
    that says what to do.

        halver = HalveOnOOM(64, "render batch", log)
        for start, stop, result in halver.chunks(len(todo), lambda a, b: work(todo[a:b])):
            ...
    """

    def __init__(self, size: int, what: str = "batch", log: object = None) -> None:
        import sys

        self.size = max(1, int(size))
        self.what = what
        self.halvings = 0
        self._log = log if callable(log) else (lambda m: print(m, file=sys.stderr))

    def chunks(self, n: int, fn: object) -> Iterator[tuple[int, int, object]]:
        """Yield ``(start, stop, fn(start, stop))`` covering ``range(n)`` in order."""
        start = 0
        while start < n:
            stop = min(n, start + self.size)
            try:
                out = fn(start, stop)  # type: ignore[operator]
            except Exception as exc:  # noqa: BLE001 - re-raised unless it is an OOM
                if not is_out_of_memory(exc):
                    raise
                if stop - start <= 1:
                    raise DeviceError(
                        f"out of device memory with a {self.what} of 1: use a smaller image "
                        "size, fewer layers, or --device cpu"
                    ) from exc
                self.size = max(1, (stop - start) // 2)
                self.halvings += 1
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self._log(
                    f"out of device memory at a {self.what} of {stop - start}: "
                    f"retrying with {self.size}"
                )
                continue
            yield start, stop, out
            start = stop


def default_batch(device: torch.device | str, cpu: int, cuda: int) -> int:
    """A job's default batch size: ``cuda`` on a GPU (large, to fill it; an out-of-memory
    batch is halved by :class:`HalveOnOOM`), ``cpu`` elsewhere."""
    return cuda if torch.device(device).type == "cuda" else cpu


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously): call before reading a
    timer. Nothing to wait for on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


#: the values of every ``precision`` setting (API, CLI, report)
PRECISIONS = ("auto", "bf16", "fp32")


@functools.cache
def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in AMX tiles (Intel Sapphire Rapids and
    later), where oneDNN's bf16 convolutions run several times faster than fp32 ones: torch's
    own probe where the build has it (it also asks the OS for the tiles), else the CPU flags.
    Asked once per process."""
    probe = getattr(getattr(torch._C, "_cpu", None), "_is_amx_tile_supported", None)
    if probe is not None:
        return bool(probe())
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return any(line.startswith("flags") and "amx_bf16" in line.split() for line in f)
    except OSError:
        return False


def use_bf16(precision: str, device: torch.device | str) -> bool:
    """The one precision policy of every job (rendering, training, dissection, examples):
    ``bf16`` and ``fp32`` are what they say; ``auto`` is bf16 autocast on a CUDA GPU with
    native bf16 and fp32 elsewhere. Never bf16 on the CPU by default for the measuring jobs,
    even where oneDNN has it: their numbers must not depend on the CPU (with and without
    AMX). The renderer's ``auto`` is :func:`interp.featvis.render.render_defaults`."""
    if precision not in PRECISIONS:
        raise DeviceError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"
