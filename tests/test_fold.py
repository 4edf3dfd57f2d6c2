"""BatchNorm folding for rendering (interp.featvis.fold) and the renderer's device defaults
(render_defaults): known answers on small networks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from interp import Model, Preprocessing
from interp import objectives as obj
from interp.activations import ActivationCapture
from interp.featvis.fold import fold_batchnorm
from interp.featvis.render import render, render_defaults


def _model(net: nn.Module) -> Model:
    pre = Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3, channels=3, input_size=(16, 16))
    return Model(net.eval(), "test", pre)


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    return bn.eval()


class Residual(nn.Module):
    """conv -> bn, but the conv's output also feeds the sum: folding it would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = _bn(4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def _run(module: nn.Module, x: torch.Tensor, layer: str):
    def run():
        with ActivationCapture(module, [layer]) as cap:
            return list(cap.run(x).values())

    return run


def test_folded_network_agrees_and_everything_is_restored():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), _bn(8), nn.ReLU(), nn.Conv2d(8, 4, 3, bias=False), _bn(4)
    )
    x = torch.rand(2, 3, 12, 12)
    want = net(x)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    params = [id(p) for p in net.parameters()]
    with fold_batchnorm(net, _run(net, x, "4")) as folded:
        assert folded == 2
        assert torch.allclose(net(x), want, atol=1e-5)
        assert net[1].forward(torch.ones(1)) == 1  # the BatchNorm is an identity now
    assert [id(p) for p in net.parameters()] == params
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all("forward" not in m.__dict__ for m in net.modules())
    assert torch.equal(net(x), want)


def test_a_conv_whose_output_is_read_elsewhere_is_not_folded():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), Residual())
    x = torch.rand(2, 3, 12, 12)
    with fold_batchnorm(net, _run(net, x, "1")) as folded:
        assert folded == 0  # the check caught the residual use
    # a hooked conv (its own output is the objective) is kept as well
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), _bn(4))
    with fold_batchnorm(plain, _run(plain, x, "0"), keep=[plain[0]]) as folded:
        assert folded == 0


def test_render_folds_and_reports_true_values():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8), nn.ReLU(), nn.Conv2d(8, 4, 3))
    model = _model(net)
    result = render(model, obj.channel("3", [0, 1]), steps=4, size=16, progress=False)
    assert result.info["folded_batchnorms"] == 1
    # the reported values are those of the true (unfolded) network on the final images
    with torch.no_grad():
        true = net(result.images)[:, [0, 1]].mean(dim=(2, 3)).diagonal()
    assert torch.allclose(result.values, true, atol=1e-5)


def test_render_defaults_follow_the_rule(monkeypatch):
    import importlib

    module = importlib.import_module("interp.featvis.render")
    dense = _model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)))
    depthwise = _model(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8)))
    monkeypatch.setattr(module, "cpu_bf16_fast", lambda: True)
    assert render_defaults(dense) == {"precision": "bf16", "channels_last": True, "param": "fft"}
    assert render_defaults(depthwise)["precision"] == "fp32"
    assert render_defaults(depthwise, "0")["precision"] == "bf16"  # before the depthwise
    monkeypatch.setattr(module, "cpu_bf16_fast", lambda: False)
    assert render_defaults(dense)["precision"] == "fp32"


def test_auto_param_follows_the_measured_receptive_field():
    # a 3x3 conv sees 3 px, two of them 5 px, a 9x9 after them 13 px
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 9))
    model = _model(net)
    assert render_defaults(model, "0", canvas=12)["param"] == "pixel"  # 4 * 3 <= 12
    assert render_defaults(model, "0", canvas=11)["param"] == "fft"
    assert render_defaults(model, "2", canvas=20)["param"] == "pixel"  # 4 * 5 <= 20
    assert render_defaults(model, "3", canvas=48)["param"] == "fft"  # 4 * 13 > 48
    assert render_defaults(model, "3", canvas=52)["param"] == "pixel"
    assert render_defaults(model)["param"] == "fft"  # whole network
    result = render(model, obj.channel("0", [0]), steps=2, size=16, progress=False)
    assert result.info["param"] == "pixel"
    result = render(model, obj.channel("3", [0]), steps=2, size=32, progress=False)
    assert result.info["param"] == "fft"
    with pytest.raises(ValueError, match="auto, fft, pixel"):
        render(model, obj.channel("0", [0]), param="fourier", steps=2, size=16, progress=False)


class Dense(nn.Module):
    """densenet's pattern: a BatchNorm reads a concatenation, not a conv's output (the conv's
    freed output memory may be reused for a later tensor: it must not be taken for it)."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 + 2 * i, 2, 3, padding=1) for i in range(3))
        self.bns = nn.ModuleList(_bn(3 + 2 * (i + 1)) for i in range(3))

    def forward(self, x):
        for conv, bn in zip(self.convs, self.bns, strict=True):
            x = bn(torch.cat([x, conv(x)], dim=1))
        return x


def test_batchnorms_after_concatenations_are_left_alone():
    torch.manual_seed(0)
    net = Dense().eval()
    x = torch.rand(2, 3, 12, 12)
    want = net(x)
    with fold_batchnorm(net, _run(net, x, "bns.2")) as folded:
        assert folded == 0
        assert torch.equal(net(x), want)
