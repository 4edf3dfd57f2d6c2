"""The contract over a model matrix from the registry: capture, inventory, render, examples,
dissection and a tiny hierarchy run on every architecture and leave the model exactly as it
was (weights and buffers, train/eval modes, requires_grad, gradients, device, dtype, memory
layout, hooks).

Every model is at random init (``weights="none"``: nothing is downloaded, and the socket guard
below fails any attempt), inputs are 32 px and the data a handful of PartsWorld images, so the
whole matrix runs in seconds per model. Assertions about the results are kept to what any
container would give (layer names, finite values), so the checks survive a change of result
type.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import interp
from interp.data.concepts import PartsWorldConcepts
from interp.inventory import default_layers

# one torch thread: these tiny networks run faster so, and far faster on a busy CPU (2 threads
# made a hierarchy run 30x slower next to other processes)
pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 32  # image size of every call (tiny: late layers of the ImageNet nets are 1x1 maps)
IMAGES = 6  # images of the examples and the dissection


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of the matrix: a registry spec, its load options and the state it is put in."""

    spec: str
    mode: str  # "eval", "train" or "mixed" (train, BatchNorm in eval, first half frozen)
    frozen: bool = False  # requires_grad=False on every parameter
    kwargs: tuple[tuple[str, Any], ...] = ()


MATRIX = (
    # width 0.25: the hierarchy's Gabor fits of the first conv's 32 filters take 7 s at width 1
    Case("simplecnn", "train", kwargs=(("width", 0.25),)),
    Case("torchvision:resnet18", "eval", frozen=True),
    Case("torchvision:mobilenet_v3_small", "mixed"),
    Case("efficientnet_lite0", "eval"),
)
try:  # timm is in the dev extras; without it the timm rows are left out, not failed
    import timm  # noqa: F401

    MATRIX += (
        # four timm families (timm's resnet18 is left to tests/test_timm.py: its hierarchy run
        # repeats torchvision's resnet18 row at 30 s): ConvNeXt (LayerNorm, GELU, no
        # BatchNorm), EfficientNet (BatchNormAct2d, SiLU, SE), RegNet (stages that are not
        # containers), MobileNetV3 (hardswish)
        Case("timm:convnext_atto", "train", frozen=True),
        Case("timm:efficientnet_b0", "mixed"),
        Case("timm:regnetx_002", "eval"),
        Case("timm:mobilenetv3_small_050", "train"),
    )
except ImportError:
    pass


@pytest.fixture(scope="module", autouse=True)
def _no_network() -> Iterator[None]:
    """Any attempt to open an internet connection fails the test (tests never download)."""
    real = socket.socket.connect

    def refuse(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"a test tried to connect to {address}")
        return real(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        yield


# --------------------------------------------------------------------------- the snapshot
def _hooks(module: nn.Module) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The ids of every hook dict of ``module`` that exists in this torch version."""
    kinds = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_pre_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    )
    return tuple((k, tuple(getattr(module, k))) for k in kinds if hasattr(module, k))


def _global_hooks() -> tuple[int, ...]:
    """Counts of the module-global hooks (``nn.modules.module.register_module_*_hook``)."""
    mod = nn.modules.module
    names = (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    )
    return tuple(len(getattr(mod, n)) for n in names if hasattr(mod, n))


def snapshot(model: interp.Model) -> dict[str, Any]:
    """Everything about ``model`` that a call must leave as it was (tensors cloned)."""
    module = model.module
    tensors = {}
    for name, t in module.state_dict(keep_vars=True).items():
        tensors[name] = (t.detach().clone(), t.dtype, t.device, t.stride(), t.requires_grad)
    return {
        "tensors": tensors,
        "training": {n: m.training for n, m in module.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in module.named_parameters()},
        "grads": {
            n: None if p.grad is None else p.grad.detach().clone()
            for n, p in module.named_parameters()
        },
        "param_ids": {n: id(p) for n, p in module.named_parameters()},
        "hooks": {n: _hooks(m) for n, m in module.named_modules()},
        "global_hooks": _global_hooks(),
        "grad_enabled": torch.is_grad_enabled(),
        "wrapper": (model.name, model.preprocessing, model.weights_source),
    }


def assert_unchanged(model: interp.Model, before: dict[str, Any], what: str) -> None:
    """Compare ``model`` with ``before``, naming the first thing ``what`` changed."""
    now = snapshot(model)
    assert now["tensors"].keys() == before["tensors"].keys(), f"{what} changed the state_dict keys"
    for name, (t, dtype, device, stride, req) in before["tensors"].items():
        t2, dtype2, device2, stride2, req2 = now["tensors"][name]
        assert (dtype2, device2) == (dtype, device), f"{what} moved or cast {name}"
        assert stride2 == stride, f"{what} changed the memory layout of {name}"
        assert req2 == req, f"{what} changed requires_grad of {name}"
        assert torch.equal(t2, t), f"{what} changed the values of {name}"
    for key in ("training", "requires_grad", "param_ids", "hooks"):
        changed = [n for n in before[key] if now[key].get(n) != before[key][n]]
        assert now[key].keys() == before[key].keys() and not changed, (
            f"{what} changed {key} of {changed[:5] or 'the module tree'}"
        )
    for name, g in before["grads"].items():
        g2 = now["grads"][name]
        assert (g is None) == (g2 is None), f"{what} left a gradient on {name}"
        assert g is None or torch.equal(g, g2), f"{what} changed the gradient of {name}"
    assert now["global_hooks"] == before["global_hooks"], f"{what} left a global module hook"
    assert now["grad_enabled"] == before["grad_enabled"], f"{what} changed the grad mode"
    assert now["wrapper"] == before["wrapper"], f"{what} changed the Model wrapper's fields"


def _put_in_state(model: interp.Model, case: Case) -> None:
    """The state the case asks for, plus a user's own hooks the library must not remove."""
    module = model.module
    module.train(case.mode != "eval")
    params = list(module.parameters())
    if case.mode == "mixed":  # fine-tuning style: BatchNorm frozen in eval, early layers frozen
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        for p in params[: len(params) // 2]:
            p.requires_grad_(False)
    if case.frozen:
        module.requires_grad_(False)
    # a user's no-op hooks: they must still be there, and the only ones, after every call
    module.register_forward_pre_hook(lambda _m, _inputs: None)
    module.get_submodule(default_layers(model)[0]).register_forward_hook(
        lambda _m, _inputs, _output: None
    )


@dataclasses.dataclass
class Subject:
    case: Case
    model: interp.Model
    layers: list[str]  # one early, one late layer
    before: dict[str, Any]


@pytest.fixture(scope="module", params=MATRIX, ids=lambda c: f"{c.spec}-{c.mode}")
def subject(request: pytest.FixtureRequest) -> Subject:
    case: Case = request.param
    torch.manual_seed(0)
    model = interp.load_model(case.spec, weights="none", device="cpu", seed=7, **dict(case.kwargs))
    assert "random" in model.weights_source  # nothing was loaded (or downloaded)
    _put_in_state(model, case)
    blocks = default_layers(model)
    return Subject(case, model, [blocks[0], blocks[-1]], snapshot(model))


def _layers_of(result: Any) -> list[str]:
    """Layer names of a per-layer result, whatever its container (mapping or ``.layers``)."""
    if isinstance(result, Mapping):
        return list(result)
    layers = result.layers
    if isinstance(layers, Mapping):
        return list(layers)
    return [getattr(entry, "layer", entry) for entry in layers]


# ------------------------------------------------------------------------------- the tests
def test_matrix_comes_from_the_registry():
    listed = interp.list_models()
    for case in MATRIX:
        assert case.spec in listed, f"{case.spec} is not listed by interp.list_models()"
        assert case.spec in interp.list_models(case.spec)


def test_capture(subject: Subject):
    torch.manual_seed(0)
    model, layers = subject.model, subject.layers
    x = model.normalize(torch.rand(2, 3, SIZE, SIZE))
    acts = interp.capture(model, x, layers)
    assert list(acts) == layers
    assert all(a.shape[0] == 2 and torch.isfinite(a).all() for a in acts.values())
    assert_unchanged(model, subject.before, "capture")

    x.requires_grad_(True)  # gradients reach the input only: parameters get none
    acts = interp.capture(model, x, layers, grad=True)
    sum(a.sum() for a in acts.values()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert_unchanged(model, subject.before, "capture(grad=True)")

    with interp.ActivationCapture(model, layers[-1]) as cap:
        assert torch.equal(cap.run(x.detach())[layers[-1]], acts[layers[-1]].detach())
    assert_unchanged(model, subject.before, "ActivationCapture")


def test_inventory(subject: Subject):
    model = subject.model
    infos = interp.layers(model, input_size=(SIZE, SIZE))
    names = [i.name for i in infos]
    assert sorted(names) == sorted(interp.layer_names(model))
    ran = [i for i in infos if i.name in subject.layers]
    assert len(ran) == 2 and all(i.order is not None and i.rf_size for i in ran)
    assert_unchanged(model, subject.before, "the layer inventory")


def test_render(subject: Subject):
    torch.manual_seed(0)
    model, late = subject.model, subject.layers[-1]
    result = interp.render(model, f"{late}:0", steps=3, size=SIZE, progress=False)
    assert tuple(result.images.shape[-2:]) == (SIZE, SIZE)
    assert torch.isfinite(result.images).all()
    assert_unchanged(model, subject.before, "render")


@pytest.mark.parametrize("method", ["ig", "gradcam"])
def test_attribute(subject: Subject, method: str):
    """captum on every family: integrated gradients of a unit, Grad-CAM of a class."""
    torch.manual_seed(0)
    model, late = subject.model, subject.layers[-1]
    image = torch.rand(model.preprocessing.channels, SIZE, SIZE)
    target = f"{late}:0" if method == "ig" else 0
    result = interp.attribute(model, image, method=method, target=target, n_steps=4)
    assert result.map.ndim == 2 and np.isfinite(result.map).all()
    assert_unchanged(model, subject.before, f"attribute ({method})")


def test_examples(subject: Subject):
    torch.manual_seed(0)
    model, layers = subject.model, subject.layers
    result = interp.examples(
        model, "partsworld", layers, n=IMAGES, size=SIZE, k=2, batch_size=4, progress=False
    )
    assert _layers_of(result) == layers
    assert_unchanged(model, subject.before, "examples")


def test_dissect(subject: Subject):
    torch.manual_seed(0)
    model, layers = subject.model, subject.layers
    data = PartsWorldConcepts(n=IMAGES, size=SIZE)
    result = interp.dissect(model, data, layers, batch_size=4, progress=False)
    assert _layers_of(result) == layers
    assert_unchanged(model, subject.before, "dissect")


def test_hierarchy(subject: Subject):
    torch.manual_seed(0)
    model, layers = subject.model, subject.layers
    result = interp.hierarchy(
        model,
        "partsworld",
        layers,
        n=8,
        size=SIZE,
        control_seeds=(0,),
        min_control_units=1,
        max_control_seeds=1,
        reference_images=4,
        bootstrap=10,
        batch_size=8,
        bn_images=8,
        out=None,
        progress=False,
    )
    assert _layers_of(result) == layers
    assert_unchanged(model, subject.before, "hierarchy")
