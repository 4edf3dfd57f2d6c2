"""Training: runs load back as models, resume is exact, init options."""

from __future__ import annotations

import json

import pytest
import torch

from interp import load_model
from interp.train import TrainConfig, train

TINY = dict(data="partsworld", n=96, size=32, epochs=3, batch_size=32, width=0.25)


def test_run_folder_loads_back_and_classifies(tmp_path):
    metrics = train(TrainConfig(**TINY), tmp_path / "run", progress=False)
    assert len(metrics["epochs"]) == 3 and 0 <= metrics["test_acc"] <= 1
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test_acc"] == metrics["test_acc"]
    model = load_model(str(tmp_path / "run"), device="cpu")
    assert model.class_names[0] == "face" and model.input_size == (32, 32)
    with torch.no_grad():
        assert model.module(model.example_input(2)).shape == (2, 6)
    with pytest.raises(FileExistsError):
        train(TrainConfig(**TINY), tmp_path / "run", progress=False)

    from PIL import Image

    from interp.cli import main

    image = tmp_path / "scene.png"
    Image.new("RGB", (40, 40), (200, 30, 30)).save(image)
    assert main(["layers", str(tmp_path / "run"), "--no-rf", "--quiet"]) == 0
    assert main(["classify", str(tmp_path / "run"), str(image), "--quiet"]) == 0
    assert main(["train", "--data", "digits", "--out", str(tmp_path / "run"), "--quiet"]) == 2


def test_resume_after_interruption_gives_the_same_weights(tmp_path, monkeypatch):
    full = tmp_path / "full"
    train(TrainConfig(**TINY), full, progress=False)

    import interp.train as tr

    calls = {"n": 0}
    real = tr._evaluate

    def crash_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # the second epoch's training ran, its checkpoint was not written
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tr, "_evaluate", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**TINY), tmp_path / "cut", progress=False)
    monkeypatch.setattr(tr, "_evaluate", real)
    assert not list((tmp_path / "cut").glob("*.tmp"))
    train(TrainConfig(**TINY), tmp_path / "cut", resume=True, progress=False)
    a = torch.load(full / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_constant_init_makes_units_identical(tmp_path):
    config = TrainConfig(**{**TINY, "epochs": 1, "init": "constant", "augment": False})
    train(config, tmp_path / "c", progress=False)
    model = load_model(str(tmp_path / "c"), device="cpu")
    w = model.module.features.conv2.weight
    assert torch.equal(w[0], w[-1])  # symmetry survives gradient descent


def test_snapshots_and_init_from_another_run(tmp_path):
    train(TrainConfig(**{**TINY, "snapshots": [2, 5]}), tmp_path / "a", progress=False)
    assert sorted(p.name for p in (tmp_path / "a" / "snapshots").iterdir()) == [
        "step_0000002.pt",
        "step_0000005.pt",
    ]
    donor = load_model(str(tmp_path / "a"), device="cpu").module.features.conv1.weight
    config = TrainConfig(**{**TINY, "epochs": 1, "init": f"from:{tmp_path / 'a'}:1:frozen"})
    train(config, tmp_path / "b", progress=False)
    got = load_model(str(tmp_path / "b"), device="cpu").module.features.conv1.weight
    assert torch.equal(donor, got)  # frozen: copied and never updated


def test_stem_stride_and_bn_momentum_are_part_of_the_run(tmp_path):
    """``stem_stride`` changes the architecture (its first convolution's stride), so the
    checkpoint, its reload and its random-init controls all keep it; ``bn_momentum`` is the
    training's alone. A torchvision MobileNet at stride 1 keeps 2x the resolution."""

    from interp.errors import RangeError
    from interp.probes.hierarchy import random_control

    config = TrainConfig(**{**TINY, "epochs": 1, "stem_stride": 2, "bn_momentum": 0.5})
    train(config, tmp_path / "run", progress=False)
    model = load_model(str(tmp_path / "run"), device="cpu")
    first = next(m for m in model.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.stride == (2, 2) and model.info["arch_kwargs"]["stem_stride"] == 2
    control, _ = random_control(model, 3)
    first = next(m for m in control.module.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.stride == (2, 2)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["stem_stride"] == 2 and saved["bn_momentum"] == 0.5
    x = torch.rand(1, 3, 48, 48)
    shapes = []
    for stride in (None, 1):
        kw = {} if stride is None else {"stem_stride": stride}
        net = load_model("torchvision:mobilenet_v3_small", weights="none", device="cpu", **kw)
        shapes.append(net.module.features(x).shape[-1])
    assert shapes == [2, 3]  # 48 px: 32x down to 2 (rounded up), 16x to 3
    with pytest.raises(RangeError, match="stem_stride"):
        TrainConfig(**{**TINY, "stem_stride": 0})
    with pytest.raises(RangeError, match="stem_stride"):
        load_model(str(tmp_path / "run"), device="cpu", stem_stride=1)
