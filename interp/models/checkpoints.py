"""Safe checkpoint reading and writing.

Formats read: ``.pt``/``.pth`` (a state dict, interp's own checkpoint dict, or, only with
explicit trust, a pickled full module), ``.safetensors`` and TorchScript archives. Pickles are
read with ``torch.load(weights_only=True)``: a file that needs arbitrary code to unpickle (a full
``nn.Module`` saved with ``torch.save(model)``) is refused unless ``trust_checkpoint=True``
(``--trust-checkpoint``), because unpickling runs whatever code the file names.
"""

from __future__ import annotations

import _compat_pickle
import importlib
import io
import json
import os
import pickle
import pickletools
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

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


class _Damaged(Exception):
    """Where a file stops being a complete ``torch.save`` file (the corrupt message's detail)."""


_MARK = object()  # a pickle MARK on the walker's stack


@dataclass(frozen=True)
class _Global:
    """A global a pickle references, as the walker's stack holds it."""

    module: str
    name: str

    def __str__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class _Pickle:
    """What one pickle holds, read without running it."""

    globals: list[_Global]  # in the order first referenced
    persistent_ids: list[Any]  # tuples for torch's storages
    value: Any  # the pickled value when it is plain (an int, a list of strings), else None


def _read_pickle(stream: IO[bytes]) -> _Pickle:
    """Walk one pickle from ``stream`` with :mod:`pickletools` (nothing is imported or run).

    The stack and memo are followed symbolically so that ``STACK_GLOBAL`` names built from
    memoized strings (protocol 4+) and the storages' persistent ids are known; the stream is
    left after ``STOP``.

    Raises:
        _Damaged: the bytes do not parse as one complete pickle (cut short, or not a pickle).
    """
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    names: dict[_Global, None] = {}
    pids: list[Any] = []

    def pop_mark() -> list[Any]:
        at = len(stack) - 1 - stack[::-1].index(_MARK)  # ValueError: no MARK
        items = stack[at + 1 :]
        del stack[at:]
        return items

    def reference(module: Any, attr: Any) -> _Global:
        if not isinstance(module, str) or not isinstance(attr, str):
            raise ValueError("STACK_GLOBAL without a module and a name")
        if (module, attr) in _compat_pickle.NAME_MAPPING:  # protocol 2's Python 2 names
            module, attr = _compat_pickle.NAME_MAPPING[(module, attr)]
        found = _Global(_compat_pickle.IMPORT_MAPPING.get(module, module), attr)
        names.setdefault(found)
        return found

    value: Any = None
    try:
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name == "STOP":
                value = stack.pop()
                break
            if name == "MARK":
                stack.append(_MARK)
            elif name in ("GLOBAL", "INST"):
                found = reference(*arg.split(" ", 1))
                if name == "GLOBAL":
                    stack.append(found)
                else:
                    pop_mark()
                    stack.append(None)
            elif name == "STACK_GLOBAL":
                attr = stack.pop()
                stack.append(reference(stack.pop(), attr))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("TUPLE", "LIST"):
                items = pop_mark()
                stack.append(tuple(items) if name == "TUPLE" else items)
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                count = int(name[-1])
                items = stack[-count:]
                if len(items) < count:
                    raise IndexError("stack underflow")
                del stack[-count:]
                stack.append(tuple(items))
            elif name in ("EMPTY_TUPLE", "EMPTY_LIST"):
                stack.append(() if name == "EMPTY_TUPLE" else [])
            elif name in ("APPEND", "APPENDS"):
                items = pop_mark() if name == "APPENDS" else [stack.pop()]
                if isinstance(stack[-1], list):
                    stack[-1].extend(items)
            elif name in ("PERSID", "BINPERSID"):
                pids.append(arg if name == "PERSID" else stack.pop())
                stack.append(None)
            elif not op.stack_before and len(op.stack_after) == 1:
                stack.append(arg)  # a literal: a string, a number, None, an empty container
            else:  # anything else, by the stack effect pickletools documents for it
                before = op.stack_before
                if pickletools.markobject in before:
                    pop_mark()
                    count = before.index(pickletools.markobject)
                else:
                    count = len(before)
                for _ in range(count):
                    stack.pop()
                stack.extend(None for _ in op.stack_after)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        # pickletools raises ValueError when the bytes end early or are no opcode
        raise _Damaged(f"not a complete pickle ({type(exc).__name__}: {exc})") from exc
    return _Pickle(list(names), pids, value)


def _storages(pickled: _Pickle) -> dict[str, str]:
    """``{storage key: storage type}`` from torch's persistent ids in a pickle."""
    out = {}
    for pid in pickled.persistent_ids:
        if isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage":
            kind = str(pid[1]) if isinstance(pid[1], _Global) else ""
            out[str(pid[2])] = kind
    return out


def _element_size(storage_type: str) -> int | None:
    """Bytes per element of a legacy storage type (``torch.FloatStorage``), ``None`` if unknown."""
    if storage_type == "torch.UntypedStorage":
        return 1
    with warnings.catch_warnings():  # the legacy storage classes warn that they are deprecated
        warnings.simplefilter("ignore")
        dtype = getattr(getattr(torch, storage_type.rpartition(".")[2], None), "dtype", None)
    if not isinstance(dtype, torch.dtype):
        return None
    return torch.empty(0, dtype=dtype).element_size()


def _scan_zip(path: Path) -> list[_Global]:
    """The globals of a complete zip ``torch.save`` file, checked record by record."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()  # reads every record: a CRC or size mismatch names it
            if bad is not None:
                raise _Damaged(f"record {bad} fails its CRC check")
            records = set(archive.namelist())
            pkl = next((n for n in sorted(records) if n.rpartition("/")[2] == "data.pkl"), None)
            if pkl is None:
                raise _Damaged("a zip without data.pkl: not a torch.save file")
            pickled = _read_pickle(io.BytesIO(archive.read(pkl)))
    except (zipfile.BadZipFile, EOFError, NotImplementedError, zlib.error) as exc:
        raise _Damaged(f"not a complete zip ({type(exc).__name__}: {exc})") from exc
    folder = pkl[: -len("data.pkl")]
    missing = [k for k in _storages(pickled) if f"{folder}data/{k}" not in records]
    if missing:
        raise _Damaged(f"{len(missing)} storage record(s) missing ({', '.join(missing[:3])})")
    return pickled.globals


def _scan_legacy(path: Path) -> list[_Global]:
    """The globals of a complete legacy (non-zip) ``torch.save`` file: five pickles (magic
    number, protocol, system info, the object, the storage keys), then each storage's element
    count and bytes."""
    with open(path, "rb") as handle:
        magic = _read_pickle(handle).value
        if magic != torch.serialization.MAGIC_NUMBER:
            raise _Damaged("no torch.save magic number: not a PyTorch file")
        for _ in range(2):  # the protocol version and the system info
            _read_pickle(handle)
        pickled = _read_pickle(handle)
        keys = _read_pickle(handle).value
        if not isinstance(keys, list):
            raise _Damaged("the storage keys are not a list")
        kinds = _storages(pickled)
        size = os.fstat(handle.fileno()).st_size
        for index, key in enumerate(keys, 1):
            width = _element_size(kinds.get(str(key), ""))
            if width is None:  # a storage type this torch does not know: the rest is unchecked
                break
            count = handle.read(8)  # the element count, then the elements
            if len(count) == 8:
                handle.seek(int.from_bytes(count, "little") * width, os.SEEK_CUR)
            if len(count) < 8 or handle.tell() > size:
                raise _Damaged(f"storage {index} of {len(keys)} is cut short at byte {size}")
    return pickled.globals


def _scan_checkpoint(path: Path) -> list[_Global]:
    """The globals a complete ``torch.save`` file references, in order.

    Tells a complete file from a damaged one by its structure alone (nothing is unpickled):
    a zip whose records all pass their CRC and whose ``data.pkl`` parses, or a legacy file
    whose pickles parse and whose storages are all there.

    Raises:
        _Damaged: the file is cut short or is not a ``torch.save`` file.
    """
    with open(path, "rb") as handle:
        head = handle.read(4)
    return _scan_zip(path) if head == b"PK\x03\x04" else _scan_legacy(path)


def _refused(names: list[_Global]) -> list[_Global]:
    """The globals among ``names`` that ``torch.load(weights_only=True)`` refuses: those in
    neither torch's allowlist nor the user's (``torch.serialization.add_safe_globals``)."""
    from torch import _weights_only_unpickler as safe

    allowed = set(getattr(safe, "_get_allowed_globals", dict)())
    allowed |= set(getattr(safe, "_get_user_allowed_globals", dict)())
    return [n for n in names if str(n) not in allowed]


def _unimportable(names: list[_Global]) -> _Global | None:
    """The first of ``names`` that cannot be imported here (what a trusted unpickle needs)."""
    for name in names:
        try:
            found: Any = importlib.import_module(name.module)
            for part in name.name.split("."):
                found = getattr(found, part)
        except Exception:  # noqa: BLE001 - a module that fails to import is not importable
            return name
    return None


def _unsafe(path: Path, code: list[_Global], exc: BaseException) -> CheckpointError:
    shown = ", ".join(map(str, code[:3])) + (", ..." if len(code) > 3 else "")
    return CheckpointError(
        f"{path} is a pickle that names code ({shown}), not a plain weights file: "
        "loading it would run that code. Re-save it as "
        "torch.save(model.state_dict(), PATH) and load it with --weights PATH on its "
        "architecture, or, only if you trust its source, pass --trust-checkpoint "
        "(Python: trust_checkpoint=True)",
        detail=f"torch.load(weights_only=True): {exc}",
    )


def _first_line(exc: BaseException, after: str = "") -> str:
    """The first line of an exception's text (after ``after`` when it holds that), which
    names the cause where other libraries write paragraphs."""
    text = str(exc).partition(after)[2] if after and after in str(exc) else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:160]


def _refused_plain(path: Path, exc: BaseException) -> CheckpointError:
    reason = _first_line(exc, "WeightsUnpickler error:")
    return CheckpointError(
        f"{path} is a complete PyTorch file that names no code, but torch.load(weights_only="
        f"True) refuses its pickle ({reason}): re-save it with torch.save(obj, PATH) at the "
        "default pickle protocol (2), or, only if you trust its source, pass "
        "--trust-checkpoint (Python: trust_checkpoint=True)",
        detail=f"torch.load(weights_only=True): {exc}",
    )


def _unloadable(path: Path, exc: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{path} is a complete pickle that fails to unpickle even trusted "
        f"({type(exc).__name__}: {_first_line(exc)}): where it loads, re-save it with "
        "torch.save(model.state_dict(), PATH) and load that with --weights PATH on its "
        "architecture",
        detail=f"{type(exc).__name__}: {exc}",
    )


def _not_importable(path: Path, name: _Global, exc: BaseException) -> CheckpointError:
    where = (
        "a class defined in the script that saved it"
        if name.module == "__main__"
        else f"whose module {name.module} cannot be imported here"
    )
    return CheckpointError(
        f"{path} holds a pickled {name} ({where}): a pickled module loads only where its "
        f"class can be imported. In Python, import or define {name.name} before "
        "load_model(..., trust_checkpoint=True); or, where it loads, re-save it with "
        "torch.save(model.state_dict(), PATH) and load that with --weights PATH on its "
        "architecture",
        detail=f"{type(exc).__name__}: {exc}",
    )


def read_checkpoint(path: str | os.PathLike[str], *, trust_checkpoint: bool = False) -> Any:
    """Read a checkpoint file into Python objects without running untrusted code.

    Returns a state dict (``dict[str, Tensor]``), a checkpoint dict, an ``nn.Module`` (only
    TorchScript, or a full pickled module with ``trust_checkpoint=True``), or for safetensors a
    ``dict`` ``{"state_dict": ..., "metadata": {...}}``.

    A file that fails the weights-only load is judged by what it is before anything is said
    about it: a damaged file (cut short, a record whose CRC fails, bytes that are no
    ``torch.save`` file) is reported as corrupt and never with the advice to trust it; a
    complete pickle that references a global ``weights_only=True`` refuses is refused as
    unsafe unless trusted, naming the first few.

    Raises:
        CheckpointError: missing, truncated or corrupt file; an unsafe pickle without trust; a
            trusted pickle whose class cannot be imported here.
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
            with warnings.catch_warnings():  # torch.jit's deprecation: not the user's to act on
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            try:
                _scan_zip(path)
            except _Damaged as damage:
                raise _corrupt(path, damage) from exc
            raise CheckpointError(
                f"{path} is a complete TorchScript archive that torch.jit.load cannot load "
                f"({_first_line(exc)}): load it with the PyTorch version and extensions it was "
                "saved with, or save the model's state dict and load that with --weights PATH",
                detail=f"{type(exc).__name__}: {exc}",
            ) from exc
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": judged below instead
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types on damaged bytes
        refusal = exc
    try:
        names = _scan_checkpoint(path)
    except _Damaged as damage:
        raise _corrupt(path, damage) from refusal
    code = _refused(names)
    if not isinstance(refusal, pickle.UnpicklingError):  # complete, yet torch cannot read it
        raise _corrupt(path, refusal) from refusal
    if not trust_checkpoint:
        raise (_unsafe(path, code, refusal) if code else _refused_plain(path, refusal)) from refusal
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except (AttributeError, ImportError) as exc:  # pickle's "Can't get attribute 'Net'"
        missing = _unimportable(code)
        if missing is None:
            raise _unloadable(path, exc) from exc
        raise _not_importable(path, missing, exc) from exc
    except Exception as exc:  # noqa: BLE001 - anything a trusted pickle raises
        raise _unloadable(path, exc) from exc


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


def find_module(obj: Any) -> nn.Module | None:
    """The module a trusted checkpoint holds: the object itself, or one under a usual key of a
    training dict (``{"model": model, "optimizer": ...}``), which carries its architecture."""
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        return next((obj[k] for k in _STATE_KEYS if isinstance(obj.get(k), nn.Module)), None)
    return None


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
