"""Small shared helpers: atomic file writes, output folders, stale temp files."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import OutputError

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "atomic_write_bytes",
    "save_png",
    "make_dir",
    "output_error",
    "is_temp_file",
    "remove_stale_temps",
    "prepare_output",
    "write_refused",
    "json_value",
    "save_arrays",
    "load_arrays",
    "only_stem",
    "result_stem",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; finished files get the usual permissions (0666 minus umask)
_FILE_MODE = 0o666 & ~_umask()

# Temp files are named ``.{name}.{host}.{pid}.{random}.tmp[{suffix}]``: hidden, and saying
# which process wrote them, so that :func:`remove_stale_temps` can remove those of writers
# that died (SIGKILL, out of memory, a lost node) and leave those of live ones alone.
_HOST = re.sub(r"[^A-Za-z0-9-]+", "-", socket.gethostname())[:40].strip("-") or "host"
_TEMP = re.compile(
    r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[a-z0-9_]+\.tmp(\.[A-Za-z0-9]+)?$"
)

# errno values that mean "this output cannot be written here", and what to do about them
_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_NO_WRITE = {errno.EACCES, errno.EPERM, errno.EROFS}


def output_error(path: str | os.PathLike[str], exc: OSError, action: str = "write") -> OutputError:
    """A one-line :class:`~interp.errors.OutputError` for an ``OSError`` met writing ``path``:
    the path, the cause in words and what to do (the ``OSError`` goes in ``detail``)."""
    code = exc.errno
    if code == errno.ENOSPC:
        cause, advice = "the disk is full (no space left on device)", "free some space"
    elif code == errno.EDQUOT:
        cause, advice = "the disk quota is exceeded", "free some space"
    elif code == errno.EFBIG:
        cause, advice = "the file is too large for this file system", "use another disk"
    elif code == errno.EROFS:
        cause, advice = "the file system is read-only", "use a writable disk"
    elif code in (errno.EACCES, errno.EPERM):
        cause, advice = "permission denied (the folder is read-only for you)", "make it writable"
    elif code in (errno.EEXIST, errno.ENOTDIR):
        cause, advice = "a file stands where a folder is needed", "move it"
    else:
        cause = os.strerror(code) if code else str(exc) or type(exc).__name__
        advice = "check the disk"
    error = OutputError(
        f"cannot {action} {path}: {cause}; {advice}, or choose another output folder (--out); "
        "earlier outputs are kept",
        detail=f"{type(exc).__name__}: {exc}",
    )
    error.errno = code
    return error


def make_dir(path: str | os.PathLike[str]) -> Path:
    """Create the folder ``path`` (and its parents) unless it exists; an ``OSError`` (read-only
    disk, no permission, disk full) becomes a one-line :class:`~interp.errors.OutputError`."""
    path = Path(path)
    if path.is_dir():
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(path, exc, "create the folder") from exc
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it to ``path`` when the block succeeds.

    On error the temp file is removed and ``path`` is left as it was, so readers never see a
    half-written file. A full disk or a folder that cannot be written (also when the block's
    own write fails so) raises :class:`~interp.errors.OutputError` with a one-line message.
    The temp file is hidden and names its writer (see :func:`remove_stale_temps`); it ends in
    ``suffix`` for writers that look at the extension.
    """
    path = Path(path)
    make_dir(path.parent)
    prefix = f".{path.name[:120]}.{_HOST}.{os.getpid()}."
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=prefix, suffix=".tmp" + ("" if suffix == ".tmp" else suffix), dir=path.parent
        )
    except OSError as exc:
        raise output_error(path, exc) from exc
    os.close(fd)
    renamed = False
    try:
        try:
            yield Path(tmp)
        except OutputError:
            raise
        except Exception as exc:  # the block's own write: convert only "cannot write here"
            cause = write_refused(exc)
            if cause is not None:
                raise output_error(path, cause) from exc
            raise
        try:
            os.chmod(tmp, _FILE_MODE)
            os.replace(tmp, path)
            renamed = True
        except OSError as exc:
            raise output_error(path, exc) from exc
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_refused(exc: BaseException) -> OSError | None:
    """The ``OSError`` saying the disk is full or not writable behind ``exc``: ``exc`` itself
    or one it was raised while handling (``torch.save`` into a file object that hit a full disk
    raises a ``RuntimeError`` while handling the ``OSError``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _DISK_FULL | _NO_WRITE:
            return exc
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is named like a temp file of :func:`atomic_path`."""
    return _TEMP.match(Path(path).name) is not None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists (another user's)
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove, anywhere under ``folder``, the temp files of :func:`atomic_path` whose writer
    is dead: written on this host by a process that no longer exists (killed before its
    rename). Temp files of live processes (other ranks writing now) and of other hosts are
    kept. Returns the removed paths; a file that cannot be removed is left."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for root, _, files in os.walk(folder):
        for name in files:
            match = _TEMP.match(name)
            if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
                continue
            path = Path(root) / name
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def prepare_output(folder: str | os.PathLike[str]) -> Path:
    """Get the output folder of a job ready before any work: create it, check that a file can
    be written in it (a read-only folder fails now, not after hours of work) and remove the
    temp files of a killed earlier run (:func:`remove_stale_temps`).

    Raises:
        OutputError: the folder cannot be created or written.
    """
    folder = make_dir(folder)
    try:
        fd, probe = tempfile.mkstemp(
            prefix=f".write-check.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=folder
        )
    except OSError as exc:
        raise output_error(folder, exc, "write into") from exc
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    remove_stale_temps(folder)
    return folder


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Text version of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_png(image: object, path: str | os.PathLike[str]) -> Path:
    """Save a ``(C, H, W)`` tensor in ``[0, 1]`` (C = 1 or 3) or a PIL image as PNG, atomically."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        import torch

        tensor = torch.as_tensor(image).detach().float().cpu().clamp(0, 1)
        arr = (tensor * 255).round().byte().permute(1, 2, 0).numpy()
        image = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr)
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")  # type: ignore[union-attr]
    return Path(path)


def settings_digest(obj: Any, length: int = 12) -> str:
    """A short stable hash of JSON-able settings (non-JSON values by their ``str``): the key
    under which cached stages are reused."""
    import hashlib
    import json

    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def json_value(value: Any) -> Any:
    """JSON for the numpy and torch values a result's ``info`` may hold (``json.dumps``'s
    ``default``): arrays and tensors as lists, numpy scalars as numbers, anything else as its
    ``str``."""
    if isinstance(value, np.ndarray) or type(value).__module__.startswith("torch"):
        return np.asarray(value).tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def save_arrays(
    folder: str | os.PathLike[str], stem: str, arrays: dict[str, Any], doc: dict[str, Any]
) -> list[Path]:
    """A result's house format: ``STEM.npz`` (its arrays, compressed) and ``STEM.json`` (its
    ``to_dict()``), each written atomically into ``folder`` (created); returns both paths."""
    out = prepare_output(folder)
    npz = out / f"{stem}.npz"
    with atomic_path(npz, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **{k: np.asarray(v) for k, v in arrays.items()})
    text = json.dumps(doc, indent=1, default=json_value)
    return [npz, atomic_write_text(out / f"{stem}.json", text)]


def load_arrays(
    folder: str | os.PathLike[str], stem: str
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """What :func:`save_arrays` wrote: ``(arrays, doc)``."""
    folder = Path(folder)
    doc = json.loads((folder / f"{stem}.json").read_text())
    with np.load(folder / f"{stem}.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, doc


def only_stem(folder: str | os.PathLike[str], pattern: str, what: str) -> str:
    """The stem of the one file in ``folder`` matching ``pattern`` (``"erf-*.npz"``); a
    ``ValueError`` naming the candidates when there are none or several."""
    found = sorted(Path(folder).glob(pattern))
    if len(found) != 1:
        names = ", ".join(p.stem for p in found) or "none"
        raise ValueError(f"{folder} holds {len(found)} {what} ({names}): name one with stem=")
    return found[0].stem


def result_stem(kind: str, name: str) -> str:
    """``KIND-NAME``, the name (a layer's) made file-system safe: a result's file stem."""
    return f"{kind}-" + (re.sub(r"[^A-Za-z0-9._]+", "_", name) or "root")
