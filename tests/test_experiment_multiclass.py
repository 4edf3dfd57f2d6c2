"""multiclass-lab: unit/bipartition/category logic on hand-built units, and a small run."""

from __future__ import annotations

import json

import pytest
import torch

from interp.data.toy import corner_blobs
from interp.errors import InterpError
from interp.experiments.multiclass import (
    AXIS_X,
    AXIS_Y,
    CATEGORIES,
    ROLES,
    MulticlassResult,
    active_classes,
    bipartition_of,
    bipartition_to_json,
    categorize,
    multiclass_lab,
    unit_roles,
    units_of,
)


@pytest.fixture(scope="module")
def x_train() -> torch.Tensor:
    return corner_blobs(200, torch.Generator().manual_seed(0))[0]


def _units(weights, biases, x):
    return units_of(torch.tensor(weights, dtype=torch.float32), torch.tensor(biases), x)


def test_layout_and_bipartitions():
    # class 0 (-1,-1), 1 (-1,+1), 2 (+1,-1), 3 (+1,+1)
    assert active_classes((1.0, 0.0), 0.0) == frozenset({2, 3})
    assert active_classes((0.0, 1.0), 0.0) == frozenset({1, 3})
    assert active_classes((1.0, 1.0), -1.0) == frozenset({3})
    # canonical form: the side holding class 0 first, whichever side is active
    assert bipartition_of({2, 3}) == bipartition_of({0, 1}) == AXIS_X
    assert bipartition_of({1, 3}) == AXIS_Y
    assert bipartition_of({3}) == (frozenset({0, 1, 2}), frozenset({3}))
    assert bipartition_of({0, 1, 2, 3}) == (frozenset({0, 1, 2, 3}), frozenset())
    assert bipartition_to_json(AXIS_Y) == [[0, 2], [1, 3]]
    assert AXIS_X != AXIS_Y


def test_axis_split(x_train):
    units = _units([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], x_train)
    assert [u.bipartition for u in units] == [AXIS_X, AXIS_Y]
    assert [u.active for u in units] == [frozenset({2, 3}), frozenset({1, 3})]
    assert not any(u.dead for u in units)
    assert categorize(units) == "axis split"
    assert unit_roles(units) == ["axis", "axis"]


@pytest.mark.parametrize("second", [[1.0, 0.0], [-1.0, 0.0], [2.0, 0.1]])
def test_duplicate(x_train, second):
    # identical, mirrored (other side active) or slightly tilted: the same bipartition
    units = _units([[1.0, 0.0], second], [0.0, 0.0], x_train)
    assert units[0].bipartition == units[1].bipartition == AXIS_X
    assert categorize(units) == "duplicate"
    assert unit_roles(units) == ["axis", "axis duplicate"]


def test_dead_unit_takes_precedence(x_train):
    units = _units([[1.0, 0.0], [0.0, 1.0]], [0.0, -100.0], x_train)
    assert [u.dead for u in units] == [False, True]
    assert units[1].active == frozenset()
    assert categorize(units) == "dead unit"
    assert unit_roles(units) == ["axis", "dead"]
    # dead first: units that would make an axis split, dead on data all at (-1, -1)
    corner = torch.tensor([[-1.0, -1.0], [-1.2, -0.9]])
    both = _units([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], corner)
    assert [u.bipartition for u in both] == [AXIS_X, AXIS_Y]
    assert all(u.dead for u in both)
    assert categorize(both) == "dead unit"
    # a unit active on no class centre but on some training points is not dead
    near = _units([[1.0, 0.0]], [-1.5], x_train)[0]
    assert near.active == frozenset() and not near.dead


def test_other_and_no_split(x_train):
    units = _units([[1.0, 0.0], [1.0, 1.0]], [0.0, -1.0], x_train)  # axis + one-vs-three
    assert units[1].bipartition == (frozenset({0, 1, 2}), frozenset({3}))
    assert categorize(units) == "other"
    assert unit_roles(units) == ["axis", "diagonal"]
    flat = _units([[0.0, 0.0], [0.0, 1.0]], [1.0, 0.0], x_train)  # constant unit: all active
    assert flat[0].trivial and not flat[0].dead
    assert categorize(flat) == "other"
    assert unit_roles(flat) == ["no split", "axis"]


def test_units_of_rejects_bad_shapes(x_train):
    with pytest.raises(InterpError):
        units_of(torch.zeros(2, 3), torch.zeros(2), x_train)


def test_small_run_writes_outputs(tmp_path):
    from interp.pipeline.suite import write_experiment
    from interp.views.experiment_figures import plot_boundaries

    out = tmp_path / "mc"
    doc = multiclass_lab(out, seeds=6, hidden=(2, 3), steps=300, progress=False)
    assert json.loads((out / "multiclass.json").read_text()) == doc.to_dict()
    write_experiment("multiclass-lab", doc, out)
    for name in ("multiclass.json", "multiclass_boundaries.png", "multiclass_outcomes.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "multiclass_boundaries.png").read_bytes()[:4] == b"\x89PNG"
    loaded = MulticlassResult.load(out)
    assert loaded == doc and not loaded.params  # the trained tensors are not saved
    assert torch.equal(loaded.x_train, doc.x_train)  # the points are drawn again
    plot_boundaries(loaded)  # from the records' (rounded) parameters

    two = doc["results"]["2"]
    cats = two["summary"]["categories"]
    assert list(cats) == list(CATEGORIES)
    assert sum(c["count"] for c in cats.values()) == 6
    assert sorted(s for c in cats.values() for s in c["seeds"]) == list(range(6))
    assert [r["seed"] for r in two["records"]] == list(range(6))
    for rec in two["records"]:
        assert rec["category"] in CATEGORIES
        assert len(rec["units"]) == 2
        assert 0.0 <= rec["test_acc"] <= 1.0
        for unit in rec["units"]:
            bp = unit["bipartition"]
            assert 0 in bp[0] and sorted(bp[0] + bp[1]) == [0, 1, 2, 3]
    for rec in doc["results"]["3"]["records"]:
        assert "category" not in rec
        assert sum(rec["roles"].values()) == 3
        assert set(rec["roles"]) == set(ROLES)
    # the findings quote the run's own numbers
    axis = cats["axis split"]["count"]
    assert doc["findings"][0].startswith(f"With 2 hidden units, {axis} of 6 seeds")
    assert any(f.startswith("With 3 hidden units") for f in doc["findings"])


def test_deterministic_and_leaves_rng_alone():
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    threads = torch.get_num_threads()
    a = multiclass_lab(seeds=4, hidden=(2,), steps=200, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    b = multiclass_lab(seeds=4, hidden=(2,), steps=200, progress=False)
    assert a == b
    # a network seed trains to the same network whatever the number of seeds
    c = multiclass_lab(seeds=2, hidden=(2,), steps=200, progress=False)
    assert c["results"]["2"]["records"] == a["results"]["2"]["records"][:2]
    # a different data seed gives different data, hence different networks
    d = multiclass_lab(seeds=4, hidden=(2,), steps=200, seed=1, progress=False)
    assert d["results"]["2"]["records"] != a["results"]["2"]["records"]


def test_training_learns():
    doc = multiclass_lab(seeds=4, hidden=(8,), steps=300, progress=False)
    assert doc["results"]["8"]["summary"]["mean_test_acc"] > 0.9


@pytest.mark.parametrize("kwargs", [{"seeds": 0}, {"hidden": ()}, {"hidden": (0,)}, {"lr": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(InterpError):
        multiclass_lab(progress=False, **kwargs)
