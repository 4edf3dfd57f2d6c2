"""The model registry: spec strings → loaded :class:`~interp.models.base.Model`.

Specs:
  * a registered name, e.g. ``efficientnet_lite0`` (the embedded default);
  * ``torchvision:<name>`` for every torchvision classification model;
  * ``lucent:inceptionv1`` (lucent's model zoo);
  * ``timm:<name>`` / ``timm:<name>.<tag>`` for every timm model (optional extra ``interp[timm]``);
  * a checkpoint path (``.pt``/``.pth``, ``.safetensors``, TorchScript).

``weights`` is ``"default"`` (the pretrained weights), ``"none"`` (random initialization, the
control for every measurement; seeded by ``seed``), a named weights variant for torchvision
(``"IMAGENET1K_V2"``), or a path to a state dict / checkpoint for the spec's architecture.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checks import check_finite_module
from ..device import resolve_device
from ..errors import CheckpointError, RangeError, UnknownModelError

# Importing the families fills the table: their @register_model decorators run at import.
from . import small, timm_zoo, zoo  # noqa: F401
from ._registry import (
    PREFIXES,
    REGISTRY,
    REQUIRES,
    Loader,
    LoadOptions,
    apply_weight_path,
    build_random,
    looks_like_path,
    register_model,
    register_prefix,
)
from .base import Model, Preprocessing
from .checkpoints import (
    CHECKPOINT_FORMAT,
    find_module,
    load_state_dict_checked,
    read_checkpoint,
)

__all__ = [
    "LoadOptions",
    "Loader",
    "apply_weight_path",
    "as_model",
    "build_random",
    "describe_models",
    "list_models",
    "load_model",
    "register_model",
    "register_prefix",
    "set_stem_stride",
]


def list_models(pattern: str = "*") -> list[str]:
    """Names of every loadable model spec matching ``pattern`` (fnmatch, case-insensitive).

    A pattern without wildcards matches as a substring; one without a ``prefix:`` also matches
    the name after the prefix.

    >>> list_models("torchvision:resnet1*")
    ['torchvision:resnet101', 'torchvision:resnet152', 'torchvision:resnet18']

    (``"resnet1*"`` finds those and, with timm installed, ``timm:resnet10t``, ``timm:resnet18``,
    ``timm:resnet18.a1_in1k`` ...)
    """
    names = sorted(REGISTRY)
    for prefix, (_, lister, _) in sorted(PREFIXES.items()):
        names += [f"{prefix}:{n}" for n in lister()]
    pat = pattern.lower()
    if not any(ch in pat for ch in "*?["):
        pat = f"*{pat}*"
    # a pattern without a prefix also matches the bare name: "resnet*" finds torchvision:resnet18
    return [
        n
        for n in names
        if fnmatch.fnmatch(n.lower(), pat)
        or (":" not in pat and fnmatch.fnmatch(n.split(":", 1)[-1].lower(), pat))
    ]


def describe_models() -> dict[str, str]:
    """Registered names and prefixes with a one-line description each."""
    out = {name: desc for name, (_, desc) in sorted(REGISTRY.items())}
    out.update({f"{p}:<name>": desc for p, (_, _, desc) in sorted(PREFIXES.items())})
    return out


def _unknown(spec: str) -> UnknownModelError:
    names = list_models()
    prefix, _, bare = spec.rpartition(":")

    # the same name in another family first, then near names (in the family asked for, when
    # one is), nearest first; at equal distance core families before optional extras (timm
    # has a resnet18 and an efficientnet_lite0 too)
    def optional(name: str) -> bool:
        return name.split(":", 1)[0] in REQUIRES

    exact = sorted(
        (n for n in names if n.split(":", 1)[-1].lower() == bare.lower() and n != spec),
        key=lambda n: (optional(n), n),
    )
    family = [n for n in names if prefix and n.startswith(prefix + ":")]
    near = set(difflib.get_close_matches(spec, family or names, n=8, cutoff=0.5))
    by_bare: dict[str, list[str]] = {}
    for n in names:
        by_bare.setdefault(n.split(":", 1)[-1].lower(), []).append(n)
    for hit in difflib.get_close_matches(bare.lower(), list(by_bare), n=8, cutoff=0.5):
        near.update(n for n in by_bare[hit] if not family or n in family)

    def score(name: str) -> float:
        return difflib.SequenceMatcher(None, bare.lower(), name.split(":", 1)[-1].lower()).ratio()

    close = exact + sorted(near, key=lambda n: (-score(n), optional(n), n))
    if not close:
        close = [n for n in names if spec.lower() in n.lower()]
    close = list(dict.fromkeys(close))[:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return UnknownModelError(
        f"unknown model {spec!r}.{hint} `interp models` lists every spec; a checkpoint path "
        "(.pt, .pth, .safetensors, TorchScript) also works."
    )


def load_model(
    spec: str | os.PathLike[str] | Model | nn.Module,
    device: str | torch.device = "auto",
    weights: str | os.PathLike[str] | None = "default",
    *,
    offline: bool | None = None,
    trust_checkpoint: bool = False,
    quiet: bool = False,
    seed: int = 0,
    **kwargs: Any,
) -> Model:
    """Load a model by spec, in eval mode, on ``device``.

    Args:
        spec: registered name, ``prefix:name``, checkpoint path, or an already built
            ``Model``/``nn.Module`` (wrapped with ImageNet preprocessing).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        weights: ``"default"``, ``"none"`` (random init, seeded by ``seed``), a named variant,
            or a checkpoint path for the spec's architecture.
        offline: never download (default: the ``INTERP_OFFLINE`` environment variable).
        trust_checkpoint: allow unpickling full-module checkpoints (runs code from the file).
        quiet: no progress bars.
        seed: seed of the random initialization (the RNG state of the caller is untouched).
        **kwargs: passed to the architecture's builder (e.g. ``num_classes``).

    Raises:
        UnknownModelError, WeightsUnavailableError, CheckpointError, DeviceError.
    """
    dev = resolve_device(device)
    if isinstance(spec, Model | nn.Module):
        wrapped = spec if isinstance(spec, Model) else as_model(spec)
        check_finite_module(wrapped.module, wrapped.name)
        return wrapped.to(dev)
    stem_stride = kwargs.pop("stem_stride", None)
    options = LoadOptions(
        weights=weights,
        offline=offline,
        trust_checkpoint=trust_checkpoint,
        quiet=quiet,
        seed=seed,
        kwargs=tuple(sorted(kwargs.items())),
    )
    text = os.fspath(spec)
    if text in REGISTRY:
        model = REGISTRY[text][0](text, options)
    elif ":" in text and text.split(":", 1)[0] in PREFIXES:
        prefix, name = text.split(":", 1)
        loader, lister, _ = PREFIXES[prefix]
        if prefix in REQUIRES:
            REQUIRES[prefix]()
        if name not in lister():
            raise _unknown(text)
        model = loader(name, options)
    elif Path(text).is_dir() and (Path(text) / "checkpoint.pt").is_file():
        model = load_checkpoint_model(str(Path(text) / "checkpoint.pt"), options)  # a run
        model.name = text
    elif Path(text).exists():
        model = load_checkpoint_model(text, options)
    elif looks_like_path(text):
        raise CheckpointError(f"checkpoint file {text} does not exist")
    else:
        raise _unknown(text)
    registered = text in REGISTRY or (":" in text and text.split(":", 1)[0] in PREFIXES)
    if stem_stride is not None:
        if not registered:
            raise RangeError(
                f"stem_stride is an option of a registered architecture, not of {text} (a "
                "checkpoint keeps the stride it was trained with)"
            )
        set_stem_stride(model.module, stem_stride)
        kwargs["stem_stride"] = stem_stride
    if kwargs and registered:
        # the builder options, so that a random-init control rebuilds the same architecture
        # with its own initialization (not a reset_parameters copy)
        model.info.setdefault("arch", text)
        model.info.setdefault("arch_kwargs", dict(kwargs))
    check_finite_module(model.module, model.weights_source or text)
    model.module.eval()
    model.module.to(dev)
    return model


def set_stem_stride(module: nn.Module, stride: int) -> nn.Module:
    """Give the architecture's stem (its first convolution, in registration order, which is
    the stem in torchvision's and timm's CNNs) the stride ``stride``: ``1`` is the usual
    adaptation of an ImageNet architecture to small images (as CIFAR versions of ResNets
    do), keeping 2x the resolution in every later layer. The weights' shapes are unchanged.
    Returns ``module``."""
    if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
        raise RangeError(f"stem_stride must be a positive integer, got {stride!r}")
    stem = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if stem is None:
        raise RangeError(f"{type(module).__name__} has no convolution to take stem_stride")
    stem.stride = (stride, stride)
    return module


def as_model(module: nn.Module | Model, name: str | None = None) -> Model:
    """Wrap a bare ``nn.Module`` as a :class:`Model` (ImageNet preprocessing, 224 px)."""
    if isinstance(module, Model):
        return module
    return Model(module=module, name=name or type(module).__name__, weights_source="in memory")


def load_checkpoint_model(path: str, options: LoadOptions) -> Model:
    """Load a checkpoint that carries its own architecture (TorchScript, full module, interp)."""
    obj = read_checkpoint(path, trust_checkpoint=options.trust_checkpoint)
    source = str(Path(path).resolve())
    module = find_module(obj)
    if module is not None:
        return Model(module=module, name=path, weights_source=source, info={"format": "module"})
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and obj.get("arch"):
        arch = str(obj["arch"])
        arch_kwargs = dict(obj.get("arch_kwargs") or {})
        model = load_model(
            arch,
            device="cpu",
            weights="none",
            offline=True,
            seed=options.seed,
            **arch_kwargs,
        )
        load_state_dict_checked(model.module, obj["state_dict"], source)
        if obj.get("preprocessing"):
            model.preprocessing = Preprocessing.from_dict(obj["preprocessing"])
        if obj.get("class_names") is not None:
            model.class_names = list(obj["class_names"])
        model.name = path
        model.weights_source = source
        model.info.update({"arch": arch, "arch_kwargs": arch_kwargs, "format": CHECKPOINT_FORMAT})
        return model
    raise CheckpointError(
        f"{path} holds weights but no architecture. Load it onto its architecture with "
        f"`--weights {path}` (Python: load_model('torchvision:resnet18', weights='{path}')), "
        "or save it with interp.models.save_checkpoint(..., arch=...)"
    )
