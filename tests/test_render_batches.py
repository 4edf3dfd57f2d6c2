"""Renders and attributions of many units in one batch (issue 35): each image depends only on
its own objective and seed, never on its batch neighbours; the packer fills batches without
splitting a job; batched integrated gradients equal the one-at-a-time ones; the explorer's
extras are the images the one-at-a-time path draws."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import all_hooks, tiny_cnn

from interp import Model, Preprocessing
from interp.attribution import attribute, attribute_units
from interp.featvis import objectives as obj
from interp.featvis.batches import RenderJob, RenderStats, pack, render_jobs
from interp.featvis.render import render, unit_seed

STEPS = 24


@pytest.fixture(scope="module")
def small() -> Model:
    torch.manual_seed(0)
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.25,) * 3, input_size=(32, 32))
    return Model(tiny_cnn(4).eval(), "tiny", pre)


def _jobs() -> list[RenderJob]:
    """Two layers, single units, starts of one unit, diversity sets (which couple their own
    images), in an order that mixes the layers inside a batch."""
    jobs = []
    for layer, c in (("2", 1), ("4", 5), ("2", 6), ("4", 0)):
        jobs.append(
            RenderJob(
                obj.channel(layer, [c] * 2),
                [unit_seed(1, layer, c, i) for i in (0, 1)],
                (layer, c, "s"),
            )
        )
        div = obj.channel(layer, [c] * 3) + 0.3 * obj.diversity(layer)
        jobs.append(RenderJob(div, [unit_seed(2, layer, c, i) for i in range(3)], (layer, c, "d")))
    return jobs


def test_stacked_parts_read_only_their_own_rows():
    torch.manual_seed(1)
    acts = {"a": torch.randn(7, 4, 5, 5), "b": torch.randn(7, 3, 2, 2)}
    image = torch.rand(7, 3, 8, 8)

    def getter(rows: slice):
        def T(name: str) -> torch.Tensor:
            return image[rows] if name == obj.INPUT else acts[name][rows]

        return T

    parts = [
        obj.channel("a", [1, 2]),
        obj.channel("b", [0] * 3) + 0.5 * obj.diversity("b"),
        obj.channel("a", 3) - 0.1 * obj.total_variation(),
    ]
    sizes = [2, 3, 2]
    stacked = obj.stack([(p, n) for p, n in zip(parts, sizes, strict=True)])
    assert stacked.batch == 7 and len(stacked.units) == 7
    assert set(stacked.layers) == {"a", "b", obj.INPUT}
    values = stacked(getter(slice(None)))
    alone = torch.cat(
        [
            parts[0](getter(slice(0, 2))),
            parts[1](getter(slice(2, 5))),
            parts[2](getter(slice(5, 7))),
        ]
    )
    torch.testing.assert_close(values, alone)
    # a neighbour's activations change nothing in a part's values (the diversity set too)
    acts["b"][0:2] += 10.0
    acts["a"][2:5] *= -3.0
    torch.testing.assert_close(stacked(getter(slice(None)))[2:5], alone[2:5])
    with pytest.raises(ValueError, match="defines 2 images, not 3"):
        obj.stack([(obj.channel("a", [1, 2]), 3)])


def test_a_unit_renders_the_same_alone_and_inside_a_mixed_batch(small):
    jobs = _jobs()
    stats = RenderStats()
    hooks = all_hooks(small.module)
    batched = list(render_jobs(small, jobs, batch_size=16, size=32, steps=STEPS, stats=stats))
    assert all_hooks(small.module) == hooks and not small.module.training
    assert sorted(j.tag for j, _ in batched) == sorted(j.tag for j in jobs)  # each job once
    assert stats.images == 20 and stats.calls == 2 and stats.sizes == [10, 10]
    for job, result in batched:
        alone = render(
            small,
            job.objective,
            batch=job.size,
            seeds=job.seeds,
            size=32,
            steps=STEPS,
            progress=False,
        )
        torch.testing.assert_close(result.images, alone.images, atol=1e-5, rtol=0)
        torch.testing.assert_close(result.values, alone.values, atol=1e-4, rtol=1e-4)
        assert result.info["shifts"] == alone.info["shifts"]
        assert result.units == alone.units


def test_pack_fills_batches_without_splitting_a_job_and_splits_where_the_choice_changes(small):
    jobs = _jobs()
    packed = pack(small, jobs, 12, canvas=32)
    seen = sorted(i for idx, _ in packed for i in idx)
    assert seen == list(range(len(jobs)))  # every job once
    assert all(idx == sorted(idx) for idx, _ in packed)  # in order within a batch
    # layer "2" (5 px field: pixel at 32 px) and "4" (13 px: fft) alternate in the jobs;
    # each batch holds one choice, filled to 12 images without cutting a job
    assert [sum(jobs[i].size for i in idx) for idx, _ in packed] == [10, 10]
    assert [c[0] for _, c in packed] == ["pixel", "fft"]
    big = [RenderJob(obj.channel("2", [1] * 9), list(range(9)))]
    assert [idx for idx, _ in pack(small, big, 4, canvas=32)] == [[0]]  # a job is never cut
    # an explicit parametrization for every job: one choice; "auto" splits where the
    # receptive field crosses a quarter of the canvas (layer "2": 5 px, layer "4": 13 px)
    assert {c for _, c in pack(small, jobs, 100, canvas=32, param="pixel", precision="fp32")} == {
        ("pixel", "fp32")
    }
    six = pack(small, jobs, 6, canvas=32)
    assert [sum(jobs[i].size for i in idx) for idx, _ in six] == [5, 5, 5, 5]


def test_batched_integrated_gradients_equal_one_at_a_time(small):
    torch.manual_seed(3)
    images = torch.rand(5, 3, 32, 32)
    targets = [
        ("2", 1, (4, 4)),
        ("4", 5, (3, 2)),
        ("2", 6, None),
        ("4", 0, (7, 7)),
        ("0", 2, (10, 20)),
    ]
    hooks = all_hooks(small.module)
    flags = [p.requires_grad for p in small.module.parameters()]
    maps = attribute_units(small, images, targets, n_steps=8, internal_batch_size=4)
    assert all_hooks(small.module) == hooks
    assert [p.requires_grad for p in small.module.parameters()] == flags
    for i, (layer, c, pos) in enumerate(targets):
        one = attribute(small, images[i], "ig", target=f"{layer}:{c}", n_steps=8, position=pos)
        assert maps[i].shape == one.map.shape == (32, 32)
        np.testing.assert_allclose(maps[i], one.map, atol=1e-5 * max(1.0, np.abs(one.map).max()))
        assert np.abs(one.map).max() > 0
    with pytest.raises(Exception, match="out of range"):
        attribute_units(small, images[:1], [("2", 99, None)])


def test_explorer_extras_are_the_one_at_a_time_images(quick_report, tmp_path, monkeypatch):
    """The explorer's extra starts and diversity sets, rendered in full batches across
    units, are the images the one-at-a-time path draws for each unit from the same seeds."""
    import interp.pipeline.explorer as explorer
    from interp.pipeline.report import report

    model, out, _ = quick_report
    run = tmp_path / "run"
    shutil.copytree(out, run)
    for marker in (run / "stages").glob("units-*.json"):
        marker.unlink()
    shutil.rmtree(run / "units")
    seen = []

    def recording(*args, **kwargs):
        for job, result in render_jobs(*args, **kwargs):
            seen.append((job, result, kwargs))
            yield job, result

    monkeypatch.setattr(explorer, "render_jobs", recording)
    report(model, run, quick=True, progress=False)
    stage = json.loads(next((run / "stages").glob("units-*.json")).read_text())["result"]
    records = list((run / "units").glob("*/*/unit.json"))
    assert stage["done"] == len(records) >= 4
    # every unit's starts and diversity set, packed across units: more than one unit a call
    assert len(seen) == 2 * len(records)
    assert stage["render"]["images"] == sum(j.size for j, _, _ in seen)
    assert stage["render"]["mean_batch"] >= 2 * sum(j.size for j, _, _ in seen) / len(seen)
    for job, result, kwargs in seen:
        layer, c = job.objective.units[0]["layer"], job.objective.units[0]["channel"]
        kind = "start" if job.tag[1] == "start" else "diverse"
        base = 1000 if kind == "start" else 2000
        assert job.seeds == [unit_seed(base + i, layer, c) for i in range(job.size)]
        alone = render(
            model,
            job.objective,
            batch=job.size,
            seeds=job.seeds,
            steps=kwargs["steps"],
            size=kwargs["size"],
            progress=False,
        )
        torch.testing.assert_close(result.images, alone.images, atol=1e-5, rtol=0)
