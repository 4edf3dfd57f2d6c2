"""Activation capture: only the layers asked for, truncated forward, no leaked hooks or state."""

from __future__ import annotations

import pytest
import torch
from conftest import Boom, all_hooks, tiny_cnn
from torch import nn

from interp import ActivationCapture, UnknownLayerError, capture, resolve_layer


class Counter:
    def __init__(self, model: nn.Module, names: list[str]):
        self.calls = dict.fromkeys(names, 0)
        self.handles = [
            model.get_submodule(n).register_forward_pre_hook(self._hook(n)) for n in names
        ]

    def _hook(self, name):
        def fn(_m, _i):
            self.calls[name] += 1

        return fn

    def remove(self):
        for h in self.handles:
            h.remove()


def test_early_layer_never_runs_the_rest(resnet18):
    module = resnet18.module
    counter = Counter(module, ["layer1.0.conv1", "layer1.0.conv2", "layer2", "layer4", "fc"])
    try:
        acts = capture(resnet18, resnet18.example_input(2), ["layer1.0.conv1"])
    finally:
        counter.remove()
    assert acts["layer1.0.conv1"].shape == (2, 64, 56, 56)
    assert counter.calls == {
        "layer1.0.conv1": 1,
        "layer1.0.conv2": 0,
        "layer2": 0,
        "layer4": 0,
        "fc": 0,
    }


def test_efficientnet_block_capture_stops_after_it(lite0):
    counter = Counter(lite0.module, ["_blocks.3", "_blocks.4", "_conv_head", "_fc"])
    try:
        acts = capture(lite0, lite0.example_input(), ["_blocks.1", "_blocks.3"])
    finally:
        counter.remove()
    assert list(acts) == ["_blocks.1", "_blocks.3"]
    assert acts["_blocks.3"].shape == (1, 40, 28, 28)
    assert counter.calls == {"_blocks.3": 1, "_blocks.4": 0, "_conv_head": 0, "_fc": 0}


def test_values_equal_a_full_forward_and_inplace_relu_cannot_change_them(resnet18):
    module = resnet18.module
    x = resnet18.example_input(2, seed=5)
    seen = {}
    handles = [
        module.get_submodule(n).register_forward_hook(
            lambda _m, _i, out, n=n: seen.__setitem__(n, out.clone())
        )
        for n in ("bn1", "layer2.1")
    ]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    acts = capture(resnet18, x, ["bn1", "layer2.1"])
    # bn1 is followed by ReLU(inplace=True): the captured copy keeps its negative values
    assert (acts["bn1"] < 0).any()
    assert torch.equal(acts["bn1"], seen["bn1"])
    assert torch.equal(acts["layer2.1"], seen["layer2.1"])
    assert not acts["bn1"].requires_grad


def test_no_hooks_remain_after_normal_bad_and_raising_calls(resnet18):
    module = resnet18.module
    before = all_hooks(module)
    capture(resnet18, resnet18.example_input(), ["layer1", "layer3.0.conv2"])
    assert all_hooks(module) == before
    with pytest.raises(UnknownLayerError):
        capture(resnet18, resnet18.example_input(), ["layer1", "layer9"])
    assert all_hooks(module) == before

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), Boom(), nn.Conv2d(4, 4, 1))
    before = all_hooks(net)
    with pytest.raises(RuntimeError, match="boom"):
        capture(net, torch.zeros(1, 3, 8, 8), ["1", "3"])
    assert all_hooks(net) == before == 0


def test_mode_and_requires_grad_restored_also_on_error():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), Boom(), nn.Conv2d(4, 4, 1))
    net.train()
    net[1].eval()  # a mixed state must come back exactly
    net[0].bias.requires_grad_(False)
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    running = net[1].running_mean.clone()

    capture(net, torch.randn(2, 3, 8, 8), ["1"], grad=True)  # runs in eval, frozen params
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags
    assert torch.equal(net[1].running_mean, running)  # eval mode: BN statistics untouched

    with pytest.raises(RuntimeError, match="boom"):
        capture(net, torch.randn(2, 3, 8, 8), ["3"], grad=True)
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags


def test_gradients_reach_the_input_not_the_parameters(resnet18):
    x = resnet18.example_input(1).requires_grad_(True)
    acts = capture(resnet18, x, ["layer2.0.conv1"], grad=True)
    acts["layer2.0.conv1"][0, 5].mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in resnet18.module.parameters())
    assert all(p.requires_grad for p in resnet18.module.parameters())


def test_unknown_layer_suggests_nearest_names(resnet18):
    with pytest.raises(UnknownLayerError) as info:
        capture(resnet18, resnet18.example_input(), ["layer1.0.conv"])
    assert "layer1.0.conv1" in str(info.value)
    from interp.models.efficientnet_lite import efficientnet_lite

    with pytest.raises(UnknownLayerError, match="_blocks.3"):
        resolve_layer(efficientnet_lite(), "_block.3")


def test_lucent_underscore_names(resnet18):
    assert resolve_layer(resnet18, "layer1_0_conv1") == "layer1.0.conv1"
    acts = capture(resnet18, resnet18.example_input(), "layer1_0_conv1")
    assert list(acts) == ["layer1.0.conv1"]


def test_context_manager_reuse_and_unused_layer():
    net = tiny_cnn()
    x = torch.randn(3, 3, 16, 16)
    with ActivationCapture(net, ["2", "4"]) as cap:
        first = cap.run(x)
        second = cap.run(x * 2)
    assert first["4"].shape == (3, 8, 8, 8)
    assert not torch.equal(first["2"], second["2"])
    assert all_hooks(net) == 0

    class Skips(nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.used(x)

    with pytest.raises(RuntimeError, match="did not run"):
        capture(Skips(), x, ["unused"])
