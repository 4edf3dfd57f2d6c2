"""Nothing wrong is printed as a result: non-finite weights and outputs, dead units, folders
given as images, ranges checked up front, and early layers of a model whose later modules
fail."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from interp import load_model
from interp.errors import ImageError, NonFiniteError, RangeError
from interp.featvis import objectives as obj
from interp.featvis.render import RESTARTS, render
from interp.models.base import Preprocessing


def _simplecnn():
    return load_model("simplecnn", weights="none", device="cpu", width=0.25, input_size=32)


@pytest.mark.parametrize("how", ["all", "one value in the stem"])
def test_nan_weights_are_an_error_at_load_naming_the_tensors(tmp_path, how):
    state = {k: v.clone() for k, v in _simplecnn().module.state_dict().items()}
    names = [k for k, v in state.items() if v.is_floating_point()]
    if how == "all":
        for k in names:
            state[k].fill_(float("nan"))
    else:
        state[names[0]].view(-1)[3] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    with pytest.raises(NonFiniteError, match=names[0].replace(".", r"\.")):
        load_model("simplecnn", weights=path, device="cpu", width=0.25, input_size=32)


def test_nan_weights_through_the_cli_classify(tmp_path, capsys):
    from interp.cli import main

    model = load_model("simplecnn", weights="none", device="cpu")
    state = {k: v.clone() for k, v in model.module.state_dict().items()}
    stem = next(k for k, v in state.items() if v.is_floating_point())
    state[stem].view(-1)[0] = float("inf")
    torch.save(state, tmp_path / "inf.pt")
    argv = ["classify", "simplecnn", "--weights", str(tmp_path / "inf.pt"), "--photos"]
    assert main([*argv, "--quiet"]) == 2
    captured = capsys.readouterr()
    assert "nan" not in captured.out.lower() and stem in captured.err
    assert len(captured.err.strip().splitlines()) == 1


class _Overflow(nn.Module):
    """Finite weights, infinite output: a scale that overflows float32."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x):
        return self.head(self.relu(self.conv(x))) * 1e30 * 1e30


def test_non_finite_output_stops_classify_and_render():
    from interp.predictions import classify

    model = load_model(_Overflow(), device="cpu")
    photo = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(NonFiniteError, match="output"):
        classify(model, [photo])
    with pytest.raises(NonFiniteError, match="objective"):
        render(model, obj.logit(0), steps=3, size=16, progress=False)


def test_non_finite_training_loss_stops_the_run(tmp_path, monkeypatch, one_thread):
    from interp import train as train_mod

    real = train_mod.F.cross_entropy
    calls = {"n": 0}

    def diverging(logits, y):
        calls["n"] += 1
        loss = real(logits, y)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(train_mod.F, "cross_entropy", diverging)
    config = train_mod.TrainConfig(data="digits", epochs=1, batch_size=64, width=0.25)
    with pytest.raises(NonFiniteError, match="diverged"):
        train_mod.train(config, tmp_path / "run", progress=False)


class _Dead(nn.Module):
    """Channel 0 can never turn on (bias -1000); channel 1 is silent on grey images only."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        with torch.no_grad():
            self.conv.bias[0] = -1000.0
            self.conv.weight[1].fill_(0.1)  # sum of 27 weights 2.7: a grey (0) input gives
            self.conv.bias[1] = -0.05  # -0.05, strong contrast turns it on

    def forward(self, x):
        return self.head(self.relu(self.conv(x)))


def test_dead_unit_is_detected_restarted_and_reported(tmp_path, capsys):
    from interp.cli import main  # noqa: F401
    from interp.pipeline.atlas import visualize

    model = load_model(_Dead(), device="cpu")
    model.preprocessing = Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(16, 16))
    result = render(model, obj.channel("relu", [0, 1, 2]), steps=4, size=16, progress=False)
    assert result.dead == [True, False, False]
    assert result.restarts[0] == RESTARTS and result.values[0] == 0
    assert result.values[1] > 0  # silent on its near-grey start; a fresh start found it
    doc = visualize(
        model, "relu", "0:3", tmp_path, steps=4, size=16, reference=None, progress=False
    )
    saved = json.loads((tmp_path / "results.json").read_text())
    entry = saved["layers"][0]
    assert entry["dead_units"] == [0] == doc.layers[0]["dead_units"]
    assert entry["units"][0]["dead"] and not entry["units"][1]["dead"]


def test_folder_given_as_image_says_so_and_classify_takes_folders(tmp_path, capsys):
    from interp.cli import main
    from interp.data.images import load_image

    with pytest.raises(ImageError, match="is a folder"):
        load_image(tmp_path)
    for i in range(2):
        Image.new("RGB", (40, 40), (60 * i, 100, 200)).save(tmp_path / f"im{i}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    argv = ["classify", "simplecnn", str(tmp_path), "--weights", "none", "--top", "1", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "im0.png" in out and "im1.png" in out and "notes" not in out


@pytest.mark.parametrize(
    ("call", "word"),
    [
        (lambda m: render(m, obj.channel("relu", 0), size=0, progress=False), "size"),
        (lambda m: render(m, obj.channel("relu", 0), steps=-1, progress=False), "steps"),
        (lambda m: render(m, obj.channel("relu", 0), lr=float("nan"), progress=False), "lr"),
        (
            lambda m: __import__("interp").visualize(m, "relu", "0:1", "/nonexistent", batch=0),
            "batch",
        ),
        (lambda m: __import__("interp.train").train.TrainConfig(epochs=0), "epochs"),
        (lambda m: __import__("interp.train").train.TrainConfig(lr=-1.0), "lr"),
        (lambda m: __import__("interp").examples(m, "digits", ["relu"], k=0), "k"),
        (lambda m: __import__("interp").edge_probe(m, ["relu"], batch_size=0), "batch_size"),
        (lambda m: __import__("interp").dissect(m, "partsworld", ["relu"], quantile=2), "quantile"),
        (
            lambda m: __import__("interp").dissect(m, "partsworld", ["relu"], iou_threshold=0),
            "iou",
        ),
    ],
)
def test_api_ranges_are_checked_up_front(call, word):
    model = load_model(_Dead(), device="cpu")
    with pytest.raises(RangeError, match=word):
        call(model)


class _FailsLate(nn.Module):
    """Early layers work; the head raises (as a broken or unsupported later module would)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.broken = _Raise()

    def forward(self, x):
        return self.broken(self.relu2(self.conv2(self.relu1(self.conv1(x)))))


class _Raise(nn.Module):
    def forward(self, x):
        raise RuntimeError("this module is broken")


def test_early_layers_do_not_need_the_whole_network(tmp_path):
    from interp import edge_probe, examples, layers

    model = load_model(_FailsLate(), device="cpu")
    model.preprocessing = Preprocessing(input_size=(32, 32))
    infos = {i.name: i for i in layers(model, names=["relu1", "relu2"])}
    assert infos["relu2"].rf_size == (5, 5) and infos["relu1"].output_shape == (8, 32, 32)
    found = examples(model, "digits", ["relu1", "relu2"], k=2, n=16, progress=False)
    assert found["relu2"].top.items.shape == (8, 2)
    probed = edge_probe(model, ["relu2"], reference=None, size=32)
    assert probed["relu2"].osi.shape == (8,)
    with pytest.raises(RuntimeError, match="broken"):  # the whole network still fails
        layers(model)


def test_resume_with_other_settings_is_refused(tmp_path, one_thread):
    """--resume silently trained on with the saved settings whatever the command said."""
    from interp.errors import InterpError
    from interp.train import TrainConfig, train

    config = TrainConfig(data="digits", epochs=1, batch_size=64, width=0.25)
    train(config, tmp_path, progress=False)
    (tmp_path / "metrics.json").unlink()  # as if interrupted after its checkpoint
    with pytest.raises(InterpError, match="lr 0.003 there, 0.001 now"):
        train(TrainConfig(**{**config.__dict__, "lr": 1e-3}), tmp_path, resume=True)


def test_grey_model_on_colour_data_and_colour_model_on_grey_data():
    """A grey model given PartsWorld's colour images (and a colour one given digits) sees
    luminance (or the grey image repeated), instead of a channel-mismatch traceback."""
    from interp import examples
    from interp.models.base import Model

    torch.manual_seed(0)
    grey = Model(
        module=nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()),
        name="grey",
        weights_source="in memory",
        preprocessing=Preprocessing(mean=(0.5,), std=(0.5,), input_size=(32, 32), channels=1),
    )
    found = examples(grey, "partsworld", ["1"], k=2, n=8, size=32, progress=False)
    assert found["1"].top.items.shape == (4, 2)
    pixels = torch.rand(2, 3, 8, 8)
    luminance = (pixels * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, True)
    assert torch.allclose(grey.normalize(pixels), (luminance - 0.5) / 0.5)
    colour = load_model(_Dead(), device="cpu")
    assert colour.normalize(torch.rand(2, 1, 8, 8)).shape == (2, 3, 8, 8)
