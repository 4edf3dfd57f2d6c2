"""Experiments' instruments: the rotation keeps the function, a permutation keeps detectors,
layer identification and redundancy counts on planted cases, and tiny end-to-end runs."""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np
import pytest
import torch

import interp
from interp.data.concepts import PartsWorldConcepts
from interp.experiments import registry
from interp.experiments._common import RunSpec
from interp.experiments.axis_alignment import random_orthogonal, rotate_layer
from interp.experiments.convergence import ConvergenceResult, convergence, layer_identification
from interp.experiments.redundancy import layer_redundancy
from interp.experiments.transfer import TransferResult
from interp.pipeline import suite
from interp.probes.dissect import dissect

TINY = RunSpec(size=32, n=192, epochs=1, width=0.25, snapshots=(1,))


def _cnn(seed: int = 0):
    return interp.load_model("simplecnn", weights="none", seed=seed, width=0.25, input_size=32)


def test_rotation_keeps_the_function():
    model = _cnn()
    x = model.example_input(4)
    q = random_orthogonal(24, seed=3)
    assert torch.allclose(q @ q.T, torch.eye(24, dtype=torch.float64), atol=1e-12)
    rotated = rotate_layer(model, "features.relu4", "features.conv5", q)
    with torch.no_grad():
        a = model.module(model.normalize(x))
        b = rotated.module(rotated.normalize(x))
        assert (a - b).abs().max() < 1e-5
        m64, r64 = model.module.double(), rotated.module.double()
        d = (m64(model.normalize(x).double()) - r64(model.normalize(x).double())).abs().max()
    assert d < 1e-6  # what is left is the float32 rounding of the compensated weights
    model.module.float()
    # the rotated units differ from the original ones
    acts = interp.capture(rotated, model.normalize(x).double(), ["features.relu4.rotate"])
    orig = interp.capture(model.module.double(), model.normalize(x).double(), ["features.relu4"])
    assert not torch.allclose(acts["features.relu4.rotate"], orig["features.relu4"])


def test_a_permutation_keeps_the_detectors():
    model = _cnn(1)
    data = PartsWorldConcepts(n=48, size=32)
    base = dissect(model, data, ["features.relu4"], progress=False)["features.relu4"]
    q = random_orthogonal(base.units, seed=4, permutation=True)
    perm = rotate_layer(model, "features.relu4", "features.conv5", q)
    moved = dissect(perm, data, ["features.relu4.rotate"], progress=False)
    d = moved["features.relu4.rotate"]
    order = q.argmax(dim=1).numpy()  # new unit i is old unit order[i]
    assert np.allclose(d.best_iou, base.best_iou[order], atol=1e-6)
    assert d.counts() == base.counts()


def test_layer_identification_on_planted_similarities():
    cka = np.full((3, 3, 4, 4), 0.2)
    for i in range(4):
        cka[:, :, i, i] = 0.9
    assert layer_identification(cka) == 1.0
    cka[0, 1, 2, 3] = 0.95  # one miss out of 3*2*4 cases
    assert layer_identification(cka) == 1 - 1 / 24


def test_redundancy_counts_planted_duplicates_and_reciprocal_pairs():
    model = _cnn(2)
    conv = model.module.features.conv3
    with torch.no_grad():
        conv.weight[1] = conv.weight[0]  # a duplicate
        conv.weight[3] = -conv.weight[2]  # a sign-flipped twin
    model.module.features.bn3.running_mean.zero_()
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    r = layer_redundancy(model, images)["features.conv3"]
    assert r["near_duplicate_pairs"] >= 1 and r["filter_cosine_above_0.9"] >= 1
    assert r["negative_reciprocal_r_below_-0.9"] >= 1 and r["filter_cosine_below_-0.9"] >= 1


def test_convergence_end_to_end_tiny(tmp_path):
    from interp.pipeline.suite import write_experiment
    from interp.views.experiment_figures import plot_convergence

    s = convergence(
        tmp_path,
        seeds=2,
        spec=TINY,
        probe_images=24,
        minibatch=12,
        match_images=8,
        dissect_images=16,
        progress=False,
    )
    doc = json.loads((tmp_path / "convergence.json").read_text())
    assert doc["layer_identification_linear"] == s["layer_identification_linear"]
    assert np.asarray(doc["cka_linear_cross_seed"]).shape == (6, 6)
    assert len(s["findings"]) >= 3
    assert not list(tmp_path.glob("*.png"))  # the experiment draws nothing: views do
    write_experiment("convergence", s, tmp_path)
    assert (tmp_path / "convergence.png").stat().st_size > 1000
    loaded = ConvergenceResult.load(tmp_path)
    assert loaded == s and loaded.cka_linear is None  # the unrounded matrices are not saved
    plot_convergence(loaded)  # a loaded result draws from its document


def _fake(exp, calls, figure="figure"):
    """``exp`` with a run that records its call and returns a one-finding result (and the
    real run's signature: its defaults are still the settings)."""

    @functools.wraps(exp.run)
    def run(out=None, **kwargs):
        calls.append(exp.name)
        return exp.result_type({"findings": [f"{exp.name} measured {len(exp.name)}."]})

    return dataclasses.replace(exp, run=run, figures=(figure,))


@pytest.fixture
def fake_suite(monkeypatch):
    """Every registered experiment replaced by a fake; one figure, ``figure.png``, each."""
    from interp.experiments import registry
    from interp.views import experiment_figures

    calls: list[str] = []
    table = {k: _fake(e, calls) for k, e in registry.EXPERIMENTS.items()}
    monkeypatch.setattr(registry, "EXPERIMENTS", table)
    monkeypatch.setattr(suite, "EXPERIMENTS", table)
    monkeypatch.setitem(experiment_figures.FIGURES, "figure", lambda result: _tiny_figure())
    return calls


def _tiny_figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    return fig


def test_suite_summary_and_resume(tmp_path, fake_suite):
    calls = fake_suite
    summary = suite.experiment_all(tmp_path, progress=False)
    assert calls == list(suite.EXPERIMENTS)
    md = (tmp_path / "summary.md").read_text()
    questions = registry.questions()
    assert [q for q, _ in questions] == [
        registry.RANDOM_WEIGHTS,
        registry.OWN_NICHE,
        registry.DOMAIN_SPECIFICITY,
    ]
    assert [names for _, names in questions] == [
        ["symmetry", "multiclass-lab"],
        ["multiclass-lab", "redundancy", "convergence", "axis-alignment"],
        ["transfer"],
    ]
    for question, names in questions:
        assert question in md
        for n in names:
            assert f"{n} measured {len(n)}." in md and f"]({n}/figure.png)" in md
    assert json.loads((tmp_path / "summary.json").read_text())["questions"] == summary.questions
    assert suite.SuiteResult.load(tmp_path) == summary
    cited = {f"{n}/figure.png" for _, names in questions for n in names}
    assert sorted(summary.figures()) == sorted(cited)  # each figure once
    one = suite.load_experiment("transfer", tmp_path / "transfer")
    assert isinstance(one, TransferResult)
    assert one.findings == ["transfer measured 8."]
    with pytest.raises(suite.InterpError, match="holds no summary.json"):
        suite.SuiteResult.load(tmp_path / "transfer")
    suite.experiment_all(tmp_path, progress=False)  # finished experiments are reused
    assert len(calls) == len(suite.EXPERIMENTS)
    suite.experiment_all(tmp_path, force=True, progress=False)
    assert len(calls) == 2 * len(suite.EXPERIMENTS)


def test_suite_recomputes_an_experiment_whose_defaults_changed(tmp_path, fake_suite):
    """A finished experiment was reused whenever its JSON existed, so results outlived a
    change of defaults; now its record must carry the key of its current settings."""
    from interp.experiments import symmetry

    calls = fake_suite
    suite.experiment_all(tmp_path, progress=False)
    first = len(calls)
    suite.experiment_all(tmp_path, progress=False)  # same settings: all reused
    assert len(calls) == first
    fn = symmetry.symmetry
    defaults = dict(fn.__kwdefaults__)
    monkeypatch = pytest.MonkeyPatch()
    try:
        monkeypatch.setattr(
            fn, "__kwdefaults__", {**defaults, "cnn_epochs": defaults["cnn_epochs"] + 1}
        )
        suite.experiment_all(tmp_path, progress=False)  # symmetry's default changed: it reruns
    finally:
        monkeypatch.undo()
    assert calls[first:] == ["symmetry"]
    suite.experiment_all(tmp_path, progress=False)  # back to the old default: rerun again
    assert calls[first:] == ["symmetry", "symmetry"]
    for marker in (tmp_path / "transfer" / "stages").glob("experiment-*.json"):
        marker.unlink()  # a folder without its stage record: not reused
    suite.experiment_all(tmp_path, progress=False)
    assert calls[first + 2 :] == ["transfer"]
    suite.experiment_all(tmp_path, force=True, progress=False)  # force: every one again
    assert len(calls) == first + 3 + len(suite.EXPERIMENTS)
    done = len(calls)
    suite.experiment_all(tmp_path, preset="light", progress=False)  # other settings: transfer's
    assert calls[done:] == ["transfer"]


def test_run_experiment_passes_seeds_and_runs_as_the_registry_says(tmp_path, monkeypatch):
    seen = {}

    def fake(exp):
        @functools.wraps(exp.run)  # the real signature: whether it takes runs
        def run(out=None, **kwargs):
            seen[exp.name] = kwargs
            return exp.result_type({"findings": []})

        return dataclasses.replace(exp, run=run, figures=())

    table = {k: fake(e) for k, e in registry.EXPERIMENTS.items()}
    monkeypatch.setattr(registry, "EXPERIMENTS", table)
    for name in table:
        suite.run_experiment(name, tmp_path / name, seeds=7, progress=False)
    assert seen["multiclass-lab"] == {"progress": False, "seeds": 7}
    assert seen["axis-alignment"]["rotations"] == 7
    assert seen["convergence"]["runs"] == tmp_path / "convergence" / "runs"
    assert seen["symmetry"] == {"progress": False}  # --seeds does not apply
    with pytest.raises(suite.InterpError, match="unknown experiment"):
        suite.run_experiment("nope", tmp_path)
    # presets: their settings over the defaults; an experiment without one runs its defaults
    suite.run_experiment("transfer", tmp_path / "t", preset="light", progress=False)
    assert seen["transfer"]["seeds"] == 1 and seen["transfer"]["anb"] is False
    suite.run_experiment("transfer", tmp_path / "t", preset="quick", seeds=2, progress=False)
    assert seen["transfer"]["steps"] == 8 and seen["transfer"]["seeds"] == 2  # --seeds wins
    suite.run_experiment("symmetry", tmp_path / "s", preset="quick", progress=False)
    assert seen["symmetry"] == {"progress": False}
    with pytest.raises(suite.InterpError, match="unknown preset"):
        suite.run_experiment("symmetry", tmp_path, preset="huge")
