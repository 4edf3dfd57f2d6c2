"""Feature visualization: objectives, parametrizations, transforms, renderer hygiene, and the
instruments validated on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import all_hooks, tiny_cnn
from torch import nn

from interp import ChannelError, Model, Preprocessing
from interp import objectives as obj
from interp.featvis.param import fft_image, maco_image, make_param
from interp.featvis.render import evaluate, render, render_channels
from interp.featvis.render_steps import align_images
from interp.featvis.transforms import LUCENT, NONE, STANDARD, RobustTransform, _affine_grid


def identity_model(net: nn.Module, channels: int = 3) -> Model:
    """Pixels go in unchanged: mean 0, std 1."""
    pre = Preprocessing(
        mean=(0.0,) * channels, std=(1.0,) * channels, channels=channels, input_size=(32, 32)
    )
    return Model(net.eval(), "test", pre)


# ------------------------------------------------------------------------------ objectives
def test_objective_algebra_and_names():
    o = obj.channel("layer1", 3) - 0.05 * obj.total_variation() + 2
    assert str(o) == "channel(layer1:3) - 0.05*total_variation + 2"
    assert set(o.layers) == {"layer1", obj.INPUT}
    assert str(obj.as_objective("_blocks.5:7")) == "channel(_blocks.5:7)"
    assert str(-obj.neuron("a", 1) / 2) == "-neuron(a:1)/2"
    assert str((obj.channel("a", 1) + obj.channel("b", 2)) * 3) == "3*(channel(a:1) + channel(b:2))"
    assert sum([obj.channel("a", 1), obj.channel("a", 2)]).name == "channel(a:1) + channel(a:2)"
    with pytest.raises(ValueError, match="layer:channel"):
        obj.as_objective("no-channel")
    with pytest.raises(TypeError):
        obj.as_objective(3.5)


def test_batched_objectives_pick_one_unit_per_image():
    acts = torch.arange(2 * 4 * 3 * 3, dtype=torch.float32).reshape(2, 4, 3, 3)

    def T(name):
        return acts

    per_image = obj.channel("x", [1, 3])(T)
    assert torch.allclose(per_image, torch.stack([acts[0, 1].mean(), acts[1, 3].mean()]))
    assert torch.allclose(
        obj.neuron("x", [0, 2])(T), torch.stack([acts[0, 0, 1, 1], acts[1, 2, 1, 1]])
    )
    v = torch.tensor([0.0, 1.0, 0.0, 1.0])
    expected = (acts[:, 1] + acts[:, 3]).mean(dim=(1, 2)) / 2**0.5
    assert torch.allclose(obj.direction("x", v)(T), expected)
    d = obj.diversity("x")(T)
    assert d.shape == (2,) and (d <= 0).all()


# ------------------------------------------------------------------------- parametrizations
def test_fft_param_is_lucents_maths():
    from lucent.optvis import param as lparam

    torch.manual_seed(0)
    params, lucent_f = lparam.image(32, 48, batch=2)
    ours, our_f = fft_image(2, 3, (48, 32), [1, 2], torch.device("cpu"))
    with torch.no_grad():
        ours[0].copy_(params[0])
    assert torch.allclose(lucent_f(), our_f(), atol=1e-6)


def test_maco_keeps_the_magnitude_spectrum_fixed():
    mag = torch.full((3, 16, 9), 0.01)  # small enough that nothing is clamped
    params, image_f = maco_image(2, 3, (16, 16), [5, 6], torch.device("cpu"), magnitude=mag)
    with torch.no_grad():
        params[0].add_(torch.randn_like(params[0]))  # any phase
    spectrum = torch.fft.rfft2(image_f() - 0.5, norm="ortho").abs()
    assert torch.allclose(
        spectrum[..., 1:-1], mag[None, :, :, 1:-1].expand(2, -1, -1, -1), atol=1e-6
    )


def test_params_are_seeded_per_image_and_grey_works():
    a = make_param("fft", 2, 3, 16, [7, 8], torch.device("cpu"))[1]()
    b = make_param("fft", 1, 3, 16, [8], torch.device("cpu"))[1]()
    assert torch.equal(a[1:], b)  # an image's start does not depend on its batch
    for kind in ("fft", "pixel", "maco"):
        img = make_param(kind, 2, 1, 16, [1, 2], torch.device("cpu"))[1]()
        assert img.shape == (2, 1, 16, 16) and 0 <= img.min() and img.max() <= 1


def test_transforms_are_drawn_per_image():
    img = torch.rand(1, 3, 32, 32).expand(6, -1, -1, -1)
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    out = STANDARD(img, gens)
    assert out.shape == img.shape
    diffs = [(out[0] - out[i]).abs().max().item() for i in range(1, 6)]
    assert min(diffs) > 1e-3  # six images, six different transforms
    same = NONE(img, gens)
    assert torch.allclose(same, img, atol=1e-5)


def test_standard_transforms_are_centred_on_the_canvas_and_lucent_zooms_out():
    """Known geometry: a centred square keeps its size under STANDARD's draws without jitter
    and rotation (scale 1 is the identity), shrinks to 128/152 under LUCENT's pad, and the
    fast sampling grid equals ``F.affine_grid``."""
    size = 128
    img = torch.zeros(1, 3, size, size)
    img[..., 32:96, 32:96] = 1.0  # a 64 px white square on black
    gens = [torch.Generator().manual_seed(0)]
    still = dict(jitter=(), scales=(), angles=(), fill=0.0)
    same = RobustTransform(pad=STANDARD.pad, **still)(img, gens)
    assert torch.allclose(same, img, atol=1e-5)
    shrunk = RobustTransform(pad=LUCENT.pad, **still)(img, gens)
    side = float(shrunk[0, 0].sum()) ** 0.5  # area of the square, in pixels
    assert abs(side - 64 * size / (size + 2 * LUCENT.pad)) < 0.5, side
    # STANDARD's draws scatter around the canvas's own scale (mean log zoom 0; the spread of
    # 400 draws' mean is about 0.003), LUCENT's around 152/128
    gens = [torch.Generator().manual_seed(i) for i in range(400)]
    theta = STANDARD.sample(gens, (size, size))
    zoom = theta[:, :, :2].det().abs().sqrt()
    assert abs(float(zoom.log().mean())) < 0.012
    assert 0.9 < float(zoom.min()) and float(zoom.max()) < 1.12
    lucent = LUCENT.sample(gens, (size, size))[:, :, :2].det().abs().sqrt()
    assert abs(float(lucent.log().mean()) - math.log(152 / 128)) < 0.012
    for h, w in ((128, 128), (17, 40)):
        want = F.affine_grid(theta[:4], [4, 3, h, w], align_corners=False)
        assert torch.allclose(_affine_grid(theta[:4], h, w), want, atol=1e-6)


# ------------------------------------------------------------------------------ renderer
def test_planted_filter_is_recovered_by_pixel_optimization():
    """(a) A conv layer with a planted filter: the L2-penalized pixel optimum of its centre
    neuron is the filter itself (up to scale)."""
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 4, 7, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(4, 3, 7, 7, generator=gen) * 0.1)
        yy, xx = torch.meshgrid(torch.arange(7.0) - 3, torch.arange(7.0) - 3, indexing="ij")
        gabor = torch.exp(-(xx**2 + yy**2) / 8) * torch.cos(1.3 * (xx * 0.8 + yy * 0.6))
        conv.weight[2] = gabor * torch.tensor([1.0, -0.5, 0.3])[:, None, None]
    model = identity_model(nn.Sequential(conv))
    # l2 is a mean over 147 pixels: weight 400 keeps the optimum (w * 147/800) unsaturated
    objective = obj.neuron("0", 2) - 400.0 * obj.l2()
    result = render(
        model, objective, steps=300, size=7, param="pixel", transforms=None, lr=0.05, progress=False
    )
    image = result.images[0] - 0.5
    r = np.corrcoef(image.flatten().numpy(), conv.weight[2].detach().flatten().numpy())[0, 1]
    assert r > 0.9, r


def parity_model() -> Model:
    """A stride-2 unit that sees one pixel grid: ``relu(x[even col] - x[odd col])`` per 2x2
    block, summed over colours. A vertical stripe of period 2 excites it fully at one phase
    and not at all at the other."""
    conv = nn.Conv2d(3, 1, 2, stride=2, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, :, :, 0] = 1.0
        conv.weight[0, :, :, 1] = -1.0
    return identity_model(nn.Sequential(conv, nn.ReLU()))


def test_align_moves_an_image_onto_the_pixel_grid_its_unit_sees():
    """Known answer: stripes bright on the odd columns read 0 on the parity unit; one pixel to
    the right they read 6 in every block (two bright pixels less none, in 3 colours)."""
    model = parity_model()
    objective = obj.channel("1", 0)
    stripes = torch.zeros(1, 3, 16, 16)
    stripes[..., 1::2] = 1.0
    flat = torch.full((1, 3, 16, 16), 0.5)
    images = torch.cat([stripes, flat])
    objective2 = obj.channel("1", [0, 0])

    def value_of(batch: torch.Tensor) -> torch.Tensor:
        return evaluate(model, objective, batch)[:, 0]

    values = value_of(images)
    assert values.tolist() == [0.0, 0.0]
    aligned, new_values, shifts = align_images(images, values, value_of)
    assert shifts == [(0, 1), (0, 0)]  # the stripes move one column; flat grey has no grid
    assert torch.equal(aligned[0], torch.roll(stripes[0], 1, dims=2))
    assert torch.equal(aligned[1], flat[0])
    assert new_values.tolist() == pytest.approx([6.0, 0.0])
    assert torch.allclose(evaluate(model, objective2, aligned).diagonal(), new_values)


def test_render_returns_the_best_translation_and_its_true_value():
    """With jitter over both pixel grids, the optimization of the parity unit ends wherever
    its start leads; the aligned canvas is the best of the image's four one-pixel translations,
    never below the canvas as optimized, and its value is the returned image's own."""
    model = parity_model()
    objective = obj.channel("1", [0] * 6)
    kwargs = dict(steps=24, size=16, param="pixel", seed=3, progress=False)
    plain = render(model, objective, align=False, **kwargs)
    aligned = render(model, objective, **kwargs)
    rolls = torch.stack(
        [
            evaluate(model, objective, torch.roll(plain.images, s, dims=(2, 3))).diagonal()
            for s in ((0, 0), (0, 1), (1, 0), (1, 1))
        ]
    )
    assert torch.allclose(aligned.values, rolls.max(dim=0).values, atol=1e-5)
    assert bool((aligned.values >= plain.values).all())
    assert bool((aligned.values > plain.values + 0.1).any())  # the planted case does move
    assert torch.allclose(evaluate(model, objective, aligned.images).diagonal(), aligned.values)
    for i, shift in enumerate(aligned.info["shifts"]):
        assert torch.equal(aligned.images[i], torch.roll(plain.images[i], shift, dims=(1, 2)))
    assert plain.info["shifts"] == [(0, 0)] * 6


def test_render_hygiene_truncation_and_determinism(resnet18):
    module = resnet18.module
    module.train()
    flags = [p.requires_grad for p in module.parameters()]
    calls = {"layer2": 0, "layer4": 0, "fc": 0}
    handles = [
        module.get_submodule(n).register_forward_pre_hook(
            lambda _m, _i, n=n: calls.__setitem__(n, calls[n] + 1)
        )
        for n in calls
    ]
    before = all_hooks(module)
    try:
        kwargs = dict(steps=3, size=32, progress=False, seed=4)
        a = render_channels(resnet18, "layer1.0.conv1", [1, 5], **kwargs)
        b = render_channels(resnet18, "layer1.0.conv1", [1, 5], **kwargs)
        assert all_hooks(module) == before  # only the test's own counters remain
        assert module.training  # the caller's mode is back
    finally:
        for h in handles:
            h.remove()
        module.eval()
    assert calls == {"layer2": 0, "layer4": 0, "fc": 0}  # never ran past layer1.0.conv1
    assert torch.equal(a.images, b.images) and torch.equal(a.values, b.values)
    assert a.images.shape == (2, 3, 32, 32) and len(a.history) == 3
    assert [p.requires_grad for p in module.parameters()] == flags
    assert all(p.grad is None for p in module.parameters())


def test_bad_channel_is_a_clear_error_and_leaves_nothing_behind(resnet18):
    before = all_hooks(resnet18.module)
    with pytest.raises(ChannelError, match=r"64 channels \(0..63\)"):
        render(resnet18, obj.channel("layer1.0.conv1", 70), steps=2, size=32, progress=False)
    assert all_hooks(resnet18.module) == before
    assert not resnet18.module.training


def test_logit_objective_by_class_name(lite0):
    result = render(lite0, obj.logit("espresso"), steps=4, size=64, progress=False)
    assert result.values.shape == (1,) and result.history[-1] > result.history[0]


def test_grey_models_get_grey_images():
    model = identity_model(tiny_cnn(), channels=3)
    grey = Model(
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).eval(),
        "grey",
        Preprocessing(mean=(0.5,), std=(0.5,), channels=1, input_size=(16, 16)),
    )
    res = render(grey, obj.channel("0", [0, 1]), steps=3, size=16, progress=False)
    assert res.images.shape == (2, 1, 16, 16)
    assert render(model, "2:1", steps=2, size=16, progress=False).images.shape == (1, 3, 16, 16)


def test_evaluate_gives_every_unit_on_every_image():
    model = identity_model(tiny_cnn())
    images = torch.rand(5, 3, 16, 16)
    values = evaluate(model, obj.channel("2", [0, 3, 7]), images)
    acts = model.module[:3](images)
    assert values.shape == (5, 3)
    assert torch.allclose(values, acts[:, [0, 3, 7]].mean(dim=(2, 3)), atol=1e-5)


def test_renders_beat_natural_crops_on_efficientnet(lite0):
    """(b) Olah's sanity check: at 256 steps the image excites its unit more than the best of
    256 natural crops of the canvas size, for >= 90% of 32 units across four depths."""
    from interp.featvis.reference import reference_images

    refs = reference_images(64, "photos", n=256)
    rng = np.random.default_rng(0)
    wins, total = 0, 0
    for layer, width in (
        ("_blocks.1", 24),
        ("_blocks.4", 40),
        ("_blocks.9", 112),
        ("_blocks.15", 320),
    ):
        chans = sorted(rng.choice(width, 8, replace=False).tolist())
        objective = obj.channel(layer, chans)
        result = render(lite0, objective, steps=256, size=64, progress=False)
        natural = evaluate(lite0, objective, refs).max(dim=0).values
        wins += int((result.values > natural).sum())
        total += len(chans)
    assert total == 32
    assert wins / total >= 0.9, f"{wins}/{total}"


def test_aligned_renders_of_the_stride_2_grid_layer_beat_natural_crops(lite0):
    """EfficientNet-Lite0's ``_blocks.0`` (7 px field on the stride-2 stem) is where the pixel
    grid decided Olah's check: as optimized, 4 of 32 renders (8 units x 4 starts, 128 px)
    lost to their unit's best natural crop. Aligned, every render of 8 units x 2 starts
    beats it, and no aligned value is below the same image as optimized."""
    from interp.featvis.reference import reference_images
    from interp.featvis.render import unit_seed

    layer = "_blocks.0"
    rng = np.random.default_rng(unit_seed(0, layer, "sample") % (2**32))
    chans = sorted(rng.choice(16, 8, replace=False).tolist())
    objective = obj.channel(layer, chans)
    natural = evaluate(lite0, objective, reference_images(128, "photos", n=256)).max(0).values
    for start in (0, 1):
        kwargs = dict(steps=256, size=128, seeds=[unit_seed(start, layer, c) for c in chans])
        aligned = render(lite0, objective, progress=False, **kwargs)
        plain = render(lite0, objective, progress=False, align=False, **kwargs)
        assert bool((aligned.values >= plain.values).all())
        assert bool((aligned.values > natural).all()), (start, aligned.values / natural)


def test_stem_renders_reach_the_flat_colour_optimum(lite0):
    """A stem unit (3x3 conv, BatchNorm, ReLU6) is linear in a flat input up to its clamp, so
    the best of the 8 saturated flat colours is a known value its image can reach. With the
    default parametrization (``auto``: pixel for a 3 px field) every live unit's image reaches
    95% of it and beats the best of 256 natural crops (the Fourier image beat 2 of 7 here)."""
    import itertools

    from interp.featvis.reference import reference_images

    refs = reference_images(64, "photos", n=256)
    corners = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)))
    flats = corners[:, :, None, None].expand(8, 3, 64, 64).contiguous()
    chans = [0, 1, 9, 10, 11, 13, 19, 20]
    objective = obj.channel("_act_stem", chans)
    result = render(lite0, objective, steps=256, size=64, progress=False)
    assert result.info["param"] == "pixel"
    natural = evaluate(lite0, objective, refs).max(dim=0).values
    flat = evaluate(lite0, objective, flats).max(dim=0).values
    live = (natural > 0) | (flat > 0)
    assert int(live.sum()) >= 6
    assert bool((result.values[live] > natural[live]).all()), (result.values, natural)
    assert bool((result.values[live] >= 0.95 * flat[live]).all()), (result.values, flat)


def test_lucent_objective_reaches_lucents_own_value(lite0):
    """(c) The same lucent objective, rendered by lucent and by interp with lucent's geometry
    (``LUCENT``: its pad as a zoom-out), reaches the same value (evaluated the same way on the
    final 64 px canvas); interp's default transforms, centred on the canvas, reach more."""
    import copy

    from lucent.optvis import objectives as lobj
    from lucent.optvis import param as lparam
    from lucent.optvis import render as lrender
    from lucent.optvis import transform as ltrans

    lucent_obj = lobj.channel("_blocks_3", 5)
    ours = obj.channel("_blocks.3", 5)
    lucent_model = copy.deepcopy(lite0.module)  # lucent leaves hooks on every module
    normalize = lite0.normalize
    ours_vals, theirs_vals, centred_vals = [], [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        imgs = lrender.render_vis(
            lucent_model,
            lucent_obj,
            lambda: lparam.image(64),
            transforms=[*ltrans.standard_transforms, normalize],
            preprocess=False,
            thresholds=(64,),
            show_image=False,
            progress=False,
            fixed_image_size=64,
        )
        image = torch.from_numpy(imgs[-1]).permute(0, 3, 1, 2)
        theirs_vals.append(float(evaluate(lite0, ours, image)[0, 0]))
        result = render(
            lite0, lucent_obj, steps=64, size=64, seed=seed, transforms=LUCENT, progress=False
        )
        ours_vals.append(float(evaluate(lite0, ours, result.images)[0, 0]))
        assert result.values[0] == pytest.approx(ours_vals[-1], rel=1e-3)
        centred = render(lite0, lucent_obj, steps=64, size=64, seed=seed, progress=False)
        centred_vals.append(float(centred.values[0]))
    ratio = np.mean(ours_vals) / np.mean(theirs_vals)
    assert 0.85 < ratio < 1.4, (ours_vals, theirs_vals)
    assert min(centred_vals) > max(ours_vals), (centred_vals, ours_vals)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_render_uses_bf16_and_channels_last_and_matches_cpu_quality(lite0):
    from interp import load_model

    gpu = load_model("efficientnet_lite0", device="cuda")
    result = render(
        gpu, obj.channel("_blocks.5", list(range(8))), steps=64, size=64, progress=False
    )
    assert result.images.device.type == "cpu" and torch.isfinite(result.values).all()
    assert result.info["device"].startswith("cuda")
    cpu = render(lite0, obj.channel("_blocks.5", list(range(8))), steps=64, size=64, progress=False)
    assert result.values.mean() > 0.7 * cpu.values.mean()
