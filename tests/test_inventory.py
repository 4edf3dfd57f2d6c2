"""Layer inventory: shapes and *measured* receptive fields checked against known answers."""

from __future__ import annotations

import torchvision
from conftest import tiny_cnn
from torch import nn

from interp import layers
from interp.models.registry import as_model


def _by_name(infos):
    return {i.name: i for i in infos}


def test_known_receptive_fields_of_a_tiny_cnn():
    infos = _by_name(layers(as_model(tiny_cnn()), input_size=(32, 32)))
    assert infos["0"].rf_size == (3, 3) and infos["0"].rf_stride == (1, 1)
    assert infos["1"].rf_size == (3, 3)  # ReLU inherits from its conv
    assert infos["2"].rf_size == (5, 5) and infos["2"].rf_stride == (2, 2)
    assert infos["4"].rf_size == (13, 13) and infos["4"].rf_stride == (2, 2)  # 5 + (5-1)*2
    assert infos["4"].output_shape == (8, 16, 16) and infos["4"].channels == 8
    assert infos["8"].output_shape == (4,) and infos["8"].rf_size is None
    assert infos["4"].lucent_name == "4"


def test_resnet18_matches_the_textbook_arithmetic(resnet18):
    infos = _by_name(layers(resnet18))
    expected = {
        "conv1": ((7, 7), (2, 2)),
        "maxpool": ((11, 11), (4, 4)),
        "layer1.0.conv1": ((19, 19), (4, 4)),
        "layer1": ((43, 43), (4, 4)),
        "layer2.0.conv1": ((51, 51), (8, 8)),
    }
    for name, (size, stride) in expected.items():
        assert (infos[name].rf_size, infos[name].rf_stride) == (size, stride), name
    assert infos["layer4"].output_shape == (512, 7, 7) and infos["layer4"].rf_clipped
    assert infos["layer1.0.conv1"].lucent_name == "layer1_0_conv1"
    assert infos["fc"].output_shape == (1000,)


def test_valid_padding_alexnet_strides_are_measured_not_guessed():
    model = as_model(torchvision.models.alexnet())
    infos = _by_name(layers(model, names=["features.0", "features.2", "features.3"]))
    assert infos["features.0"].rf_size == (11, 11) and infos["features.0"].rf_stride == (4, 4)
    assert infos["features.2"].rf_size == (19, 19) and infos["features.2"].rf_stride == (8, 8)
    assert infos["features.3"].rf_size == (51, 51)  # 5x5 conv after stride 8
    # 224 px in, 55 px out: the size ratio (4.07) would be wrong; the measured stride is 4


def test_efficientnet_lite0_lists_every_block(lite0):
    infos = layers(lite0)
    by = _by_name(infos)
    blocks = [f"_blocks.{i}" for i in range(16)]
    assert all(b in by and by[b].output_shape and by[b].rf_size for b in blocks)
    # TF "same" padding, strides 2 at blocks 1, 3, 5, 11 (stem stride 2)
    assert by["_conv_stem"].rf_size == (3, 3) and by["_conv_stem"].rf_stride == (2, 2)
    assert by["_blocks.0"].rf_size == (7, 7)
    assert by["_blocks.1"].rf_size == (11, 11) and by["_blocks.1"].rf_stride == (4, 4)
    assert by["_blocks.3"].rf_size == (35, 35) and by["_blocks.3"].rf_stride == (8, 8)
    assert by["_blocks.4"].rf_size == (67, 67)
    assert by["_blocks.15"].output_shape == (320, 7, 7) and by["_blocks.15"].rf_stride == (32, 32)
    assert [i.order for i in infos if i.order is not None] == sorted(
        i.order for i in infos if i.order is not None
    )
    assert not lite0.module.training


def test_inventory_restores_state_and_leaves_no_hooks():
    from conftest import all_hooks

    net = tiny_cnn().train()
    flags = [p.requires_grad for p in net.parameters()]
    layers(as_model(net), input_size=(16, 16))
    assert net.training and all_hooks(net) == 0
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.grad is None for p in net.parameters())


def test_grey_input_models():
    net = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU())
    from interp import Model, Preprocessing

    model = Model(
        net, "grey", Preprocessing(mean=(0.5,), std=(0.5,), channels=1, input_size=(28, 28))
    )
    infos = _by_name(layers(model))
    assert infos["0"].rf_size == (5, 5) and infos["0"].output_shape == (4, 24, 24)
    assert model.example_input().shape == (1, 1, 28, 28)


def test_receptive_fields_are_measured_also_under_no_grad():
    """The RF gradient runs under its own enable_grad (before the shared rf_gradients, the
    inventory summed the units outside it and measured nothing under torch.no_grad())."""
    import torch

    model = as_model(tiny_cnn())
    with torch.no_grad():
        infos = _by_name(layers(model, input_size=(32, 32)))
    assert infos["4"].rf_size == (13, 13) and infos["4"].rf_stride == (2, 2)


def test_rf_box_smallest_canvas_and_centres_agree_with_the_inventory():
    from interp.inventory import rf_box, rf_centres, smallest_canvas

    model = as_model(tiny_cnn())
    info = _by_name(layers(model, input_size=(32, 32)))["4"]
    canvas = smallest_canvas(model, info, 32)
    assert canvas < 32 and canvas % 2 == 0  # a multiple of the stride
    top, bottom, left, right = rf_box(model, "4", canvas)
    assert (bottom - top + 1, right - left + 1) == info.rf_size
    assert 0 < top and bottom < canvas - 1  # unclipped
    cy, cx = rf_centres(model, ["4"], canvas)["4"]
    assert (cy, cx) == ((top + bottom) / 2, (left + right) / 2)
