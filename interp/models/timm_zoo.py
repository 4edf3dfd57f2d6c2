"""timm models: ``timm:<name>`` and ``timm:<name>.<tag>`` specs (optional extra ``interp[timm]``).

The architecture is timm's own (``timm.create_model``), with its layer names. What interp adds:

* **Preprocessing from the pretrained config** (``timm.data.resolve_model_data_config``): mean,
  std, input size, interpolation, and the centre-crop fraction as ``resize_size =
  floor(size / crop_pct)`` (timm's own evaluation transform).
* **Offline-safe weights.** timm's pretrained weights live on the Hugging Face hub (a few on
  GitHub releases). The file is looked up in the hub cache first (a file placed there by hand
  is picked up); with ``offline=True`` / ``INTERP_OFFLINE=1`` nothing else is tried; otherwise
  one bounded probe of the hub decides at once whether a download can work (the hub client's
  own retries would take half a minute on a machine without network), then the hub client
  downloads into its cache. Either failure names the file, the cache path to place it at, and
  ``--weights PATH`` / ``--weights none`` as alternatives. The file is read with
  ``weights_only=True`` (or safetensors) before timm's loader applies its own conversion
  (``filter_fn``, classifier and input-channel adaptation).
* **Stages**: ``model.info["feature_layers"]`` holds the module names of timm's
  ``feature_info`` (the outputs of the network's stages), which the hierarchy check uses as its
  default layers.
"""

from __future__ import annotations

import functools
import math
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, UnknownModelError, WeightsUnavailableError
from ._registry import LoadOptions, apply_weight_path, build_random, register_prefix
from .base import Model, Preprocessing
from .download import DEFAULT_TIMEOUT, fetch_weights, offline_requested

__all__ = ["hf_cache_dir", "hf_placement", "require_timm", "timm_names"]

_INSTALL = "pip install 'interp[timm]' (or: pip install timm)"
_HF_FILES = ("model.safetensors", "pytorch_model.bin")


def require_timm() -> Any:
    """Import and return timm, or raise a clear error saying how to install it."""
    try:
        import timm
    except ImportError as exc:
        raise UnknownModelError(
            f"timm: specs need the timm package, which is not installed: {_INSTALL}"
        ) from exc
    return timm


@functools.cache
def _timm_names() -> tuple[str, ...]:
    timm = require_timm()
    return tuple(sorted(set(timm.list_models()) | set(timm.list_models(pretrained=True))))


def timm_names() -> list[str]:
    """Every timm architecture and every ``architecture.tag`` with pretrained weights (empty
    when timm is not installed, so listing other families still works)."""
    try:
        return list(_timm_names())
    except UnknownModelError:
        return []


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache (``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``~/.cache/huggingface/hub``), read from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "hub"


def hf_placement(repo_id: str, filename: str, cache: Path | None = None) -> tuple[Path, Path]:
    """Where a hand-placed ``filename`` of hub repo ``repo_id`` is found: ``(file, ref)``.

    The hub cache keeps ``models--ORG--NAME/snapshots/<revision>/<file>`` and a
    ``refs/main`` file naming that revision; any name works as the revision, so a file copied
    to ``.../snapshots/manual/<file>`` with ``manual`` written in ``refs/main`` is the cached
    file of ``main``.
    """
    root = (cache or hf_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    return root / "snapshots" / "manual" / filename, root / "refs" / "main"


def _hf_cached(repo_id: str, filename: str, revision: str | None, cache: Path) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _hf_unavailable(what: str, repo_id: str, filename: str, reason: str) -> WeightsUnavailableError:
    path, ref = hf_placement(repo_id, filename)
    return WeightsUnavailableError(
        f"pretrained weights for {what} are not available ({reason}): place the file "
        f"{filename} of https://huggingface.co/{repo_id} at {path} and write the word 'manual' "
        f"into {ref} (or copy the folder {path.parents[2]} from the Hugging Face cache of a "
        f"machine where `hf download {repo_id} {filename}` ran), or pass --weights PATH "
        "(Python: weights=PATH) for a .safetensors file or state dict of this architecture, or "
        "--weights none for random init"
    )


def _probe(url: str, timeout: float) -> int | None:
    """HTTP status of a HEAD request to ``url`` (None: the host could not be reached)."""
    request = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def _split_revision(hub_id: str) -> tuple[str, str | None]:
    repo, _, revision = hub_id.partition("@")
    return repo, revision or None


def _fetch_from_hub(cfg: dict[str, Any], what: str, options: LoadOptions) -> Path:
    repo_id, revision = _split_revision(str(cfg["hf_hub_id"]))
    wanted = cfg.get("hf_hub_filename")
    candidates = _HF_FILES if not wanted else (wanted,)
    if wanted and not str(wanted).endswith(".safetensors"):
        candidates = (str(Path(wanted).with_suffix(".safetensors")), wanted)
    cache = hf_cache_dir()
    for filename in candidates:
        found = _hf_cached(repo_id, filename, revision, cache)
        if found is not None:
            return found
    first = candidates[0]
    if offline_requested(options.offline):
        raise _hf_unavailable(what, repo_id, first, "not in the cache and offline mode is on")
    from huggingface_hub import hf_hub_download, hf_hub_url

    for filename in candidates:
        url = hf_hub_url(repo_id, filename, revision=revision)
        status = _probe(url, DEFAULT_TIMEOUT)
        if status is None:
            raise _hf_unavailable(
                what,
                repo_id,
                first,
                f"huggingface.co could not be reached (timeout {DEFAULT_TIMEOUT:g}s)",
            )
        if status == 404:
            continue
        try:
            return Path(
                hf_hub_download(
                    repo_id,
                    filename,
                    revision=revision,
                    cache_dir=cache,
                    etag_timeout=DEFAULT_TIMEOUT,
                )
            )
        except Exception as exc:  # the hub client's errors have no common base besides OSError
            raise _hf_unavailable(what, repo_id, filename, f"download failed ({exc})") from exc
    raise _hf_unavailable(what, repo_id, first, f"none of {', '.join(candidates)} is on the hub")


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, read without running pickled code."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read the weights file {path} ({exc}); delete it and load again, or pass "
            "--weights PATH / --weights none"
        ) from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def _preprocessing(module: nn.Module, timm: Any) -> tuple[Preprocessing, dict[str, Any]]:
    config = timm.data.resolve_model_data_config(module)
    channels, height, width = (int(v) for v in config["input_size"])
    crop_pct = float(config.get("crop_pct") or 1.0)
    interpolation = str(config.get("interpolation") or "bilinear")
    if interpolation not in {"nearest", "bilinear", "bicubic", "box", "hamming", "lanczos"}:
        interpolation = "bilinear"  # timm's "random" is a training-time choice
    mean = tuple(float(v) for v in config["mean"])
    std = tuple(float(v) for v in config["std"])
    if channels not in (1, 3) or len(mean) != channels:
        raise UnknownModelError(
            f"interp supports 1- and 3-channel models; this timm config asks for {channels}"
        )
    prep = Preprocessing(
        mean=mean,
        std=std,
        input_size=(height, width),
        channels=channels,
        resize_size=math.floor(min(height, width) / crop_pct),
        interpolation=interpolation,
    )
    return prep, config


def _class_names(module: nn.Module, timm: Any) -> tuple[str, ...] | None:
    n_out = int(getattr(module, "num_classes", 0) or 0)
    if n_out <= 0:
        return None
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(module)
        if not subset:
            return None
        if subset == "imagenet-1k" and n_out == 1000:
            from .zoo import imagenet_classes  # torchvision's short names, as other families

            return imagenet_classes()
        names = ImageNetInfo(subset).label_descriptions()
    except (ImportError, AttributeError, TypeError, ValueError):
        return None
    names = [str(n).split(",")[0].strip() for n in names]
    return tuple(names) if len(names) == n_out else None


def _feature_layers(module: nn.Module) -> list[str]:
    info = getattr(module, "feature_info", None)
    if info is None:
        return []
    entries = getattr(info, "info", info)  # a FeatureInfo object or a list of dicts
    try:
        names = [str(e["module"]) for e in entries]
    except (TypeError, KeyError):
        return []
    present = dict(module.named_modules())
    return [n for n in names if n in present]


def _tag_spec(name: str, options: LoadOptions) -> str:
    """``name`` with the tag asked for by ``weights=<tag>`` (``weights="a1_in1k"``)."""
    timm = require_timm()
    base = name.split(".", 1)[0]
    tag = str(options.weights)
    tags = [n.split(".", 1)[1] for n in timm.list_pretrained(f"{base}.*") if "." in n]
    if tag not in tags:
        choices = ", ".join(tags) or "none (this architecture has no pretrained weights)"
        raise UnknownModelError(
            f"timm:{base} has no pretrained tag {tag!r}; choose one of: {choices}, or "
            "'default', 'none', or a file path"
        )
    return f"{base}.{tag}"


@register_prefix(
    "timm",
    timm_names,
    "any timm model (pip install 'interp[timm]'); weights via the Hugging Face hub cache",
    requires=require_timm,
)
def _timm(name: str, options: LoadOptions) -> Model:
    timm = require_timm()
    kwargs = dict(options.kwargs)
    mode = options.weights_mode
    if mode == "named":
        name = _tag_spec(name, options)
        mode = "default"
    spec = f"timm:{name}"
    from timm.models import get_pretrained_cfg

    found = get_pretrained_cfg(name)
    cfg = dict(found.to_dict()) if found is not None else {}
    tag = f"{cfg.get('architecture', name)}.{cfg['tag']}" if cfg.get("tag") else name
    path: Path | None = None
    if mode == "default":
        what = f"{spec} (timm {tag})"
        if cfg.get("hf_hub_id"):
            path = _fetch_from_hub(cfg, what, options)
        elif cfg.get("url"):
            path = fetch_weights(
                str(cfg["url"]), what, offline=options.offline, quiet=options.quiet
            )
        else:
            raise WeightsUnavailableError(
                f"timm has no pretrained weights for {spec}: use --weights none (random init) "
                f"or --weights PATH, or a tagged name from `interp models "
                f"'timm:{name.split('.', 1)[0]}.*'`"
            )
        if path.suffix != ".npz":  # .npz (numpy) goes to the model's own loader
            _read_state(path)  # refuse anything but plain tensors before timm reads it
    try:
        module = build_random(
            lambda: timm.create_model(
                name,
                pretrained=path is not None,
                pretrained_cfg_overlay={"file": str(path), "source": None} if path else None,
                **kwargs,
            ),
            options.seed,
        )
    except (RuntimeError, ValueError, KeyError) as exc:
        if path is None:
            raise
        raise CheckpointError(
            f"timm could not load {path} onto {spec} ({exc}); delete the file to fetch it "
            "again, or pass --weights PATH / --weights none"
        ) from exc
    prep, config = _preprocessing(module, timm)
    model = Model(
        module=module,
        name=spec,
        preprocessing=prep,
        class_names=_class_names(module, timm),
        weights_source=str(path) if path else "random init",
        info={
            "family": "timm",
            "seed": options.seed,
            "timm_version": str(timm.__version__),
            "pretrained_tag": tag,
            "crop_pct": float(config.get("crop_pct") or 1.0),
            "crop_mode": str(config.get("crop_mode", "center")),
            "feature_layers": _feature_layers(module),
        },
    )
    if path is not None:
        model.info["weights"] = tag
    if mode == "path":
        return apply_weight_path(model, options)
    return model
