"""Redirected gradients (interp.featvis.redirect): known answers on hand-made inputs, the
modules restored, and a dead start revived."""

from __future__ import annotations

import torch
from torch import nn

from interp import Model, Preprocessing
from interp import objectives as obj
from interp.featvis.param import pixel_image
from interp.featvis.redirect import redirect_gradients, redirected_clamp
from interp.featvis.render import render


def identity_model(net: nn.Module) -> Model:
    pre = Preprocessing(mean=(0.0,) * 3, std=(1.0,) * 3, channels=3, input_size=(16, 16))
    return Model(net.eval(), "test", pre)


def _grad(x: torch.Tensor, g: torch.Tensor, lo: float, hi: float, mode: str) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    y = redirected_clamp(x, lo, hi, mode)
    assert torch.equal(y, x.detach().clamp(lo, hi))  # the forward is the true clamp
    y.backward(g)
    return x.grad


def test_unit_mode_passes_only_gradients_that_push_back_into_range():
    x = torch.tensor([[-1.0, -1.0, 3.0, 7.0, 7.0]])
    # descent moves x by -g: g<0 raises x, g>0 lowers it
    g = torch.tensor([[-2.0, 2.0, 5.0, 3.0, -3.0]])
    got = _grad(x, g, 0.0, 6.0, "unit")
    assert got.tolist() == [[-2.0, 0.0, 5.0, 3.0, 0.0]]


def test_image_mode_redirects_only_images_whose_true_gradient_is_zero():
    x = torch.tensor([[-1.0, 2.0], [-1.0, -1.0]])
    g = torch.tensor([[-1.0, 4.0], [-1.0, 1.0]])
    got = _grad(x, g, 0.0, float("inf"), "image")
    # image 0 has a live unit: its true gradient; image 1 is all off: redirected
    assert got.tolist() == [[0.0, 4.0], [-1.0, 0.0]]


def test_modules_are_swapped_only_inside_the_context_and_restored_on_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.ReLU6(), nn.Hardswish())
    forwards = [m.forward for m in net]
    x = torch.randn(2, 3, 8, 8)
    want = net(x)
    try:
        with redirect_gradients(net) as switch:
            assert switch.modules == 3
            assert torch.allclose(net(x), want)  # same forward values
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert all("forward" not in m.__dict__ for m in net)
    assert [m.forward for m in net] == forwards


def test_hardswish_and_hardsigmoid_match_their_modules():
    x = torch.linspace(-5, 5, 41)
    for module in (nn.Hardswish(), nn.Hardsigmoid()):
        with redirect_gradients(module):
            got = module(x)
        assert torch.allclose(got, module(x), atol=1e-6)


def test_redirect_revives_a_unit_that_its_start_leaves_off():
    """A ReLU unit behind a strongly negative bias is off on a near-grey start, so the true
    gradient is zero and the image never changes; with redirection the image brightens until
    the unit turns on. (A custom parametrization: the renderer's restarts do not apply.)"""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(-20.0)  # on only where a 3x3 patch averages above 0.74
    model = identity_model(nn.Sequential(conv, nn.ReLU()))
    objective = obj.channel("1", [0])

    def start():
        return pixel_image(1, 3, (16, 16), [0], torch.device("cpu"))

    runs = {
        r: render(
            model,
            objective,
            steps=60,
            size=16,
            param=start,
            transforms=None,
            redirect=r,
            lr=0.1,
            progress=False,
        )
        for r in (0.0, 0.5)
    }
    assert float(runs[0.0].values[0]) == 0.0
    assert runs[0.0].history[-1] == 0.0
    assert float(runs[0.5].values[0]) > 1.0
    assert runs[0.5].info["redirected_modules"] == 1
    assert runs[0.0].info["redirected_modules"] == 0
