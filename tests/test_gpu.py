"""GPU checks (run by scripts/device_check.sh; skipped without CUDA): examples and dissection
on CUDA agree with the CPU, a real out-of-memory batch is halved and retried, the atlas runs
with the GPU defaults."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interp import load_model
from interp.data.concepts import PartsWorldConcepts
from interp.data.photos import PhotoCrops
from interp.dataset_examples import examples
from interp.pipeline.atlas import atlas
from interp.probes.dissect import dissect

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

LAYERS = ["_blocks.1", "_blocks.8"]


def test_examples_and_dissection_on_cuda_agree_with_the_cpu(lite0):
    gpu = load_model("efficientnet_lite0", device="cuda")
    photos = PhotoCrops(64, 128, seed=0)
    kw = dict(k=4, precision="fp32", progress=False)
    a = examples(lite0, photos, LAYERS, **kw)
    b = examples(gpu, photos, LAYERS, **kw)
    for name in LAYERS:
        assert torch.allclose(a[name].top.result(), b[name].top.result(), rtol=1e-3, atol=1e-3)
        same = (a[name].top.items == b[name].top.items).float().mean()
        assert same > 0.97  # near-ties may swap under different kernels
    concepts = PartsWorldConcepts(n=48, size=64)
    da = dissect(lite0, concepts, LAYERS, precision="fp32", progress=False)
    db = dissect(gpu, concepts, LAYERS, precision="fp32", progress=False)
    for name in LAYERS:
        assert np.allclose(da[name].thresholds, db[name].thresholds, rtol=1e-3, atol=1e-3)
        assert np.abs(da[name].iou - db[name].iou).max() < 0.02


def test_a_real_out_of_memory_batch_is_halved(capsys):
    gpu = load_model("efficientnet_lite0", device="cuda")
    photos = PhotoCrops(96, 224, seed=1)
    kw = dict(k=3, precision="fp32", progress=False)
    want = examples(gpu, photos, ["_blocks.1"], batch_size=8, **kw)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(0).total_memory
    used = torch.cuda.memory_allocated()
    try:  # room for the weights and about a batch of 16 crops, not one of 96
        torch.cuda.set_per_process_memory_fraction(min(1.0, (used + 300e6) / total))
        got = examples(gpu, photos, ["_blocks.1"], batch_size=96, **kw)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
        torch.cuda.empty_cache()
    assert "out of device memory at a batch of images of 96" in capsys.readouterr().err
    assert torch.equal(want["_blocks.1"].top.items, got["_blocks.1"].top.items)


def test_the_atlas_runs_with_the_gpu_defaults(tmp_path):
    gpu = load_model("efficientnet_lite0", device="cuda")
    doc = atlas(gpu, tmp_path, layers="_blocks.3", per_layer=70, steps=8, size=64, progress=False)
    assert doc.settings["batch"] == 64 and doc.settings["precision"] == "auto"
    units = doc.layers[0]["units"]
    assert len(units) == 40 and all(np.isfinite(u["value"]) for u in units)  # 40 channels
    assert (tmp_path / "overview.png").is_file()
