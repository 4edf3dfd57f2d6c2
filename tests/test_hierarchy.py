"""Hierarchy check: first-conv filter analysis on planted filters, the random-init control,
the verdict rule on hand-made profiles, and an end-to-end run with resume."""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from conftest import all_hooks
from torch import nn

import interp
from interp.data.concepts import PartsWorldConcepts
from interp.pipeline.hierarchy import hierarchy
from interp.probes.dissect import dissect
from interp.probes.filters import analyse_filters, colour_fraction, fit_gabor, gabor
from interp.probes.hierarchy import (
    Hierarchy,
    NetworkProbes,
    default_hierarchy_layers,
    random_control,
)
from interp.views import hierarchy_figures


def test_gabor_fit_recovers_planted_gabors_not_noise():
    rng = np.random.default_rng(0)
    for theta in (0.0, 0.8, 2.0):
        patch = gabor(np.array([1.0, 0.5, -0.3, 1.4, 2.0, theta, 0.22, 0.7, 0.0]), 7)
        params, r2 = fit_gabor(patch + rng.normal(0, 0.02, patch.shape))
        assert r2 > 0.95
        # same orientation modulo pi (the carrier's direction)
        assert abs(math.sin(params[5] - theta)) < 0.15
    noise = [fit_gabor(rng.normal(size=(7, 7)))[1] for _ in range(8)]
    assert np.median(noise) < 0.6


def test_gabor_jacobian_equals_central_differences():
    from interp.probes.filters import _gabor_and_jacobian, _grid

    ys, xs = _grid(7)
    q = np.array([1.3, 0.4, -0.7, 1.5, 2.2, 0.6, 0.2, 0.3, 0.1])
    g, jac = _gabor_and_jacobian(q, ys, xs)
    assert np.allclose(g, gabor(q, 7))
    steps = np.eye(9) * 1e-6
    numeric = np.stack([(gabor(q + h, 7) - gabor(q - h, 7)) / 2e-6 for h in steps], axis=-1)
    assert np.abs(numeric - jac).max() < 1e-7


def test_colour_fraction_known_answers():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(5, 5))
    grey = np.stack([base] * 3)
    opponent = np.stack([base, -base, 0 * base])
    w = np.stack([grey, opponent, rng.normal(size=(3, 5, 5))])
    cf = colour_fraction(w)
    assert cf[0] < 1e-12 and abs(cf[1] - 1) < 1e-12 and 0.3 < cf[2] < 0.95


def test_analyse_filters_on_a_planted_first_layer():
    conv = nn.Conv2d(3, 3, 7, bias=False)
    rng = np.random.default_rng(2)
    with torch.no_grad():
        g = gabor(np.array([1.0, 0, 0, 1.5, 1.5, 0.3, 0.2, 0.0, 0.0]), 7)
        conv.weight[0] = torch.tensor(np.stack([g] * 3), dtype=torch.float32)  # grey Gabor
        conv.weight[1] = torch.tensor(np.stack([g, -g, 0 * g]), dtype=torch.float32)  # colour
        conv.weight[2] = torch.tensor(rng.normal(size=(3, 7, 7)), dtype=torch.float32)
    fa = analyse_filters(nn.Sequential(conv, nn.ReLU()))
    assert fa.gabor_r2[0] > 0.98 and fa.gabor_r2[1] > 0.98 and fa.gabor_r2[2] < 0.8
    assert fa.colour_fraction[0] < 0.01 and fa.colour_fraction[1] > 0.99
    small = analyse_filters(nn.Sequential(nn.Conv2d(3, 4, 3)))
    assert np.isnan(small.gabor_r2).all() and "not fitted" in small.note


def test_random_control_same_architecture_fresh_weights_bn_reestimated():
    model = interp.load_model("simplecnn", weights="none", seed=11, width=0.25)
    with torch.no_grad():
        for p in model.module.parameters():
            p.add_(1.0)  # "trained": differs from any fresh init
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    data = PartsWorldConcepts(n=24, size=64)
    c1, notes = random_control(model, 0, data, bn_images=24, batch_size=8)
    c2, _ = random_control(model, 0, data, bn_images=24, batch_size=8)
    c3, _ = random_control(model, 1)
    s1, s2, s3 = (c.module.state_dict() for c in (c1, c2, c3))
    assert s1.keys() == before.keys()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)  # fixed seed: same control
    w = "features.conv1.weight"
    assert not torch.equal(s1[w], s3[w]) and not torch.equal(s1[w], before[w])
    assert any("BatchNorm statistics re-estimated on 24" in n for n in notes)
    # the builder's options are recorded, so the control is the architecture's own init
    assert notes[0] == "simplecnn rebuilt with its own initialization, seed 0"
    assert not torch.allclose(s1["features.bn1.running_mean"], torch.zeros(8))
    assert torch.allclose(s3["features.bn1.running_mean"], torch.zeros(8))  # not re-estimated
    assert all(torch.equal(v, model.module.state_dict()[k]) for k, v in before.items())
    assert not c1.module.training


def test_an_initialization_is_probed_exactly_as_its_control():
    """A network whose BatchNorm never saw a batch (a training's step-0 checkpoint) is probed
    with its statistics re-estimated as a control's: the same seed's init then equals that
    control exactly, weights and statistics; the caller's model is untouched, and a trained
    network is probed as loaded."""
    from interp.probes.hierarchy import untouched_batchnorm, with_settled_batchnorm

    init = interp.load_model("simplecnn", weights="none", seed=0, width=0.25)
    before = {k: v.clone() for k, v in init.module.state_dict().items()}
    data = PartsWorldConcepts(n=24, size=64)
    assert untouched_batchnorm(init)
    twin, notes = with_settled_batchnorm(init, data, bn_images=24, batch_size=8)
    control, _ = random_control(init, 0, data, bn_images=24, batch_size=8)
    a, b = twin.module.state_dict(), control.module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert "re-estimated on 24 probe images" in notes[0] and not twin.module.training
    assert all(torch.equal(v, init.module.state_dict()[k]) for k, v in before.items())
    init.module.train()
    init.module(torch.rand(4, 3, 64, 64))  # one training batch: its own statistics now
    init.module.eval()
    assert not untouched_batchnorm(init)
    same, notes = with_settled_batchnorm(init, data, bn_images=24, batch_size=8)
    assert same is init and notes == ["the model as loaded"]
    plain = interp.load_model("torchvision:alexnet", weights="none", seed=0)  # no BatchNorm
    assert not untouched_batchnorm(plain)
    # converted weights: real statistics, no batch counted (the embedded Lites): as loaded
    lite = interp.load_model("efficientnet_lite0", device="cpu")
    bns = [m for m in lite.module.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(b.num_batches_tracked) == 0 for b in bns)
    assert not untouched_batchnorm(lite)
    assert with_settled_batchnorm(lite, data, bn_images=8, batch_size=8)[0] is lite


def test_default_layers_start_with_the_first_conv_activation(lite0):
    names = default_hierarchy_layers(lite0)
    assert names[0] == "_act_stem" and names[1] == "_blocks.0" and names[-1] == "_blocks.15"
    pw = interp.load_model("simplecnn", weights="none")
    assert default_hierarchy_layers(pw)[0] == "features.relu1"


def test_random_partsworld_cnn_has_almost_no_part_or_object_detectors():
    """Network Dissection found 2 detectors among 256 units of a random AlexNet's conv5."""
    model = interp.load_model("simplecnn", weights="none", seed=0)
    data = PartsWorldConcepts(n=160, size=64)
    res = dissect(model, data, ["features.relu4", "features.relu5"], progress=False)
    units = sum(d.units for d in res.values())
    high = sum(d.counts()["part"]["units"] + d.counts()["object"]["units"] for d in res.values())
    assert units == 160 and high <= 0.05 * units


def test_hierarchy_end_to_end_with_resume(tmp_path):
    model = interp.load_model("simplecnn", weights="none", seed=3, width=0.25, input_size=32)
    layers = ["features.relu1", "features.relu3", "features.relu5", "fc"]
    data = PartsWorldConcepts(n=48, size=32)
    before = all_hooks(model.module)
    kw = {
        "control_seeds": (0, 1),
        "bootstrap": 50,
        "batch_size": 16,
        "progress": False,
        "reference_images": 24,
        "min_control_units": 40,
    }
    result = hierarchy(model, data, layers, out=tmp_path, **kw)
    assert all_hooks(model.module) == before and not model.module.training
    doc = json.loads((tmp_path / "hierarchy.json").read_text())
    assert [r["layer"] for r in doc["layers"]] == layers[:3]
    assert "fc" in doc["skipped_layers"]
    v = doc["verdict"]
    assert v["verdict"] in ("holds", "does not hold", "inconclusive")
    assert set(v["instruments"]) == {"gratings", "erf", "dissection"}
    assert "drive ratio" in doc["rules"]["edge_unit_gratings"]
    assert any("BatchNorm statistics re-estimated" in n for n in doc["control"]["notes"])
    row = doc["layers"][0]  # relu1: 8 units, so 5 controls make 40 control units
    assert set(row["fractions"]) == {
        "edge_gratings",
        "edge_erf",
        "colour",
        "edge",
        "part",
        "object",
    }
    assert row["intervals_90"]["edge_gratings"]["control_units"] >= 40
    assert doc["control"]["edge_only_seeds"][0] == 2
    t = row["gratings"]["control_threshold"]
    assert t["control_units"] >= 40 and len(t["interval_90"]) == 2
    assert row["gratings"]["clipped_by_contrast"] is not None
    for name in ("profile.png", "osi.png", "tuning.png", "detectors.png", "first_conv.png"):
        assert (tmp_path / name).stat().st_size > 1000
    stages = sorted((tmp_path / "stages").glob("*.npz"))
    assert len(stages) == 3 + len(doc["control"]["edge_only_seeds"])
    stamps = [p.stat().st_mtime_ns for p in stages]
    again = hierarchy(model, data, layers, out=tmp_path, **kw)  # reuses every stage
    assert [p.stat().st_mtime_ns for p in stages] == stamps
    assert np.array_equal(again.model.osi["features.relu1"], result.model.osi["features.relu1"])
    loaded = NetworkProbes.load(tmp_path / "stages" / doc["settings"]["stages"]["model"])
    assert loaded.layers == layers[:3]
    assert not list(tmp_path.rglob("*.tmp"))
    # the result object: save/load round trip, the same document and verdict
    back = Hierarchy.load(tmp_path)

    def text(h: Hierarchy) -> str:  # NaN == NaN as text
        return json.dumps(h.to_dict(), sort_keys=True)

    assert text(back) == text(result)
    assert back.verdict == result.verdict and str(back.verdict) == v["text"]
    assert set(hierarchy_figures.figures(back)) == {"profile", "osi"}
    # the probe protocol: the check loops over the registered edge instruments
    from interp.probes import hierarchy as hmod

    args = (result.model, result.controls, result.edge_controls)
    names = {"model_name": "m", "data_name": "d", "bootstrap": 20}
    same = hmod.compare(*args, **names)
    assert same.verdict.instruments.keys() == result.verdict.instruments.keys()
    only = hmod.compare(*args, **names, instruments=[hmod.EDGE_INSTRUMENTS["gratings"]])
    assert set(only.verdict.instruments) == {"gratings"} and set(only.thresholds) == {"gratings"}
    assert set(only.profile()[0]["intervals_90"]) >= {"edge_gratings"}
    assert "edge_erf" not in only.profile()[0]["fractions"]


def _edge_only(net, layers, data, reference, seed, role="control-edges"):
    from interp.probes.hierarchy import probe_network

    return probe_network(
        net,
        data,
        layers,
        role=role,
        seed=seed,
        notes=[],
        dissect_kwargs=None,
        reference=reference,
        progress=False,
    )


def test_planted_gabors_then_decoys_hold_by_both_edge_instruments(one_thread):
    """(b) A network of saturating Gabors (early) and colour-blob decoys with a weak
    oriented leak (deep): edge units by gratings and by the ERF fit are early only, so with
    part detectors planted in the deep layer the verdict holds by both instruments."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from planted import GaborsThenDecoys, preprocessing

    from interp import Model
    from interp.probes.hierarchy import control_thresholds, edge_statuses
    from interp.probes.verdict import centroid_verdict

    torch.manual_seed(0)
    net = Model(GaborsThenDecoys().eval(), "planted", preprocessing(48))
    layers = ["early.1", "middle.1", "deep"]
    data = PartsWorldConcepts(n=32, size=48)
    ref = torch.stack([data.item(i, masks=False).image for i in range(32)])
    model = _edge_only(net, layers, data, ref, None, "model")
    controls = [
        _edge_only(random_control(net, s, data, bn_images=16)[0], layers, data, ref, s)
        for s in range(6)
    ]
    thresholds = control_thresholds(controls, layers, 0.95)
    ms = edge_statuses(model, thresholds)
    cs = [edge_statuses(c, thresholds) for c in controls]
    # every Gabor is an edge unit by the gratings; the derivative-of-Gaussian edges (OSI
    # 1/3, the broadest oriented filter) pass the absolute cut but need not beat the 95th
    # percentile of random 11x11 filters
    gabors = [i for i in range(len(net.module.angles)) if i % 4 != 3]
    assert ms["gratings"]["early.1"][gabors].all() and not ms["gratings"]["deep"].any()
    assert ms["erf"]["early.1"].mean() >= 0.9 and not ms["erf"]["deep"].any()
    units = {n: len(model.gratings[n]["osi"]) for n in layers}
    rng = np.random.default_rng(0)
    part_rates = {"early.1": 0.0, "middle.1": 0.1, "deep": 0.5}
    parts = {n: rng.random(units[n]) < part_rates[n] for n in layers}
    no_parts = [{n: np.zeros(units[n], bool) for n in layers}] * 2
    edges = {k: (ms[k], [c[k] for c in cs]) for k in ("gratings", "erf")}
    v = centroid_verdict(edges, (parts, no_parts), layers, bootstrap=300)
    assert v["verdict"] == "holds", v["text"]
    assert v["text"].startswith("holds: 2 of 2 edge instruments put edges before parts")


def test_random_init_network_has_few_edge_units_stable_across_control_seeds(one_thread):
    """(e) A random-init PartsWorld CNN measured as the model: at most 5% edge units in its
    first three layers by either edge instrument, and the fraction moves by at most 5 points
    between two disjoint sets of control seeds (each >= 500 control units per layer)."""
    from interp.probes.hierarchy import control_thresholds, edge_statuses

    base = interp.load_model("simplecnn", weights="none", seed=0, input_size=32)
    layers = ["features.relu1", "features.relu2", "features.relu3"]
    data = PartsWorldConcepts(n=64, size=32)
    ref = torch.stack([data.item(i, masks=False).image for i in range(64)])
    net, _ = random_control(base, 99, data, bn_images=64)
    model = _edge_only(net, layers, data, ref, 99, "model")
    per_seed = 500 // len(model.gratings["features.relu1"]["osi"]) + 1  # relu1: 32 units
    nets = [random_control(base, s, data, bn_images=64)[0] for s in range(2 * per_seed)]
    ctl = [_edge_only(c, layers, data, ref, s) for s, c in enumerate(nets)]
    fractions = []
    for group in (ctl[:per_seed], ctl[per_seed:]):
        st = edge_statuses(model, control_thresholds(group, layers, 0.95))
        fractions.append({k: [float(st[k][n].mean()) for n in layers] for k in ("gratings", "erf")})
    for k in ("gratings", "erf"):
        a, b = np.array(fractions[0][k]), np.array(fractions[1][k])
        assert (a <= 0.05).all() and (b <= 0.05).all(), (k, a, b)
        assert (np.abs(a - b) <= 0.05).all(), (k, a, b)


def test_old_names_warn_and_settings_are_the_fields_of_hierarchy_settings():
    import warnings

    import interp.probes
    import interp.probes.hierarchy as hmod

    for module in (hmod, interp.probes):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert module.HierarchyResult is Hierarchy
        assert caught and issubclass(caught[0].category, DeprecationWarning)
    try:
        hierarchy("simplecnn", bootstraps=3)  # a typo fails before anything loads
    except TypeError as err:
        assert "bootstraps" in str(err) and "HierarchySettings" in str(err)
    else:
        raise AssertionError("an unknown setting was accepted")


def test_a_network_saved_in_the_layout_before_generic_instruments_loads(tmp_path):
    """Stage files of an earlier run keep their keys: the old npz layout still loads."""
    path = tmp_path / "control-edges-seed2.npz"
    osi, r2 = np.array([0.1, 0.5]), np.array([0.9, 0.2])
    np.savez(path, **{"a/gratings/osi": osi, "a/erf/r2": r2})
    meta = {"role": "control-edges", "seed": 2, "layers": ["a"], "notes": [], "layer_info": {}}
    meta |= {"erf_layers": ["a"], "filters": None, "dissection": None}
    path.with_suffix(".meta.json").write_text(json.dumps(meta))
    back = NetworkProbes.load(path)
    assert back.instruments == ["gratings", "erf", "dissection"]
    assert np.array_equal(back.gratings["a"]["osi"], osi)
    assert np.array_equal(back.arrays("erf", "a")["r2"], r2)
    assert back.arrays("dissection", "a") is None
    back.save(tmp_path / "again.npz")  # and the new layout round-trips
    again = NetworkProbes.load(tmp_path / "again.npz")
    assert again.instruments == back.instruments
    assert np.array_equal(again.gratings["a"]["osi"], osi)
