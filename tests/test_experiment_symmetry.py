"""The symmetry experiment: constant init keeps units identical, random init and symmetry
breakers make them differ, and the experiment writes its outputs deterministically."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from interp.data.toy import corner_blobs
from interp.experiments.symmetry import (
    CONDITIONS,
    REFERENCES,
    SymmetryResult,
    activation_rank,
    build_model,
    distinct_units,
    symmetry,
    train_run,
    unit_difference,
    unit_layers,
)
from interp.pipeline.suite import write_experiment

pytestmark = pytest.mark.usefixtures("one_thread")


def _blobs() -> tuple[torch.Tensor, ...]:
    x, y = corner_blobs(128, 0, shuffle=True)
    return x[:64], y[:64], x[64:], y[64:]


def _images() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 16, 16, generator=g)
    y = torch.randint(0, 6, (40,), generator=g)
    return x[:32], y[:32], x[32:], y[32:]


def _train(kind: str, condition: str, batchnorm: bool = True) -> tuple[nn.Module, dict]:
    model = build_model(kind, condition, seed=0, hidden=8, width=0.125, batchnorm=batchnorm)
    data = _blobs() if kind == "mlp" else _images()
    run = train_run(model, data, epochs=2, batch_size=8, lr=1e-2, seed=0, checkpoints=4)
    return model, run


def _changed(model: nn.Module, kind: str, condition: str, batchnorm: bool) -> bool:
    """Whether training moved every hidden layer's weights away from their init."""
    start = build_model(kind, condition, seed=0, hidden=8, width=0.125, batchnorm=batchnorm)
    now, _ = unit_layers(model)
    before, _ = unit_layers(start)
    return all(not torch.equal(now[name][0].weight, before[name][0].weight) for name in now)


def test_unit_difference_and_distinct_units() -> None:
    layer = nn.Linear(3, 4)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2, 3], [1, 2, 3], [1, 2, 3.5], [1, 2, 3]]))
        layer.bias.fill_(0.25)
    assert unit_difference(layer) == pytest.approx(0.5)
    assert distinct_units(layer) == 2
    with torch.no_grad():
        layer.bias[3] += 1e-3
    assert distinct_units(layer) == 3
    assert distinct_units(layer, tol=1e-2) == 2
    with torch.no_grad():
        layer.weight.fill_(0.1)
        layer.bias.fill_(0.0)
    assert unit_difference(layer) == 0.0 and distinct_units(layer) == 1
    acts = torch.randn(50, 1).repeat(1, 4)
    assert activation_rank(acts) == 1
    assert activation_rank(torch.randn(50, 4)) == 4
    assert activation_rank(torch.zeros(50, 4)) == 0


@pytest.mark.parametrize(
    ("kind", "batchnorm"), [("mlp", True), ("cnn", False), ("cnn", True)], ids=str
)
def test_constant_init_keeps_units_identical(kind: str, batchnorm: bool) -> None:
    model, run = _train(kind, "constant", batchnorm)
    assert _changed(model, kind, "constant", batchnorm)  # it did train
    assert len(run["steps"]) == 5
    for name, history in run["max_diff"].items():
        assert history == [0.0] * len(history), name
        assert run["distinct_units"][name][-1] == 1
        assert run["final"][name]["activation_rank"] <= 1
    if batchnorm and kind == "cnn":
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                assert torch.equal(module.weight, module.weight[:1].expand_as(module.weight))

    _, rand = _train(kind, "random", batchnorm)
    for name, history in rand["max_diff"].items():
        assert history[0] > 0.0 and history[-1] > 0.0, name
        assert rand["final"][name]["distinct_units"] == rand["final"][name]["units"]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("condition", ["constant_dropout", "constant_noise"])
def test_dropout_and_noise_break_the_symmetry(kind: str, condition: str) -> None:
    _, run = _train(kind, condition)
    for name, history in run["max_diff"].items():
        assert history[0] == 0.0, name  # constant at the start...
        assert history[-1] > 0.0, name  # ...different after training
        assert run["final"][name]["distinct_units"] > 1


def test_random_output_layer_breaks_only_the_top_layer() -> None:
    _, run = _train("mlp", "constant_random_output")
    assert run["final"]["hidden"]["max_diff"] > 0.0
    _, run = _train("cnn", "constant_random_output")
    names = list(run["final"])
    assert run["final"][names[-1]]["max_diff"] > 0.0
    for name in names[:-1]:
        assert run["final"][name]["max_diff"] == 0.0, name


def test_build_model_leaves_rng_alone_and_checks_arguments() -> None:
    state = torch.random.get_rng_state()
    a = build_model("mlp", "random", seed=3)
    b = build_model("mlp", "random", seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    with pytest.raises(ValueError):
        build_model("mlp", "zeros")
    with pytest.raises(ValueError):
        build_model("rnn", "random")


TINY = dict(
    mlp_points=64,
    mlp_epochs=2,
    cnn_width=0.125,
    cnn_epochs=1,
    n=32,
    size=16,
    batch_size=16,
    checkpoints=2,
    progress=False,
)


def test_symmetry_writes_outputs_deterministically(tmp_path) -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    first = symmetry(tmp_path / "a", **TINY)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    second = symmetry(tmp_path / "b", **TINY)
    assert first == second

    write_experiment("symmetry", first, tmp_path / "a")
    assert (tmp_path / "a" / "symmetry.png").stat().st_size > 1000
    assert SymmetryResult.load(tmp_path / "b") == second
    saved = json.loads((tmp_path / "a" / "symmetry.json").read_text())
    assert saved == json.loads(json.dumps(first.to_dict()))
    assert set(saved["mlp"]["runs"]) == set(CONDITIONS) == set(saved["cnn"]["runs"])
    assert saved["mlp"]["runs"]["constant"]["final"]["hidden"]["max_diff"] == 0.0
    for layer in saved["cnn"]["runs"]["constant"]["final"].values():
        assert layer["max_diff"] == 0.0
    findings = saved["findings"]
    assert len(findings) == 11 and all(isinstance(f, str) and f for f in findings)
    assert set(saved["mlp"]["constant_width_sweep"]) == {str(w) for w in range(2, 9)}
    assert set(saved["mlp"]["references"]) == {*REFERENCES, "random_1_unit"}
    assert set(saved["cnn"]["references"]) == set(REFERENCES)
    assert any("0.0" in f and "constant initialization" in f for f in findings)
    assert symmetry(None, **TINY)["findings"] == findings
