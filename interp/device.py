"""Device selection: ``auto`` picks CUDA when present, CPU otherwise."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import platform
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

from .errors import DeviceError

__all__ = [
    "PRECISIONS",
    "HalveOnOOM",
    "cpu_allocator",
    "keeps_freed_memory",
    "cpu_bf16_fast",
    "default_batch",
    "is_out_of_memory",
    "module_device",
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
    later): torch's own probe where the build has it (it also asks the OS for the tiles), else
    the CPU flags. Asked once per process."""
    probe = getattr(getattr(torch._C, "_cpu", None), "_is_amx_tile_supported", None)
    if probe is not None:
        return bool(probe())
    return "amx_bf16" in _cpu_identity()[2]


@functools.cache
def _cpu_identity() -> tuple[str, int, frozenset[str]]:
    """``(vendor, family, flags)`` of the first CPU in /proc/cpuinfo (empty where unknown)."""
    vendor, family, flags = "", -1, frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key == "cpu family" and family < 0 and value.strip().isdigit():
                    family = int(value)
                elif key == "flags":
                    flags = frozenset(value.split())
                    break
    except OSError:
        pass
    return vendor, family, flags


@functools.cache
def cpu_bf16_fast() -> bool:
    """Whether this CPU runs dense bf16 convolutions clearly faster than fp32 ones, decided
    from what the CPU is, not from a timing (a timing would let the same seed give different
    images in two processes): AMX tiles (Intel Sapphire Rapids and later), or AVX512-BF16 on
    an AMD Zen 5 or later (family 26+, full-width 512-bit units). Checked against the fp32 and
    bf16 peaks that ``scripts/bench_featvis.py`` measures (a 2048^2 matmul and a 128-channel
    3x3 conv): bf16 about 3.5x fp32 on a Sapphire Rapids Xeon, 2.0x on a Zen 5 EPYC, where
    bf16 renders of dense networks were 1.2-2.0x faster (docs/benchmarks.md). Zen 4 runs
    512-bit bf16 as two 256-bit halves and stays fp32 until measured otherwise."""
    if cpu_has_amx_bf16():
        return True
    vendor, family, flags = _cpu_identity()
    return vendor == "AuthenticAMD" and family >= 26 and "avx512_bf16" in flags


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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_TRIM_THRESHOLD, _GLIBC_MMAP_MAX = 128 * 1024, 65536  # glibc's documented defaults
_allocator_depth = 0


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


@contextlib.contextmanager
def cpu_allocator(device: torch.device | str = "cpu") -> Iterator[bool]:
    """Keep freed memory in the process while a CPU job runs (glibc only; yields whether it
    did).

    PyTorch's CPU tensors come from ``malloc``. glibc serves a block above its mmap threshold
    (at most 32 MiB) with a fresh ``mmap`` and gives it back with ``munmap`` on free, and it
    trims the heap's free top back to the OS: every optimization step then allocates its
    large activations and gradients anew and the kernel zero-fills each of their pages on
    first touch. Measured on a 2-core CPU (EfficientNet-Lite0 ``_blocks.1``, 16 images, two
    renders of 12 steps): 3.7 million minor page faults and 6.5 s of system time at 224 px,
    renders 2.4-3.0x slower than with freed memory kept (13 thousand faults); at 128 px 0.3
    million faults, 1.7-1.9x slower (docs/benchmarks.md). Inside this
    context glibc makes no mmap of its own (``M_MMAP_MAX=0``) and trims nothing below 1 GiB
    (``M_TRIM_THRESHOLD``), so freed blocks are reused; on exit glibc's documented defaults
    are set again and ``malloc_trim(0)`` hands the kept memory back. Nested uses restore once,
    at the outermost exit. Nothing happens for other devices, other C libraries, or with
    ``INTERP_CPU_ALLOCATOR=0``.
    """
    global _allocator_depth
    off = os.environ.get("INTERP_CPU_ALLOCATOR", "1").strip().lower() in ("0", "off", "no")
    libc = None if off or torch.device(device).type != "cpu" else _glibc()
    if libc is None:
        yield False
        return
    if _allocator_depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    _allocator_depth += 1
    try:
        yield True
    finally:
        _allocator_depth -= 1
        if _allocator_depth == 0:
            libc.mallopt(_M_MMAP_MAX, _GLIBC_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_TRIM_THRESHOLD)
            libc.malloc_trim(0)


_F = TypeVar("_F", bound=Callable[..., Any])


def module_device(module: torch.nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for tensor-free modules)."""
    first = next(itertools.chain(module.parameters(), module.buffers()), None)
    return torch.device("cpu") if first is None else first.device


def _device_of(model: Any) -> torch.device:
    """The device of a Model's (or module's) first parameter or buffer; CPU when it has none."""
    module = getattr(model, "module", model)
    return module_device(module) if isinstance(module, torch.nn.Module) else torch.device("cpu")


def keeps_freed_memory(fn: _F) -> _F:
    """Decorator for an instrument whose first argument is the model (render, examples,
    dissect, the hierarchy's probes): run it inside :func:`cpu_allocator` for the model's
    device. The examples pass over 128 photos
    (efficientnet_lite0, 16 blocks) took 1.44 s with glibc's defaults and 0.81 s with freed
    memory kept, plain inference 1.76 s and 1.00 s (``scripts/bench_examples.py``, same CPU as
    the renderer's figures)."""

    @functools.wraps(fn)
    def wrapper(model: Any, *args: Any, **kwargs: Any) -> Any:
        with cpu_allocator(_device_of(model)):
            return fn(model, *args, **kwargs)

    return wrapper  # type: ignore[return-value]
