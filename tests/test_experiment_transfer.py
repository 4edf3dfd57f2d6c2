"""Tests of the transfer experiment: layer copying and freezing, linear probes, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from interp.experiments.finetune import simplecnn_stages
from interp.experiments.transfer import (
    ANB_CONDITIONS,
    TransferResult,
    copy_layers,
    linear_probe,
    reestimate_bn,
    set_train_mode,
    train_classifier,
    transfer,
)
from interp.models.small import SimpleCNN
from interp.pipeline.suite import write_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(seed: int, classes: int = 3) -> SimpleCNN:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SimpleCNN(classes, 3, width=0.25, batchnorm=True)


def _block_of(key: str) -> int | None:
    """Conv block (1..5) a state-dict key belongs to, None for the rest (fc)."""
    if not key.startswith("features."):
        return None
    name = key.split(".")[1]
    return int(name[-1]) if name[:-1] in ("conv", "bn") else None


def _toy(seed: int = 0, count: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(count) % 3
    x = torch.randn(count, 3, 16, 16, generator=g)
    x[:, 0] += y.view(-1, 1, 1).float()  # learnable: mean of channel 0 tells the class
    return x, y


@pytest.mark.parametrize("n", [1, 3, 5])
def test_copy_layers_copies_exactly_the_first_n_blocks(n: int) -> None:
    src, dst = _net(1), _net(2)
    with torch.no_grad():  # make BN buffers distinct from the defaults too
        for m in src.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.num_batches_tracked.fill_(7)
    fresh = {k: v.clone() for k, v in dst.state_dict().items()}
    copy_layers(src, dst, n)
    s_state, d_state = src.state_dict(), dst.state_dict()
    copied = 0
    for key, value in d_state.items():
        block = _block_of(key)
        if block is not None and block <= n:
            assert torch.equal(value, s_state[key]), key
            copied += 1
        else:
            assert torch.equal(value, fresh[key]), key
            if value.is_floating_point() and value.numel() > 1:
                assert not torch.equal(value, s_state[key]), key
    # conv weight, bn weight/bias/running_mean/running_var/num_batches_tracked per block
    assert copied == 6 * n


def test_frozen_blocks_do_not_change_and_keep_bn_in_eval_mode() -> None:
    x, y = _toy()
    src = _net(1)
    reestimate_bn(src, x)  # stored statistics that differ from the defaults
    net = copy_layers(src, _net(2), 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    set_train_mode(simplecnn_stages(net), 2)
    assert not net.features.bn1.training and not net.features.bn2.training
    assert net.features.bn3.training and net.fc.training

    train_classifier(net, x, y, epochs=2, batch_size=16, seed=0, frozen=2)
    after = net.state_dict()
    for key in before:
        block = _block_of(key)
        if block is not None and block <= 2:
            assert torch.equal(after[key], before[key]), f"frozen {key} changed"
        elif key.endswith(("weight", "running_mean")):
            assert not torch.equal(after[key], before[key]), f"trainable {key} did not change"
    assert not any(p.requires_grad for p in net.features.conv1.parameters())
    assert all(p.requires_grad for p in net.features.conv3.parameters())


def test_fine_tuned_blocks_change() -> None:
    x, y = _toy()
    net = copy_layers(_net(1), _net(2), 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    train_classifier(net, x, y, epochs=2, batch_size=16, seed=0, frozen=0)
    for key in ("features.conv1.weight", "features.bn1.weight", "features.bn1.running_mean"):
        assert not torch.equal(net.state_dict()[key], before[key]), key


def test_cached_frozen_prefix_matches_running_it_every_step() -> None:
    x, y = _toy()
    nets = [copy_layers(_net(1), _net(2), 3) for _ in range(2)]
    for net, cache in zip(nets, (True, False), strict=True):
        train_classifier(net, x, y, epochs=2, batch_size=16, seed=3, frozen=3, cache_frozen=cache)
    other = nets[1].state_dict()
    for key, value in nets[0].state_dict().items():
        assert torch.allclose(value.float(), other[key].float(), atol=1e-4), key


def test_linear_probe_planted_label_vs_noise() -> None:
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 5, 400), rng.integers(0, 5, 400)

    def feats(y: np.ndarray, planted: bool) -> np.ndarray:
        f = rng.normal(size=(len(y), 20))
        if planted:
            f[:, :5] += 4.0 * np.eye(5)[y]
        return f

    planted = linear_probe(feats(y_train, True), y_train, feats(y_test, True), y_test)
    noise = linear_probe(feats(y_train, False), y_train, feats(y_test, False), y_test)
    assert planted > 0.97
    assert noise < 0.35  # chance is 0.2


def test_reestimate_bn_matches_data_statistics() -> None:
    x = torch.randn(256, 3, 8, 8) * 3 + 2
    net = _net(0).eval()
    reestimate_bn(net.features[:2], x, batch_size=64)  # conv1 + bn1
    with torch.no_grad():
        h = net.features.conv1(x)
    mean = h.mean(dim=(0, 2, 3))
    assert torch.allclose(net.features.bn1.running_mean, mean, atol=1e-4)
    assert net.features.bn1.momentum == 0.1 and not net.features.bn1.training


def test_transfer_end_to_end_tiny_is_deterministic(tmp_path) -> None:
    kw = dict(size=16, n=120, n_test=60, epochs=1, width=0.25, lite0=False, progress=False)
    kw |= dict(digits=False, seeds=2, bootstrap=50)
    state = torch.get_rng_state()
    torch.set_num_threads(2)  # transfer runs with 1 thread and restores the caller's count
    first = transfer(tmp_path / "a", **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == 2
    torch.set_num_threads(1)
    cells = sorted((tmp_path / "a" / "runs" / "transfer").glob("*.json"))
    assert len(cells) == 2 * (2 + 5 * len(ANB_CONDITIONS)) + 1  # + the probes
    second = transfer(None, **kw)  # nothing cached: computed again, the same
    write_experiment("transfer", first, tmp_path / "a")
    for name in ("transfer.json", "transfer_probes.png", "transfer_anb.png", "transfer_digits.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0
    assert TransferResult.load(tmp_path / "a") == first
    doc = json.loads((tmp_path / "a" / "transfer.json").read_text())
    assert doc["anb"] == first["anb"] == second["anb"]
    assert doc["probes"] == first["probes"] == second["probes"]
    assert doc["findings"] == second["findings"]
    anb = doc["anb"]
    assert anb["n"] == [1, 2, 3, 4, 5] and anb["seeds"] == 2
    for name in ANB_CONDITIONS:
        assert len(anb[name]) == 5
        for row in anb[name]:
            assert 0 <= row["lo"] <= row["mean"] <= row["hi"] <= 1
        assert all(len(accs) == 2 for accs in anb[f"{name} per seed"])
    cnn = doc["probes"]["simplecnn"]
    assert set(cnn) == {"digits", "partsworld_b"}
    assert len(cnn["digits"]["trained"]) == len(cnn["digits"]["random"]) == 5
    assert any("Base A reaches" in f for f in doc["findings"])
    # a third run reuses every cell: it trains nothing
    calls = []
    import interp.experiments.transfer_anb as mod

    original = mod.train_classifier
    mod.train_classifier = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        third = transfer(tmp_path / "a", **kw)
    finally:
        mod.train_classifier = original
    assert calls == [] and third["anb"] == first["anb"]


def test_bad_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="split"):
        transfer(split=((0, 1), (1, 2)), lite0=False, progress=False)


def test_figures_of_a_partial_run_say_what_was_not_run(tmp_path) -> None:
    """``--light`` runs the digits part only (``anb=False``): every figure is still drawn."""
    result = TransferResult({"settings": {}, "findings": []})
    paths = write_experiment("transfer", result, tmp_path)
    assert sorted(p.name for p in paths if p.suffix == ".png") == [
        "transfer_anb.png",
        "transfer_digits.png",
        "transfer_probes.png",
    ]
    assert all(p.stat().st_size > 0 for p in paths)
