"""Network Dissection validated on known answers: exact streaming quantiles, a planted unit that
copies a part's mask, a planted colour detector end to end, a Broden-layout folder, and class
selectivity on hand-made class means."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from conftest import all_hooks
from PIL import Image
from torch import nn

from interp import Model, Preprocessing
from interp.data.concepts import BrodenConcepts, ConceptDataError, PartsWorldConcepts
from interp.data.partsworld import COLOURS
from interp.probes.dissect import (
    Dissection,
    IoUAccumulator,
    StreamingQuantile,
    dissect,
    selectivity_index,
)
from interp.views.dissect_figures import save_dissection


def test_streaming_quantile_is_exact():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(5, 3, 6, 6, generator=g) for _ in range(7)]
    everything = torch.cat(batches).transpose(0, 1).reshape(3, -1)
    q = StreamingQuantile(3, everything.shape[1], 0.02)
    for b in batches:
        q.update(b)
    k = q.k_full
    expected = everything.sort(dim=1, descending=True).values[:, k - 1]
    assert torch.equal(q.result(), expected)
    # exactly k values per unit lie at or above the threshold (continuous data: no ties)
    assert ((everything >= q.result()[:, None]).sum(dim=1) == k).all()


def test_streaming_quantile_subsampled_is_close():
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(64, 2, 16, 16, generator=g) for _ in range(8)]
    total = 8 * 64 * 256
    q = StreamingQuantile(2, total, 0.01, max_topk=300)
    for b in batches:
        q.update(b)
    assert q.sampled and q.buffer.shape[1] <= q.capacity
    # uniform [0, 1): the top-1% quantile is 0.99
    assert np.allclose(q.result().numpy(), 0.99, atol=0.004)


def _part_area(data: PartsWorldConcepts) -> dict[int, float]:
    area: dict[int, float] = {}
    for i in range(len(data)):
        it = data.item(i)
        for c, m in zip(it.concepts.tolist(), it.masks, strict=True):
            area[c] = area.get(c, 0.0) + float(m.float().mean())
    return {c: a / len(data) for c, a in area.items()}


def test_planted_part_detector_is_found():
    """A unit whose activation is a copy of a part's mask is that part's detector, IoU > 0.5."""
    data = PartsWorldConcepts(n=120, size=64, seed=5)
    names = data.concept_names()
    parts = {c: a for c, a in _part_area(data).items() if names[c].startswith("part:")}
    # the part whose area is nearest the 0.5% a unit's region covers (a copy of a mask can
    # only reach a high IoU when the region and the mask have about the same size)
    target = min(parts, key=lambda c: abs(np.log(parts[c] / 0.005)))
    g = torch.Generator().manual_seed(0)
    acts = []
    items = [data.item(i) for i in range(len(data))]
    for it in items:
        noise = 1e-3 * torch.rand(3, 64, 64, generator=g)  # units 1, 2: noise only
        hit = (it.concepts == target).nonzero()
        if len(hit):
            noise[0] += it.masks[int(hit[0, 0])].float()
        acts.append(noise)
    acts_t = torch.stack(acts)
    q = StreamingQuantile(3, acts_t.numel() // 3, 0.005)
    for start in range(0, len(items), 16):
        q.update(acts_t[start : start + 16])
    acc = IoUAccumulator(q.result(), data.category_of(), 4, 64)
    for start in range(0, len(items), 16):
        stop = min(len(items), start + 16)
        acc.update(acts_t[start:stop], items[start:stop], range(start, stop))
    iou = acc.result()
    assert iou[0].argmax() == target, (names[iou[0].argmax()], names[target])
    assert iou[0, target] > 0.5
    assert iou[1:].max() < 0.04  # noise units detect nothing


class _ColourDetector(nn.Module):
    """Unit 0: pixels near PartsWorld's red; unit 1: a constant; unit 2: brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pix = x * 0.5 + 0.5  # undo the (0.5, 0.5) normalization
        red = torch.tensor(COLOURS["red"]).view(1, 3, 1, 1)
        near = torch.relu(1 - 4 * (pix - red).abs().sum(dim=1, keepdim=True))
        const = torch.ones_like(near)
        bright = pix.mean(dim=1, keepdim=True)
        return self.body(torch.cat([near, const, bright], dim=1))


def _colour_model(size: int = 64) -> Model:
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(size, size))
    return Model(_ColourDetector().eval(), "colour-detector", pre)


def test_planted_colour_detector_end_to_end():
    model = _colour_model()
    data = PartsWorldConcepts(n=96, size=64, seed=7)
    before = all_hooks(model.module)
    res = dissect(model, data, ["body"], progress=False, batch_size=16)
    assert all_hooks(model.module) == before
    d = res["body"]
    labels = d.labels()
    assert labels[0] == "colour:red"
    assert d.best_iou[0] > 0.1
    assert labels[1] is None  # a constant unit has no region above its threshold
    assert d.summary()["by_category"]["colour"]["units"] >= 1
    # the red unit's top images contain red pixels
    for i in d.top_images[0][:3]:
        pix = data.item(int(i), masks=False).image
        red = torch.tensor(COLOURS["red"]).view(3, 1, 1)
        assert ((pix - red).abs().sum(dim=0) < 0.15).sum() > 10


def test_partsworld_concepts_memo_returns_what_a_fresh_draw_does():
    """Scenes kept in memory are the scenes drawn anew, with or without masks, in either
    order; a caller's in-place edit changes no later item; the byte budget is kept."""
    kept, fresh = PartsWorldConcepts(n=12, size=32), PartsWorldConcepts(n=12, size=32)
    fresh.memo_bytes = 0
    for i, masks in [(3, False), (3, True), (3, False), (5, True), (5, True), (5, False)]:
        a, b = kept.item(i, masks=masks), fresh.item(i, masks=masks)
        assert a.label == b.label and torch.equal(a.image, b.image)
        assert torch.equal(a.masks, b.masks) and torch.equal(a.concepts, b.concepts)
        assert (a.masks.shape[0] > 0) == masks
        a.image.zero_()
        a.masks.zero_()
    assert torch.equal(kept.item(5).masks, fresh.item(5).masks) and kept.item(5).image.max() > 0
    assert not fresh._memo
    small = PartsWorldConcepts(n=12, size=32)
    one = sum(t.nbytes for t in (small.item(0).image, small.item(0).masks, small.item(0).concepts))
    small.memo_bytes = int(2.5 * one)  # room for about two scenes
    for i in range(12):
        small.item(i)
    assert 1 <= len(small._memo) <= 3 and small._memo_used <= small.memo_bytes


def test_a_dissection_saves_loads_and_draws(tmp_path):
    """The result object: save() writes the arrays, the JSON and the figure; load() gives back
    the same arrays and summaries (the planted red unit still detects red)."""
    model = _colour_model()
    data = PartsWorldConcepts(n=32, size=64, seed=7)
    res = dissect(model, data, ["body"], progress=False, batch_size=16)
    paths = save_dissection(res, tmp_path / "d", title="planted")
    assert sorted(p.name for p in paths) == [
        "dissection.json",
        "dissection.npz",
        "dissection.png",
    ]
    assert (tmp_path / "d" / "dissection.png").stat().st_size > 2000
    back = Dissection.load(tmp_path / "d")
    assert list(back) == ["body"] and back.data == res.data and back.skipped == res.skipped
    for key in ("thresholds", "iou", "top_images", "class_means", "inclusive"):
        assert np.array_equal(getattr(back["body"], key), getattr(res["body"], key)), key
    assert back.to_dict() == res.to_dict()
    assert back["body"].labels()[0] == "colour:red"


def test_dissect_skips_non_spatial_layers_and_restores_state():
    conv = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 32 * 32, 6)
    )
    pre = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(32, 32))
    model = Model(conv.train(), "tiny", pre)
    flags = [p.requires_grad for p in conv.parameters()]
    data = PartsWorldConcepts(n=16, size=32)
    res = dissect(model, data, ["1", "3"], progress=False)
    assert list(res) == ["1"] and "3" in res.skipped
    assert conv.training and [p.requires_grad for p in conv.parameters()] == flags
    assert all_hooks(conv) == 0
    # class means from the first pass equal a brute-force computation
    x = torch.stack([data.item(i, masks=False).image for i in range(16)])
    labels = torch.tensor([data.item(i, masks=False).label for i in range(16)])
    with torch.no_grad():
        conv.eval()
        act = conv[1](conv[0](model.normalize(x))).clamp_min(0).mean(dim=(2, 3))
        conv.train()
    for k in range(6):
        if (labels == k).any():
            want = act[labels == k].mean(dim=0).numpy()
            assert np.allclose(res["1"].class_means[:, k], want, atol=1e-5)
    with pytest.raises(ConceptDataError):
        dissect(model, data, ["3"], progress=False)
    assert all_hooks(conv) == 0


def test_dissect_restores_hooks_when_the_model_raises():
    class Fails(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 2:  # the layer check and the first batch pass, then it breaks
                raise RuntimeError("boom")
            return self.conv(x)

    module = Fails().train()
    model = Model(module, "fails", Preprocessing(input_size=(32, 32)))
    with pytest.raises(RuntimeError, match="boom"):
        dissect(model, PartsWorldConcepts(n=40, size=32), ["conv"], batch_size=8, progress=False)
    assert all_hooks(module) == 0 and module.training


def test_selectivity_index_known_answers():
    means = np.array([[1.0, 0, 0, 0], [1, 1, 1, 1], [2, 1, 1, 1], [0, 0, 0, 0]])
    si = selectivity_index(means)
    assert np.allclose(si, [1.0, 0.0, 1 / 3, 0.0])


def _write_broden(root) -> None:
    """Six 32x32 images: a red square (pixel labels: colour 'red-c', object 'box'), an
    image-level scene label, and two images without object annotation."""
    (root / "images" / "fx").mkdir(parents=True)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(6):
        img = (rng.uniform(0.3, 0.7, (32, 32, 3)) * 255).astype(np.uint8)
        y, x = 4 + 3 * i, 2 + 4 * i
        img[y : y + 6, x : x + 6] = (230, 20, 20)
        Image.fromarray(img).save(root / "images" / "fx" / f"{i}.png")
        colour = np.zeros((16, 16, 3), dtype=np.uint8)  # masks at half resolution
        colour[y // 2 : (y + 6) // 2, x // 2 : (x + 6) // 2, 0] = 3  # label 3 = red-c
        Image.fromarray(colour).save(root / "images" / "fx" / f"{i}_color.png")
        obj = np.zeros((16, 16, 3), dtype=np.uint8)
        obj[y // 2 : (y + 6) // 2, x // 2 : (x + 6) // 2, 0] = 44  # 300 = 44 + 256 * 1
        obj[y // 2 : (y + 6) // 2, x // 2 : (x + 6) // 2, 1] = 1
        Image.fromarray(obj).save(root / "images" / "fx" / f"{i}_object.png")
        rows.append(
            {
                "image": f"fx/{i}.png",
                "split": "train",
                "ih": 32,
                "iw": 32,
                "sh": 16,
                "sw": 16,
                "color": f"fx/{i}_color.png",
                "object": f"fx/{i}_object.png" if i < 4 else "",
                "part": "",
                "scene": "7",
            }
        )
    with open(root / "index.csv", "w", newline="") as handle:
        w = csv.DictWriter(handle, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    with open(root / "label.csv", "w", newline="") as handle:
        handle.write("number,name,category,frequency,coverage,syns\n")
        handle.write(
            "3,red-c,color(6),6,1.0,\n7,studio,scene(6),6,1.0,\n300,box,object(4),4,1.0,\n"
        )


def test_broden_layout_end_to_end(tmp_path):
    _write_broden(tmp_path)
    data = BrodenConcepts(tmp_path, size=32)
    assert data.categories == ["color", "object", "part", "scene"]
    assert data.concept_names() == ["color:red-c", "object:box", "scene:studio"]
    assert data.mask_size == 16
    it = data.item(5)
    assert it.labelled.tolist() == [True, False, False, True]
    assert it.masks.shape[1:] == (16, 16) and it.masks[-1].all()  # scene: every pixel
    # the red square covers 9/256 = 3.5% of mask pixels: cut the unit at that quantile
    res = dissect(_colour_model(32), data, ["body"], quantile=0.03, progress=False, batch_size=4)
    d = res["body"]
    red_unit = d.iou[0]
    assert d.concepts[red_unit.argmax()] in ("color:red-c", "object:box")
    assert red_unit[0] > 0.5 and red_unit[1] > 0.5
    assert red_unit[2] < 0.1  # the scene label covers everything
    assert d.counts()["color"]["units"] + d.counts()["object"]["units"] >= 1


def test_broden_errors(tmp_path):
    with pytest.raises(ConceptDataError, match="index.csv"):
        BrodenConcepts(tmp_path)
    _write_broden(tmp_path)
    with pytest.raises(ConceptDataError, match="no category"):
        BrodenConcepts(tmp_path, categories=["texture"])
    (tmp_path / "images" / "fx" / "0_color.png").write_bytes(b"not a png")
    with pytest.raises(ConceptDataError, match="cannot read"):
        BrodenConcepts(tmp_path)


def test_ties_at_the_threshold():
    """A plateau of tied top values is the region; a unit constant almost everywhere is not
    credited with the whole image."""
    acts = torch.zeros(4, 3, 10, 10)
    acts[:, 0, 0, :3] = 6.0  # unit 0: a saturated top plateau of 12 values (k = 4)
    acts[:, 1] = 1.0  # unit 1: constant
    acts[:, 2, 0, 0] = 2.0  # unit 2: zero almost everywhere, fires on 4 values
    q = StreamingQuantile(3, 400, 0.01)
    q.update(acts)
    assert q.result().tolist() == [6.0, 1.0, 2.0]
    # unit 0: 12 tied values > 2k = 8, but they are its maximum (saturation), within 10k
    assert q.inclusive().tolist() == [True, False, True]
    q2 = StreamingQuantile(3, 400, 0.02)  # k = 8: the 12 tied values are within 2k
    q2.update(acts)
    # unit 2's threshold is now 0 (only 4 values fire): strict, so its region is where it fires
    assert q2.result().tolist() == [6.0, 1.0, 0.0]
    assert q2.inclusive().tolist() == [True, False, False]


def test_upsample_matches_interpolate():
    from interp.probes.dissect import upsample

    g = torch.Generator().manual_seed(3)
    for h, w, s in ((2, 2, 64), (7, 5, 16), (16, 16, 64), (32, 32, 16), (8, 8, 8)):
        x = torch.randn(2, 3, h, w, generator=g)
        want = torch.nn.functional.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        assert torch.allclose(upsample(x, s), want, atol=1e-5)


def test_saturated_plateau_is_the_region_unless_too_broad():
    acts = torch.zeros(10, 2, 10, 10)
    acts[:, 0, 0, :3] = 6.0  # 30 saturated values, k = 5: a plateau 6x the quantile
    acts[:, 1, :5] = 6.0  # 500 saturated values: 100x the quantile, fires everywhere
    q = StreamingQuantile(2, 1000, 0.005)
    q.update(acts[:4])
    q.update(acts[4:])
    assert q.at_top.tolist() == [30, 500]
    assert q.inclusive().tolist() == [True, False]
