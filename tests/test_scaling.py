"""Scaling out and running out: a batch that runs out of device memory is halved and retried
(atlas, examples, dissection) with the same results; sharded atlas records and examples
checkpoints resume an interrupted run without redoing finished work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import interp
import interp.featvis.batches as batches_mod
from interp import distributed as dist
from interp.activations import ActivationCapture
from interp.data.concepts import PartsWorldConcepts
from interp.data.partsworld import PartsWorld
from interp.dataset_examples import examples
from interp.device import HalveOnOOM, is_out_of_memory
from interp.errors import DeviceError
from interp.pipeline.atlas import atlas
from interp.pipeline.sharding import RankStream
from interp.probes.dissect import dissect

OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


class _Forwards:
    """Counts truncated forwards (``calls``: their batch sizes) and raises KeyboardInterrupt
    at the ``stop_at``-th one (-1: never), as a kill in the middle of a pass would."""

    def __init__(self, monkeypatch, stop_at=-1):
        self.calls, self.stop_at = [], stop_at
        real = ActivationCapture.run

        def run(cap, x, *a, **k):
            self.calls.append(len(x))
            if len(self.calls) == self.stop_at:
                raise KeyboardInterrupt
            return real(cap, x, *a, **k)

        monkeypatch.setattr(ActivationCapture, "run", run)


def _kept(folder, job):
    """The pipeline's stream, checkpointing after every batch."""
    return RankStream(folder, job, every=0)


def _small():
    return interp.load_model("simplecnn", weights="none", seed=0, width=0.25, input_size=32)


def test_halving_covers_every_item_once_and_says_so():
    said = []
    sizes = []

    def work(a, b):
        if b - a > 3:
            raise OOM("CUDA out of memory. Tried to allocate 2.00 GiB")
        sizes.append(b - a)
        return list(range(a, b))

    halver = HalveOnOOM(16, "test batch", said.append)
    got = [i for _, _, part in halver.chunks(21, work) for i in part]
    assert got == list(range(21)) and halver.size == 2 and halver.halvings == 3
    assert said[0] == "out of device memory at a test batch of 16: retrying with 8"
    assert max(sizes) == 2  # stays halved
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))

    with pytest.raises(ValueError):  # other errors pass through untouched
        list(HalveOnOOM(4, log=said.append).chunks(4, lambda a, b: int("x")))
    with pytest.raises(DeviceError, match="batch of 1"):
        list(HalveOnOOM(4, log=said.append).chunks(4, lambda a, b: (_ for _ in ()).throw(OOM())))


def test_examples_and_dissection_survive_oom_with_the_same_results(monkeypatch, capsys, one_thread):
    model = _small()
    layers = ["features.relu2", "features.relu4"]
    data = PartsWorld(24, 32, seed=5)
    kw = dict(k=3, bottom=True, batch_size=8, progress=False)
    ex = examples(model, data, layers, **kw)
    kw["receptive_fields"] = {n: ex[n].rf_size for n in layers}  # measured once
    concepts = PartsWorldConcepts(n=20, size=32)
    dis = dissect(model, concepts, layers, batch_size=8, progress=False)
    real = ActivationCapture.run
    monkeypatch.setattr(
        ActivationCapture,
        "run",
        lambda self, x, *a, **k: (
            (_ for _ in ()).throw(OOM("simulated")) if len(x) > 2 else real(self, x, *a, **k)
        ),
    )
    ex2 = examples(model, data, layers, **kw)
    dis2 = dissect(model, concepts, layers, batch_size=8, progress=False)
    assert "retrying with 4" in capsys.readouterr().err
    for name in layers:
        assert torch.equal(ex[name].top.items, ex2[name].top.items)
        assert torch.allclose(ex[name].top.result(), ex2[name].top.result(), atol=1e-5)
        assert torch.equal(ex[name].bottom.items, ex2[name].bottom.items)
        assert np.allclose(dis[name].thresholds, dis2[name].thresholds, atol=1e-5)
        assert np.allclose(dis[name].iou, dis2[name].iou, atol=1e-6)
    assert ex2[layers[0]].info["images"] == 24


def test_atlas_survives_oom(monkeypatch, tmp_path, capsys, one_thread):
    model = _small()
    real = batches_mod.render

    def render(*a, **k):
        if len(k["seeds"]) > 1:
            raise OOM("CUDA out of memory (simulated)")
        return real(*a, **k)

    monkeypatch.setattr(batches_mod, "render", render)
    kw = dict(layers="features.relu2", per_layer=3, batch=4, steps=2, size=24, reference=None)
    doc = atlas(model, tmp_path, progress=False, **kw)
    assert [u["channel"] for u in doc.layers[0]["units"]] == sorted(
        u["channel"] for u in doc.layers[0]["units"]
    )
    assert len(doc.layers[0]["units"]) == 3
    err = capsys.readouterr().err
    assert "out of device memory at a render batch (features.relu2) of 3: retrying with 1" in err


def test_a_sharded_atlas_resumes_with_another_number_of_ranks(monkeypatch, tmp_path, one_thread):
    model = _small()
    kw = dict(
        layers="features.relu2,features.relu4",
        per_layer=4,
        batch=2,
        steps=2,
        size=24,
        reference=None,
        progress=False,
    )
    fresh = atlas(model, tmp_path / "fresh", **kw)
    # rank 1 of 2 finishes its batches, then the job is stopped before rank 0 merges
    monkeypatch.setattr(dist, "rank", lambda: 1)
    monkeypatch.setattr(dist, "world", lambda: 2)
    atlas(model, tmp_path / "run", **kw)
    records = sorted(p.name for p in (tmp_path / "run").rglob("units*.json"))
    assert records == ["units.rank1of2.json", "units.rank1of2.json"]
    assert not (tmp_path / "run" / "index.json").exists()  # only rank 0 writes it
    monkeypatch.undo()
    calls = []
    real = batches_mod.render
    monkeypatch.setattr(
        batches_mod, "render", lambda *a, **k: calls.append(k["seeds"]) or real(*a, **k)
    )
    doc = atlas(model, tmp_path / "run", **kw)  # one process picks up what is left
    assert {k: doc.this_run[k] for k in ("reused", "rendered")} == {
        "reused": 4,
        "rendered": 4,
    } and len(calls) == 2
    assert not list((tmp_path / "run").rglob("units.rank*"))
    for entry, want in zip(doc.layers, fresh.layers, strict=True):
        assert entry["units"] == want["units"]  # same seeds, same batches: same values
        folder = entry["folder"]
        for u in entry["units"]:
            a = (tmp_path / "fresh" / folder / u["png"]).read_bytes()
            assert (tmp_path / "run" / folder / u["png"]).read_bytes() == a
    index = json.loads((tmp_path / "run" / "index.json").read_text())
    assert [len(e["units"]) for e in index["layers"]] == [4, 4]


def test_an_interrupted_examples_pass_resumes_from_its_checkpoint(
    monkeypatch, tmp_path, one_thread
):
    model = _small()
    layers = ["features.relu2", "features.relu4"]
    data = PartsWorld(40, 32, seed=5)
    kw = dict(k=3, bottom=True, batch_size=8, progress=False)
    want = examples(model, data, layers, **kw)
    kw["receptive_fields"] = {n: want[n].rf_size for n in layers}  # measured once
    forwards = _Forwards(monkeypatch, stop_at=4)
    calls = forwards.calls
    with pytest.raises(KeyboardInterrupt):
        examples(model, data, layers, stream=_kept(tmp_path, "examples"), **kw)
    saved = list(tmp_path.glob("examples.rank0of1.pt"))
    assert saved and not list(tmp_path.glob("*.tmp*"))
    calls.clear()
    forwards.stop_at = -1
    got = examples(model, data, layers, stream=_kept(tmp_path, "examples"), **kw)
    assert len(calls) == 2  # 24 of 40 images were saved: two batches of 8 are left
    assert not saved[0].exists()  # removed once complete
    for name in layers:
        for which in ("top", "bottom"):
            a, b = getattr(want[name], which), getattr(got[name], which)
            assert torch.equal(a.items, b.items) and torch.equal(a.positions, b.positions)
            assert torch.equal(a.result().nan_to_num(), b.result().nan_to_num())
    assert got[layers[0]].info["images"] == 40

    # a checkpoint made with other settings is not used
    forwards.stop_at = 4
    calls.clear()
    with pytest.raises(KeyboardInterrupt):
        examples(model, data, layers, stream=_kept(tmp_path, "examples"), **kw)
    assert saved[0].exists()
    forwards.stop_at = -1
    calls.clear()
    examples(model, data, layers, stream=_kept(tmp_path, "examples"), **{**kw, "k": 4})
    assert len(calls) == 5  # k changed: all 40 images again


def test_default_batches_fill_a_gpu_and_stay_small_on_cpu():
    from interp.device import default_batch

    assert default_batch("cpu", 16, 64) == 16 and default_batch("cuda", 16, 64) == 64


@pytest.mark.parametrize(("stop_at", "calls_left"), [(3, 6), (6, 3)])
def test_an_interrupted_dissection_resumes_from_its_checkpoint(
    monkeypatch, tmp_path, one_thread, stop_at, calls_left
):
    """Stopped in the first pass (call 3: the layer probe, then one batch) or in the second
    (call 6), a rerun does only what is left and gets what an uninterrupted run gets, the
    subsampled quantile's random stream included."""
    model = _small()
    layers = ["features.relu2", "features.relu4"]
    data = PartsWorldConcepts(n=24, size=32)
    kw = dict(batch_size=8, quantile=0.05, max_topk=50, progress=False)
    want = dissect(model, data, layers, **kw)
    forwards = _Forwards(monkeypatch, stop_at=stop_at)
    calls = forwards.calls
    with pytest.raises(KeyboardInterrupt):
        dissect(model, data, layers, stream=_kept(tmp_path, "dissect"), **kw)
    saved = tmp_path / "dissect.rank0of1.pt"
    assert saved.is_file()
    calls.clear()
    forwards.stop_at = -1
    got = dissect(model, data, layers, stream=_kept(tmp_path, "dissect"), **kw)
    assert len(calls) == calls_left and not saved.exists()
    for name in layers:
        assert np.array_equal(want[name].thresholds, got[name].thresholds)
        assert np.array_equal(want[name].iou, got[name].iou)
        assert np.array_equal(want[name].class_means, got[name].class_means)
