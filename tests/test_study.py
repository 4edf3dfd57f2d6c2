"""``interp study``: the panel's verdicts on planted networks with known answers, the
emergence numbers on constructed curves and checkpoints, and the quick study end to end
with its cache (a rerun reuses every finished network; an interrupted one resumes)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from interp.data.concepts import PartsWorldConcepts
from interp.pipeline import study as study_mod
from interp.pipeline.study import (
    QUICK,
    Member,
    Study,
    checkpoint_steps,
    half_steps,
    mass_half_step,
    settle_steps,
    study,
)

sys.path.insert(0, str(Path(__file__).parent))


def test_checkpoint_steps_are_the_initialization_then_log_spaced():
    assert checkpoint_steps(282, 7) == [0, 3, 7, 17, 43, 110, 282]
    assert checkpoint_steps(6, 7) == [0, 1, 2, 3, 4, 6]  # fewer when the run is short
    assert checkpoint_steps(100, 2) == [0, 100]


def test_emergence_numbers_on_constructed_curves():
    steps = [0, 10, 100, 1000]
    # layer 0 reaches half its final excess at step 10, layer 1 at 1000; layer 2 never grew
    excess = np.array([[0.0, 0.0, 0.0], [0.3, 0.05, 0.01], [0.4, 0.1, 0.0], [0.5, 0.4, 0.01]])
    assert half_steps(steps, excess) == [10, 1000, None]
    # summed over layers: final 0.91, half 0.455 first reached at step 100 (0.5)
    assert mass_half_step(steps, excess) == 100
    assert mass_half_step(steps, np.zeros((4, 3))) is None
    # measured from the initialization (a random network: its excess is noise): a layer at
    # 0.3 there and 0.16 at the end did not rise; one from 0.1 to 0.5 is half way (0.3) by 0.35
    noisy = np.array([[0.3, 0.1], [0.1, 0.2], [0.2, 0.35], [0.16, 0.5]])
    assert half_steps(steps, noisy) == [None, 100]
    assert mass_half_step(steps, noisy[:, :1]) is None  # 0.3 -> 0.16
    assert mass_half_step(steps, noisy[:, 1:]) == 100
    cka = np.array([[0.2, 0.1], [0.95, 0.3], [0.85, 0.92], [1.0, 1.0]])
    # layer 0 dips under 0.9 at step 100: settled only from 1000; layer 1 from 100
    assert settle_steps(steps, cka) == [1000, 100]
    assert settle_steps(steps, np.array([[0.95], [0.96], [0.97], [1.0]])) == [0]


@pytest.fixture(scope="module")
def planted_results():
    """Two planted hierarchies built as tests/test_hierarchy.py builds its verdict: the edge
    instruments measured for real on a network of saturating Gabors (early) and colour-blob
    decoys (deep), against random-init controls; part detectors planted deep (``holds``) or
    early (``does not hold``)."""
    from planted import GaborsThenDecoys, preprocessing

    from interp import Model
    from interp.probes.hierarchy import (
        EDGE_INSTRUMENTS,
        Hierarchy,
        Verdict,
        control_thresholds,
        edge_statuses,
        probe_network,
        random_control,
    )
    from interp.probes.verdict import centroid_verdict

    torch.manual_seed(0)
    net = Model(GaborsThenDecoys().eval(), "planted", preprocessing(48))
    layers = ["early.1", "middle.1", "deep"]
    data = PartsWorldConcepts(n=32, size=48)
    ref = torch.stack([data.item(i, masks=False).image for i in range(32)])

    def probes(n, seed, role):
        return probe_network(
            n,
            data,
            layers,
            role=role,
            seed=seed,
            notes=[],
            dissect_kwargs=None,
            reference=ref,
            progress=False,
        )

    model = probes(net, None, "model")
    controls = [
        probes(random_control(net, s, data, bn_images=16)[0], s, "control-edges") for s in range(4)
    ]
    thresholds = control_thresholds(controls, layers, 0.95)
    ms = edge_statuses(model, thresholds)
    cs = [edge_statuses(c, thresholds) for c in controls]
    edges = {k: (ms[k], [c[k] for c in cs]) for k in ("gratings", "erf")}
    units = {n: len(model.gratings[n]["osi"]) for n in layers}
    rng = np.random.default_rng(0)
    no_parts = [{n: np.zeros(units[n], bool) for n in layers}] * 2

    def result(part_rates):
        parts = {n: rng.random(units[n]) < part_rates[n] for n in layers}
        v = centroid_verdict(edges, (parts, no_parts), layers, bootstrap=300)
        return Hierarchy(
            model_name="planted",
            data_name=data.name,
            layers=layers,
            categories=["colour", "edge", "part", "object"],
            model=model,
            controls=[],
            edge_controls=controls,
            thresholds=thresholds,
            verdict=Verdict.from_dict(v),
            settings={},
            instruments=EDGE_INSTRUMENTS.resolve(["gratings", "erf"]),
        )

    return {
        "holds": result({"early.1": 0.0, "middle.1": 0.1, "deep": 0.5}),
        "fails": result({"early.1": 0.6, "middle.1": 0.0, "deep": 0.0}),  # parts no later
    }


def test_a_panel_of_planted_networks_reports_each_verdict(tmp_path, planted_results):
    members = [
        Member("planted-holds", "planted", measure=lambda: planted_results["holds"], accuracy=0.9),
        Member("planted-fails", "planted", measure=lambda: planted_results["fails"], accuracy=0.8),
    ]
    result = study(tmp_path, settings=QUICK, members=members, progress=False)
    rows = {r["name"]: r for r in result.rows}
    assert rows["planted-holds"]["verdict"] == "holds"
    assert rows["planted-fails"]["verdict"] == "does not hold"
    holds = rows["planted-holds"]
    assert holds["instruments"]["gratings"]["verdict"] == "holds"
    assert holds["instruments"]["erf"]["verdict"] == "holds"
    # the edge centroids (early) come before the part centroid (deep), intervals around them
    g, p = holds["centroids"]["edge_gratings"], holds["centroids"]["part"]
    assert g["centroid"] < p["centroid"]
    assert g["interval_90"][0] <= g["centroid"] <= g["interval_90"][1]
    first = "'Early edges, later parts' holds in 1 of 2 networks (planted-holds)."
    assert result.findings[0] == first
    why = "planted-fails: does not hold: 2 of 2 edge instruments put edges at or after parts"
    assert result.findings[1].startswith(why) and "centroid early.1" in result.findings[1]
    fam = result.doc["families"]["planted"]
    assert fam["verdicts"]["holds"] == 1 and fam["verdicts"]["does not hold"] == 1
    assert fam["accuracy"]["mean"] == pytest.approx(0.85)
    for name in ("index.html", "study.json", "study.md", "centroids.png"):
        assert (tmp_path / name).stat().st_size > 200
    assert "planted-fails" in (tmp_path / "study.md").read_text()
    assert Study.load(tmp_path).to_dict() == result.to_dict()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path / "user-cache"))


def test_quick_study_end_to_end_reuses_and_resumes(tmp_path, isolated_cache, monkeypatch):
    out = tmp_path / "study"
    # interrupted while measuring the second network: the first one is kept whole
    real = study_mod._measure_member
    calls = []

    def interrupted(member, *args, **kwargs):
        calls.append(member.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(member, *args, **kwargs)

    monkeypatch.setattr(study_mod, "_measure_member", interrupted)
    with pytest.raises(KeyboardInterrupt):
        study(out, quick=True, progress=False)
    first = out / "networks" / "simplecnn-s0" / "member.json"
    assert first.is_file() and not (out / "study.json").exists()
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(study_mod, "_measure_member", real)
    result = study(out, quick=True, progress=False)
    assert first.stat().st_mtime_ns == stamp  # the finished network was reused, not redone
    assert [r["name"] for r in result.rows] == ["simplecnn-s0", "simplecnn-s1"]
    for r in result.rows:
        assert r["verdict"] in {"holds", "does not hold", "inconclusive"}
        assert r["accuracy_of"] == "PartsWorld test accuracy" and 0 <= r["accuracy"] <= 1
    e = result.doc["emergence"]["simplecnn-s0"]
    assert e["steps"][0] == 0 and len(e["steps"]) == QUICK.checkpoints
    assert e["cka_to_final"][-1] == [1.0] * len(e["layers"])  # the last step is the final
    assert set(e["excess"]) >= {"edge_gratings", "part"}
    assert all(len(v) == len(e["steps"]) for v in e["excess"].values())
    assert (out / "emergence_simplecnn.png").stat().st_size > 1000
    assert (out / "networks" / "simplecnn-s1" / "run" / "snapshots" / "step_0000000.pt").is_file()
    # a complete rerun reuses every network
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("networks/*/member.json")}
    again = study(out, quick=True, progress=False)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again.rows == result.rows
    # a changed setting recomputes only what it touches: no training, no probe again
    probes = {p: p.stat().st_mtime_ns for p in out.glob("networks/*/**/stages/*.npz")}
    assert probes
    from dataclasses import replace

    other = study(out, settings=replace(QUICK, checkpoint_bootstrap=20), progress=False)
    assert {p: p.stat().st_mtime_ns for p in probes} == probes
    assert other.doc["settings"]["checkpoint_bootstrap"] == 20
    ckpt = out / "networks" / "simplecnn-s0" / "run" / "checkpoint.pt"
    assert ckpt.stat().st_mtime_ns < first.stat().st_mtime_ns
    doc = json.loads((out / "study.json").read_text())
    assert doc["rows"][0]["layers"] == result.rows[0]["layers"]


def test_study_cli_quick(tmp_path, isolated_cache):
    from interp.cli import main

    out = tmp_path / "s"
    assert main(["study", "--quick", "--no-emergence", "--quiet", "--out", str(out)]) == 0
    doc = json.loads((out / "study.json").read_text())
    assert len(doc["rows"]) == 2 and doc["emergence"] == {}


def test_emergence_on_constructed_checkpoints_finds_the_planted_order(tmp_path, isolated_cache):
    """Checkpoints constructed by interpolating each layer's weights from a random init to a
    planted network (saturating Gabors early, a mixing middle layer, colour-blob decoys
    deep): the early layer arrives by step 10, the middle one by 100, the deep one by 1000.
    The real edge instruments see the early edges by step 10, and the layers settle (CKA to
    the final state >= 0.9) in the planted order, early first, deep last."""
    from dataclasses import replace

    from planted import GaborsThenDecoys, preprocessing

    from interp import Model, hierarchy
    from interp.pipeline.study import emergence
    from interp.probes.hierarchy import random_control

    torch.manual_seed(0)
    final = Model(GaborsThenDecoys().eval(), "planted", preprocessing(48))
    data = PartsWorldConcepts(n=48, size=48)
    layers = ["early.1", "middle.1", "deep"]
    settings = replace(QUICK, cka_images=48, checkpoint_bootstrap=50)
    h = hierarchy(
        final, data, layers, settings=settings.hierarchy, progress=False, user_cache=False
    )
    end = final.module.state_dict()
    # the random init scaled to the planted weights' norm, tensor by tensor: otherwise a few
    # percent of the planted (high-gain) weights would already dominate the mixture
    start = {
        k: v * (end[k].norm() / v.norm().clamp_min(1e-12)) if v.is_floating_point() else v
        for k, v in random_control(final, 7)[0].module.state_dict().items()
    }
    arrive = {"early": 10, "middle": 100, "deep": 1000}  # the step each block is final

    def at(step):
        module = GaborsThenDecoys().eval()
        mixed = {}
        for k, v in end.items():
            a = min(1.0, step / arrive[k.split(".")[0]])
            mixed[k] = (1 - a) * start[k] + a * v if v.is_floating_point() else v
        module.load_state_dict(mixed)
        return Model(module, "planted", preprocessing(48))

    steps = [0, 3, 10, 30, 100, 300, 1000]
    e = emergence([(s, at(s)) for s in steps[:-1]] + [(1000, final)], h, data, settings)
    cka = np.asarray(e["cka_to_final"])
    assert np.allclose(cka[-1], 1.0)
    settle = settle_steps(steps, cka)
    # the early layer settles when it arrives; the deep one (it reads the input itself) only
    # once most of its own weights have; the middle one already when its input has (measured:
    # CKA 0.99 with 90% of its own weights still random: CKA compares representations, which
    # a layer inherits from below, not weights)
    assert settle[0] == 10 and settle[1] == 10 and 100 < settle[2] <= 1000
    assert settle == sorted(settle)
    grat = np.array([[np.nan if v is None else v for v in r] for r in e["excess"]["edge_gratings"]])
    assert grat[-1, 0] > 0.3  # the Gabors are edge units beyond the control
    assert half_steps(steps, grat)[0] <= 10  # ... by the step the early layer arrives
    assert grat[0, 0] < 0.5 * grat[-1, 0]  # and not at the random init
