"""Planted units with known answers for the edge instruments: Gabors, derivative-of-Gaussian
edges, difference-of-Gaussians, colour-opponent blobs and deep colour-blob decoys."""

from __future__ import annotations

import math

import torch
from torch import nn

from interp import Model, Preprocessing


def coords(k: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (k - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(k) - c, torch.arange(k) - c, indexing="ij")
    return cols.float(), -rows.float()  # x right, y up


def gabor(
    stripe_deg: float, freq: float = 0.15, sigma: float = 2.5, phase: float = 0.0, k: int = 11
):
    """A luminance Gabor whose stripes run at ``stripe_deg`` (unit energy)."""
    x, y = coords(k)
    wave = math.radians(stripe_deg + 90)
    env = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    g = env * torch.cos(2 * math.pi * freq * (x * math.cos(wave) + y * math.sin(wave)) + phase)
    g = g - g.mean() * env / env.mean()  # no DC: grey in, zero out
    return g / g.norm()


def dgauss(edge_deg: float, sigma: float = 1.5, k: int = 11) -> torch.Tensor:
    """First derivative of a Gaussian across an edge running at ``edge_deg`` (unit energy)."""
    x, y = coords(k)
    wave = math.radians(edge_deg + 90)
    u = x * math.cos(wave) + y * math.sin(wave)
    g = u * torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    return g / g.norm()


def dog(s1: float = 1.0, s2: float = 2.5, k: int = 11) -> torch.Tensor:
    x, y = coords(k)
    r2 = x**2 + y**2
    g1 = torch.exp(-r2 / (2 * s1**2)) / (2 * math.pi * s1**2)
    g2 = torch.exp(-r2 / (2 * s2**2)) / (2 * math.pi * s2**2)
    d = g1 - g2
    d = d - d.mean()
    return d / d.norm()


def blob(sigma: float = 2.5, k: int = 11) -> torch.Tensor:
    x, y = coords(k)
    g = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    return g / g.norm()


def luminance(kernel: torch.Tensor) -> torch.Tensor:
    """(3, k, k): the same kernel on every colour channel."""
    return torch.stack([kernel] * 3) / math.sqrt(3)


def opponent(kernel: torch.Tensor) -> torch.Tensor:
    """(3, k, k): +red -green (a colour-opponent unit, blind to luminance)."""
    return torch.stack([kernel, -kernel, 0 * kernel]) / math.sqrt(2)


def preprocessing(size: int) -> Preprocessing:
    return Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(size, size))


def conv_layer(weights: torch.Tensor, bias: torch.Tensor | float = 0.0, gain: float = 1.0):
    """A ``Conv2d`` holding ``weights`` ``(units, 3, k, k)`` times ``gain``, plus ``bias``."""
    units, _, k, _ = weights.shape
    conv = nn.Conv2d(3, units, k, padding=k // 2)
    with torch.no_grad():
        conv.weight.copy_(weights * gain)
        conv.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).expand(units))
    return conv


def single(weights, bias=0.0, gain=1.0, act: nn.Module | None = None, size: int = 48) -> Model:
    """A one-layer model ``act(conv(x))`` (layer ``"1"`` is the activation, ``"0"`` the conv)."""
    layers = [conv_layer(weights, bias, gain)]
    if act is not None:
        layers.append(act)
    return Model(nn.Sequential(*layers).eval(), "planted", preprocessing(size))


def gabor_bank(k: int = 11) -> tuple[torch.Tensor, list[float]]:
    """Luminance Gabors and edge filters at 0-135 degrees, periods 3-7 px, odd and even."""
    kernels, angles = [], []
    for a in (0.0, 45.0, 90.0, 135.0):
        for freq, phase in ((0.15, 0.0), (0.25, math.pi / 2), (0.3, 0.0)):
            kernels.append(luminance(gabor(a, freq, 2.5 if freq < 0.2 else 1.8, phase, k)))
            angles.append(a)
        kernels.append(luminance(dgauss(a, 1.5, k)))
        angles.append(a)
    return torch.stack(kernels), angles


def non_edges(k: int = 11) -> torch.Tensor:
    """Isotropic DoGs (on and off centre, two sizes) and colour-opponent blobs and DoGs."""
    ks = [
        luminance(dog(1.0, 2.5, k)),
        luminance(-dog(1.0, 2.5, k)),
        luminance(dog(1.5, 3.5, k)),
        opponent(blob(2.0, k)),
        opponent(blob(3.0, k)),
        opponent(dog(1.0, 2.5, k)),
    ]
    return torch.stack(ks)


class GaborsThenDecoys(nn.Module):
    """An early layer of saturating Gabors (ReLU6, positive bias, high gain), a middle layer
    mixing them, and a deep signed layer of colour-blob decoys with a weak oriented leak and a
    negative offset (read from the input through a branch, after the rest has run)."""

    def __init__(self, k: int = 11, leak: float = 0.12, decoys: int = 16) -> None:
        super().__init__()
        bank, self.angles = gabor_bank(k)
        self.early = nn.Sequential(conv_layer(bank, 2.6, 1.0), nn.ReLU6())
        self.middle = nn.Sequential(nn.Conv2d(len(bank), 24, 3, padding=1), nn.ReLU())
        weights = []
        for i in range(decoys):
            colour = opponent(blob(3.0, k)) if i % 2 == 0 else -opponent(blob(3.0, k))
            angle = 45.0 * (i % 4)
            weights.append(colour + leak * luminance(gabor(angle, 0.15, 2.5, 0.0, k)))
        self.deep = conv_layer(torch.stack(weights), -0.2, 6.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.middle(self.early(x))
        return self.deep(x) + 0 * m.mean()
