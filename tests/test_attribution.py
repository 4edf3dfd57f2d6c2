"""Attribution through captum: saliency equals the direct gradient, integrated gradients are
complete, unit targets work, and no hook or state change survives a call, also when it raises."""

from __future__ import annotations

import json
from collections import OrderedDict

import numpy as np
import pytest
import torch
from conftest import Boom, all_hooks, tiny_cnn
from torch import nn

from interp import ChannelError, Model, Preprocessing, UnknownClassError, UnknownLayerError
from interp.attribution import Attribution, AttributionError, attribute
from interp.views.attribution_figures import save_attribution


def _model() -> Model:
    torch.manual_seed(0)
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(24, 24))
    return Model(tiny_cnn(4).eval(), "tiny", pre, class_names=["a", "b", "c", "d"])


def _image() -> torch.Tensor:
    return torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(1))


def test_saliency_equals_the_direct_gradient():
    model = _model()
    img = _image()
    res = attribute(model, img, "saliency", target="c")
    x = model.normalize(img[None]).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.module(x)[0, 2], x)
    assert np.allclose(res.map, grad.abs().amax(dim=1)[0].numpy(), atol=1e-6)
    assert res.target.startswith("class 2 (c)")
    assert all_hooks(model.module) == 0


def test_unit_saliency_equals_the_direct_gradient():
    model = _model()
    img = _image()
    res = attribute(model, img, "saliency", target="2:5")
    x = model.normalize(img[None]).requires_grad_(True)
    act = model.module[:3](x)  # layer "2": conv, relu, conv
    (grad,) = torch.autograd.grad(act[0, 5].mean(), x)
    assert np.allclose(res.map, grad.abs().amax(dim=1)[0].numpy(), atol=1e-6)
    assert all_hooks(model.module) == 0


@pytest.mark.parametrize("target", [1, "4:3"])
def test_integrated_gradients_are_complete(target):
    model = _model()
    res = attribute(model, _image(), "ig", target=target, n_steps=128)
    diff = res.info["output_difference"]
    assert abs(res.info["sum"] - diff) <= 0.02 * max(1.0, abs(diff))
    assert abs(res.map.sum() - diff) <= 0.02 * max(1.0, abs(diff))


def test_gradcam_and_conductance_shapes(tmp_path):
    model = _model()
    img = _image()
    cam = attribute(model, img, "gradcam", target=0, layer="3")
    assert cam.map.shape == (24, 24) and (cam.map >= 0).all()
    lc = attribute(model, img, "conductance", target=0, layer="3", n_steps=16)
    assert lc.map.shape == (24, 24)
    nc = attribute(model, img, "conductance", target="5:1", n_steps=16)
    assert nc.map.shape == (24, 24) and len(nc.info["neuron"]) == 3
    png, npy, *_ = save_attribution(nc, tmp_path, "unit")
    assert png.stat().st_size > 1000 and np.load(npy).shape == (24, 24)
    back = Attribution.load(tmp_path, "unit")
    assert back.method == "conductance" and back.target == nc.target
    assert np.array_equal(back.map, nc.map) and np.array_equal(back.image, nc.image)
    assert back.to_dict() == json.loads(json.dumps(nc.to_dict(), default=list))
    assert all_hooks(model.module) == 0
    # the result alone writes data, no figure; one attribution in a folder loads without stem
    data = cam.save(tmp_path / "cam")
    assert [p.name for p in data] == ["gradcam.npy", "gradcam.npz", "gradcam.json"]
    assert np.array_equal(Attribution.load(tmp_path / "cam").map, cam.map)


def test_bad_targets_have_clear_errors_and_leave_no_hooks():
    model = _model()
    img = _image()
    with pytest.raises(ChannelError, match="out of range"):
        attribute(model, img, "saliency", target="2:99")
    with pytest.raises(UnknownLayerError):
        attribute(model, img, "saliency", target="conv9:1")
    with pytest.raises(UnknownClassError):
        attribute(model, img, "saliency", target="zebra")
    with pytest.raises(AttributionError, match="unknown method"):
        attribute(model, img, "lime", target=0)
    assert all_hooks(model.module) == 0


def test_state_restored_when_the_model_raises():
    module = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 2, 3), boom=Boom())).train()
    module.conv.weight.requires_grad_(True)
    module.conv.bias.requires_grad_(False)
    model = Model(module, "boom", Preprocessing(input_size=(16, 16)))
    for method in ("saliency", "ig", "gradcam"):
        with pytest.raises(RuntimeError, match="boom"):
            attribute(model, torch.rand(3, 16, 16), method, target=0, layer="conv")
        assert all_hooks(module) == 0 and module.training
        assert module.conv.weight.requires_grad and not module.conv.bias.requires_grad


def test_unit_target_at_a_position_equals_the_direct_gradient():
    model = _model()
    img = _image()
    res = attribute(model, img, "saliency", target="2:5", position=(3, 4))
    x = model.normalize(img[None]).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.module[:3](x)[0, 5, 3, 4], x)
    assert np.allclose(res.map, grad.abs().amax(dim=1)[0].numpy(), atol=1e-6)
    # a single position of a 3x3 conv stack sees only its receptive field
    seen = np.argwhere(res.map > 0)
    assert seen[:, 0].min() >= 3 * 2 - 3 and seen[:, 0].max() <= 3 * 2 + 3
