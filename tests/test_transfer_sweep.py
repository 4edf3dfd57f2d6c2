"""Known answers for the fine-tuning sweep behind the transfer experiment's digits part.

A planted "pretrained" network whose first two stages are a fixed random projection that
keeps the input exactly (an invertible affine map: ReLU never clips) and whose last two are
tuned to something the digits do not have (their filters read only channel directions that
carry no signal here) must show frozen early stages costing little and frozen late stages
costing much; a "pretrained" network with constant weights must gain nothing over random
init. Digits at their native 8x8, tiny networks: seconds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from interp.data.specs import load_data
from interp.experiments.finetune import StageNet, finetune, freeze, lite_stages
from interp.experiments.transfer_sweep import (
    SPECIFICITY_MARGIN,
    analyse,
    paired_interval,
    per_class_indices,
    sweep,
)

pytestmark = pytest.mark.usefixtures("one_thread")
WIDTH = 24  # 12 sign pairs: the first stage keeps each 3x3 patch (9 numbers) exactly


def _stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(len(ds))]
    x = torch.stack([im for im, _ in items])[:, :1]
    return (x - 0.3) / 0.4, torch.tensor([int(lab) for _, lab in items])


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, ...]:
    d = load_data("digits", size=8)
    x_tr, y_tr = _stack(d.train)
    x_va, y_va = _stack(d.val)
    x_te, y_te = _stack(d.test)
    return x_tr, y_tr, torch.cat([x_va, x_te]), torch.cat([y_va, y_te])


def _net(seed: int) -> StageNet:
    """Four stages (3x3 conv, BatchNorm, ReLU; 24 channels) and a linear classifier on the
    flattened 8x8 maps (a frozen network that keeps the input leaves a linear classifier
    on the pixels, as good as the digits need), default init."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stages = [
            nn.Sequential(
                nn.Conv2d(1 if k == 0 else WIDTH, WIDTH, 3, padding=1),
                nn.BatchNorm2d(WIDTH),
                nn.ReLU(),
            )
            for k in range(4)
        ]
        head = nn.Sequential(nn.Flatten(), nn.Linear(WIDTH * 64, 10))
    return StageNet(stages, head)


def _planted(seed: int) -> StageNet:
    """Stages 0-1: a fixed random projection that keeps the input exactly: stage 0 gives
    ``relu(u), relu(-u)`` for ``u`` 12 random 3x3 filters of the image (a full-rank map of
    each patch), stage 1 the same pairs of ``P u`` (``P`` a random rotation); BatchNorm is
    the identity. Stages 2-3: random filters whose units are tuned to inputs a hundred times
    larger than the digits' (stored variance 1e4, threshold 1): on digits, frozen, they
    never fire and pass on nothing."""
    net = _net(seed)
    g = torch.Generator().manual_seed(1234)  # the same planted weights for every seed
    half = WIDTH // 2
    u = torch.randn(half, 1, 3, 3, generator=g)
    p, _ = torch.linalg.qr(torch.randn(half, half, generator=g))
    with torch.no_grad():
        for stage in net.stages:
            bn = stage[1]
            bn.weight.fill_(1.0)
            bn.bias.zero_()
            bn.running_mean.zero_()
            bn.running_var.fill_(1.0 - bn.eps)  # the identity in eval mode
        c0, c1 = net.stages[0][0], net.stages[1][0]
        c0.weight.copy_(torch.cat([u, -u]))
        c0.bias.zero_()
        c1.weight.zero_()
        c1.weight[:, :, 1, 1] = torch.cat([torch.cat([p, -p], 1), torch.cat([-p, p], 1)])
        c1.bias.zero_()
        for k in (2, 3):
            bn = net.stages[k][1]
            bn.running_var.fill_(1e4)
            bn.bias.fill_(-1.0)
    return net


def _constant(seed: int) -> StageNet:
    net = _net(seed)
    with torch.no_grad():
        for m in net.stages.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.fill_(0.05)
                if m.bias is not None:
                    m.bias.zero_()
    return net


def test_planted_projection_keeps_the_input(digits) -> None:
    x = digits[0][:64]
    net = _planted(0).eval()
    with torch.no_grad():
        h = net.stages[1](net.stages[0](x))
        late = net.stages[2](h)
    # the pairs give back the 12 filter responses, rotated: the patches are recoverable
    half = WIDTH // 2
    pu = (h[:, :half] - h[:, half:]).permute(0, 2, 3, 1).reshape(-1, half)
    patches = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 9)
    solution = torch.linalg.lstsq(pu.double(), patches.double()).solution
    assert torch.allclose(pu.double() @ solution, patches.double(), atol=1e-6)
    assert late.abs().max() == 0  # the late units never fire on digits


def test_planted_and_constant_known_answers(digits) -> None:
    inits = {"planted": _planted, "constant": _constant, "random": _net}
    raw = sweep(
        inits,
        digits,
        per_class=(10, None),
        depths=(1, 2, 3, 4),
        depth_per_class=None,
        seeds=(0, 1),
        steps=150,
        batch_size=32,
        lr=3e-3,
        bn_momentum=0.1,
        settle=("random",),
        progress=False,
    )
    planted = analyse(raw, pretrained="planted", resamples=300)
    cost = {r["depth"]: r["cost"]["mean"] for r in planted["frozen"]}
    whole = planted["frozen"][0]["planted"]["mean"]
    print(
        {
            r["depth"]: (round(r["planted"]["mean"], 3), round(r["random"]["mean"], 3))
            for r in planted["frozen"]
        }
    )
    print(analyse(raw, pretrained="constant")["per_class"])
    assert whole > 0.8, planted["frozen"][0]
    # frozen early stages (the input kept) cost little; frozen late stages (blind) cost much
    assert abs(cost[1]) < SPECIFICITY_MARGIN + 0.02 and abs(cost[2]) < SPECIFICITY_MARGIN + 0.02
    assert cost[3] > 0.5 and cost[4] > 0.5, cost
    assert planted["specific_from"]["depth"] == 3
    # ... and help: frozen random late stages keep more of the digits than the blind ones
    helps = {r["depth"]: r["help"] for r in planted["frozen"]}
    assert helps[3]["hi"] < 0 and helps[4]["hi"] < 0

    constant = analyse(raw, pretrained="constant", resamples=300)
    for row in constant["per_class"]:
        assert row["gain"]["hi"] < SPECIFICITY_MARGIN, row  # no gain over random init
        assert row["gain"]["lo"] < 0, row


def test_paired_interval_known_cases() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((3, 500)) < 0.9
    same = paired_interval(a, a)
    assert same == {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    b = rng.random((3, 500)) < 0.7
    gap = paired_interval(a, b, resamples=400)
    assert gap["lo"] > 0.1 and gap["hi"] < 0.3 and gap["lo"] < gap["mean"] < gap["hi"]
    # seed-to-seed spread widens the interval: one seed far off
    c = a.copy()
    c[0] = rng.random(500) < 0.2
    wide = paired_interval(c, resamples=400)
    narrow = paired_interval(a, resamples=400)
    assert wide["hi"] - wide["lo"] > 3 * (narrow["hi"] - narrow["lo"])


def test_per_class_subsets_are_nested_and_balanced() -> None:
    y = torch.arange(300) % 3
    small, large = per_class_indices(y, 5, 7), per_class_indices(y, 20, 7)
    assert set(small.tolist()) <= set(large.tolist())
    assert np.bincount(y[small].numpy()).tolist() == [5, 5, 5]
    assert len(per_class_indices(y, None, 7)) == 300
    assert not torch.equal(per_class_indices(y, 5, 8), small)


def test_finetune_freezes_exactly_the_prefix_and_caches_it(digits) -> None:
    x, y = digits[0][:96], digits[1][:96]
    nets = [_planted(0) for _ in range(2)]
    before = {k: v.clone() for k, v in nets[0].state_dict().items()}
    for net, cache in zip(nets, (True, False), strict=True):
        finetune(net, x, y, frozen=2, steps=6, batch_size=32, seed=3, cache_frozen=cache)
    after = nets[0].state_dict()
    for key, value in before.items():
        if key.startswith(("stages.0.", "stages.1.")):
            assert torch.equal(after[key], value), key
        elif key.endswith("weight"):
            assert not torch.equal(after[key], value), key
    for key, value in after.items():
        assert torch.allclose(value.float(), nets[1].state_dict()[key].float(), atol=1e-5), key
    # exactly the given number of optimizer steps, whatever the data size
    seen = []
    finetune(_net(0), x[:20], y[:20], steps=7, batch_size=8, on_step=lambda: seen.append(1))
    assert len(seen) == 7
    with pytest.raises(ValueError, match="frozen"):
        freeze(_net(0), 5)


def test_lite_stages_is_a_copy_with_a_new_head() -> None:
    from interp.models.registry import load_model

    model = load_model("efficientnet_lite0", device="cpu", weights="none", seed=0)
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    net = lite_stages(model.module, 10, seed=0)
    assert len(net.stages) == 18 and net.names[0] == "stem" and net.names[-1] == "head"
    assert net.head[-1].out_features == 10
    finetune(net, torch.randn(8, 3, 32, 32), torch.arange(8) % 10, frozen=17, steps=1)
    for key, value in model.module.state_dict().items():
        assert torch.equal(value, state[key]), key  # the source network is untouched
    with pytest.raises(TypeError, match="EfficientNet-Lite"):
        lite_stages(nn.Linear(2, 2), 10)
