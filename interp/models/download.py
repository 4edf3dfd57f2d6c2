"""Fetching pretrained weights into torch's hub cache, with a bounded timeout.

Weights live where torch and torchvision look for them (``$TORCH_HOME/hub/checkpoints``,
``~/.cache/torch/hub/checkpoints`` by default), so a file placed there by hand is picked up.
When the file is missing, the download is tried with a timeout on connect and on every read;
``INTERP_OFFLINE=1`` (or ``offline=True``/``--offline``) skips the attempt and fails at once.
Either way the error names the file, the exact path to place it at and the alternatives.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..errors import WeightsUnavailableError
from ..utils import atomic_path

__all__ = ["hub_cache_path", "offline_requested", "fetch_weights", "DEFAULT_TIMEOUT"]

DEFAULT_TIMEOUT = float(os.environ.get("INTERP_DOWNLOAD_TIMEOUT", "20"))
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,})\.")


def hub_cache_path(url: str) -> Path:
    """Where torch.hub caches the file at ``url`` (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def offline_requested(offline: bool | None = None) -> bool:
    """True when offline mode is asked for, by argument or by ``INTERP_OFFLINE=1``."""
    if offline is not None:
        return offline
    return os.environ.get("INTERP_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _unavailable(what: str, url: str, path: Path, reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"pretrained weights for {what} are not available ({reason}): place the file "
        f"{path.name} at {path} (served at {url}; copy it from a machine with network access), "
        "or pass --weights PATH (Python: weights=PATH) for a state dict from elsewhere, or "
        "--weights none for random init"
    )


def fetch_weights(
    url: str,
    what: str,
    *,
    offline: bool | None = None,
    timeout: float | None = None,
    quiet: bool = False,
) -> Path:
    """Return the cached file for ``url``, downloading it first when allowed.

    Args:
        url: where the weights are served.
        what: a human name for the error message (``"torchvision:resnet18 (ResNet18_Weights...)"``).
        offline: skip any download (default: ``INTERP_OFFLINE``).
        timeout: seconds allowed for connecting and for each read (default 20,
            ``INTERP_DOWNLOAD_TIMEOUT``).
        quiet: no progress bar.

    Raises:
        WeightsUnavailableError: not cached, and offline or the download failed.
    """
    path = hub_cache_path(url)
    if path.is_file():
        return path
    if offline_requested(offline):
        raise _unavailable(what, url, path, "the file is not cached and offline mode is on")
    timeout = DEFAULT_TIMEOUT if timeout is None else timeout
    sha = hashlib.sha256()
    with atomic_path(path, suffix=".part") as tmp, open(tmp, "wb") as out:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310
        except OSError as exc:  # URLError, timeouts and refused connections are OSErrors
            raise _unavailable(
                what, url, path, f"download failed within {timeout:g}s ({exc})"
            ) from exc
        with response:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm.auto import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name, disable=quiet) as bar:
                while True:
                    try:
                        chunk = response.read(1 << 20)
                    except OSError as exc:
                        raise _unavailable(
                            what, url, path, f"download stalled for {timeout:g}s ({exc})"
                        ) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    sha.update(chunk)
                    bar.update(len(chunk))
        out.flush()
        match = _HASH_IN_NAME.search(path.name)
        if match and not sha.hexdigest().startswith(match.group(1)):
            raise _unavailable(
                what, url, path, "the downloaded file's SHA-256 does not match its name"
            )
    return path
