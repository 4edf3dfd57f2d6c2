"""Safe checkpoint reading and writing.

Formats read: ``.pt``/``.pth`` (a state dict, interp's own checkpoint dict, or, only with
explicit trust, a pickled full module), ``.safetensors`` and TorchScript archives. Pickles are
read with ``torch.load(weights_only=True)``: a file that needs arbitrary code to unpickle (a full
``nn.Module`` saved with ``torch.save(model)``) is refused unless ``trust_checkpoint=True``
(``--trust-checkpoint``), because unpickling runs whatever code the file names.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..utils import atomic_path

__all__ = [
    "CHECKPOINT_FORMAT",
    "read_checkpoint",
    "load_state_dict_checked",
    "strip_prefixes",
    "save_checkpoint",
    "extract_state_dict",
]

CHECKPOINT_FORMAT = "interp-checkpoint"
_STATE_KEYS = ("state_dict", "model_state_dict", "model", "net", "module", "weights")
_PREFIXES = ("module.", "_orig_mod.")
_SHOW = 12


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _corrupt(path: Path, exc: BaseException | None = None) -> CheckpointError:
    size = path.stat().st_size if path.exists() else 0
    return CheckpointError(
        f"checkpoint {path} is truncated or corrupt ({size} bytes that are not a complete "
        "PyTorch or safetensors file): copy or download it again and check the copy is "
        "complete, or re-save it with torch.save(model.state_dict(), PATH)",
        detail=f"{type(exc).__name__}: {exc}" if exc is not None else None,
    )


# pickle opcodes that push the strings STACK_GLOBAL takes as module and name
_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING"}
_STRING_OPS |= {"BINSTRING", "SHORT_BINSTRING"}


def _pickle_globals(data: bytes, *, first_only: bool = False) -> list[str] | None:
    """The globals (``module.name``) the pickles in ``data`` name, or ``None`` when ``data``
    does not start with a complete, well-formed pickle (a corrupt or truncated file).

    A legacy (non-zip) ``torch.save`` file is several pickles back to back followed by raw
    storage bytes: the pickles are read until one does not parse (the raw bytes)."""
    import io
    import pickletools

    stream = io.BytesIO(data)
    found: list[str] = []
    count = 0
    while stream.tell() < len(data):
        strings: list[str] = []
        names: list[str] = []
        try:
            for op, arg, _pos in pickletools.genops(stream):
                if op.name in _STRING_OPS and isinstance(arg, str | bytes):
                    strings.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
                elif op.name == "GLOBAL" and isinstance(arg, str):
                    names.append(arg.replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]) if len(strings) >= 2 else "?")
        except Exception:  # noqa: BLE001 - pickletools raises ValueError, EOFError, ...
            if count == 0:
                return None
            break
        found += names
        count += 1
        if first_only or count >= 8:
            break
    return found if count else None


def _checkpoint_globals(path: Path) -> list[str] | None:
    """Globals named by the checkpoint's pickle, ``None`` when it is not well formed."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                pickles = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not pickles:
                    return None
                data = archive.read(pickles[0])  # checks the CRC too
            return _pickle_globals(data, first_only=True)
        return _pickle_globals(path.read_bytes())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError):
        return None


# globals a plain weights file names (torch.load(weights_only=True) allows these)
_PLAIN = ("collections.OrderedDict", "torch.", "builtins.set", "__builtin__.set", "_codecs.encode")


def read_checkpoint(path: str | os.PathLike[str], *, trust_checkpoint: bool = False) -> Any:
    """Read a checkpoint file into Python objects without running untrusted code.

    Returns a state dict (``dict[str, Tensor]``), a checkpoint dict, an ``nn.Module`` (only
    TorchScript, or a full pickled module with ``trust_checkpoint=True``), or for safetensors a
    ``dict`` ``{"state_dict": ..., "metadata": {...}}``.

    A file that fails the weights-only load is looked at before anything is said about it: a
    well-formed pickle that names code (a class, a function) is refused as unsafe unless
    trusted; anything else (random bytes, a truncated copy) is reported as corrupt, and never
    with the advice to trust it.

    Raises:
        CheckpointError: missing, truncated or corrupt file; or an unsafe pickle without trust.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory; give the checkpoint file inside it")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                state = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError) as exc:
            raise _corrupt(path, exc) from exc
        meta: dict[str, Any] = {}
        if "interp" in metadata:
            try:
                meta = json.loads(metadata["interp"])
            except json.JSONDecodeError:
                meta = {}
        return {"format": CHECKPOINT_FORMAT, "state_dict": state, **meta, "_safetensors": True}
    if _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise _corrupt(path, exc) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _checkpoint_globals(path)
        code = [n for n in names or [] if not n.startswith(_PLAIN)]
        if names is None or not code:
            raise _corrupt(path, exc) from exc
        if not trust_checkpoint:
            shown = ", ".join(dict.fromkeys(code[:3]))
            raise CheckpointError(
                f"{path} is a pickle that names code ({shown}), not a plain weights file: "
                "loading it would run that code. Re-save it as "
                "torch.save(model.state_dict(), PATH) and load it with --weights PATH on its "
                "architecture, or, only if you trust its source, pass --trust-checkpoint "
                "(Python: trust_checkpoint=True)",
                detail=f"torch.load(weights_only=True): {exc}",
            ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise _corrupt(path, exc) from exc
    except (IndexError, KeyError) as exc:  # what torch's unpickler raises on some random bytes
        raise _corrupt(path, exc) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - anything an untrusted pickle raises
        raise _corrupt(path, exc) from exc


def strip_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        out[key] = value
    return out


def extract_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """Find the state dict inside what :func:`read_checkpoint` returned."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in _STATE_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
            if isinstance(inner, Mapping) and inner:
                return extract_state_dict(inner, source)
    raise CheckpointError(
        f"{source} holds no state dict (found {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:_SHOW]}" if isinstance(obj, Mapping) else "")
        + "); expected a dict of tensors or a dict with a 'state_dict' entry"
    )


def load_state_dict_checked(module: nn.Module, state: Mapping[str, Any], source: str) -> None:
    """Load ``state`` into ``module`` strictly, after stripping wrapper prefixes.

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped keys when they do not match.
    """
    state = strip_prefixes(state)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state
        and isinstance(state[k], torch.Tensor)
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or misshaped:
        parts, details = [], []
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("mis-shaped keys", misshaped),
        ):
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {label} ({'; '.join(keys[:3])}{more})")
                details.append(f"{label}: " + "; ".join(keys))
        raise CheckpointError(
            f"checkpoint {source} does not match {type(module).__name__}: "
            + ", ".join(parts)
            + "; check that the architecture (and num_classes) is the one it was saved from",
            detail="\n".join(details),
        )
    module.load_state_dict(state, strict=True)


def save_checkpoint(
    path: str | os.PathLike[str],
    module: nn.Module,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    class_names: list[str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write an interp checkpoint atomically (temp file, then rename).

    The file holds only tensors and plain Python values, so it loads with ``weights_only=True``;
    with ``arch`` set, ``interp.load_model(path)`` rebuilds the model from it alone. A
    ``.safetensors`` suffix writes safetensors with the metadata as JSON.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    meta: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "preprocessing": dict(preprocessing or {}),
        "class_names": list(class_names) if class_names is not None else None,
        **dict(extra or {}),
    }
    # written through a file object, so a full disk raises OSError (ENOSPC) and atomic_path
    # turns it into a clear OutputError (writing to a path raises a bare RuntimeError)
    if path.suffix == ".safetensors":
        from safetensors.torch import save

        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            handle.write(save(state, metadata={"interp": json.dumps(meta)}))
    else:
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            torch.save({**meta, "state_dict": state}, handle)
    return path
