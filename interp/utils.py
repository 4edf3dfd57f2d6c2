"""Small shared helpers: atomic file writes."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "save_png"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; finished files get the usual permissions (0666 minus umask)
_FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it to ``path`` when the block succeeds.

    On error the temp file is removed and ``path`` is left as it was, so readers never see a
    half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


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
