"""Checkpoint loading: safe by default, clear errors for bad, mismatched or truncated files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from interp import CheckpointError, load_model, save_checkpoint
from interp.models.checkpoints import read_checkpoint, strip_prefixes


@pytest.fixture
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


def _same(a, b) -> bool:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a(x), b(x), atol=1e-6)


def test_state_dict_onto_an_architecture(tmp_path, resnet):
    path = tmp_path / "sd.pt"
    torch.save(resnet.state_dict(), path)
    model = load_model("torchvision:resnet18", weights=str(path), num_classes=10, device="cpu")
    assert _same(model.module, resnet)
    assert model.weights_source == str(path.resolve())


def test_wrapper_prefixes_are_stripped(tmp_path, resnet):
    path = tmp_path / "ddp.pth"
    state = {f"module._orig_mod.{k}": v for k, v in resnet.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = load_model("torchvision:resnet18", weights=path, num_classes=10, device="cpu")
    assert _same(model.module, resnet)
    assert strip_prefixes({"_orig_mod.module.a": 1}) == {"a": 1}


def test_mismatch_lists_missing_unexpected_and_misshaped_keys(tmp_path, resnet):
    state = resnet.state_dict()
    state.pop("layer1.0.conv1.weight")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:  # num_classes 1000 vs 10: fc mis-shaped
        load_model("torchvision:resnet18", weights=path, device="cpu")
    text = str(info.value)
    assert "\n" not in text  # one line; the full key lists are the detail (--verbose)
    assert "1 missing keys (layer1.0.conv1.weight)" in text
    assert "1 unexpected keys (extra.weight)" in text
    assert "fc.weight: checkpoint (10, 512) vs model (1000, 512)" in text
    assert "layer1.0.conv1.weight" in info.value.detail


def test_full_module_pickle_needs_explicit_trust(tmp_path, resnet):
    path = tmp_path / "full.pt"
    torch.save(resnet, path)
    with pytest.raises(CheckpointError, match="--trust-checkpoint") as info:
        load_model(str(path), device="cpu")
    text = str(info.value)  # one line, naming the code, without PyTorch's own text
    assert "\n" not in text and "\x1b" not in text and "torchvision.models.resnet.ResNet" in text
    assert "Weights only load failed" not in text
    model = load_model(str(path), device="cpu", trust_checkpoint=True)
    assert _same(model.module, resnet)


def test_truncated_and_empty_files(tmp_path, resnet):
    path = tmp_path / "cut.pt"
    torch.save(resnet.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model("torchvision:resnet18", weights=path, num_classes=10, device="cpu")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(empty)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match="truncated"):
        read_checkpoint(garbage)


# seeds whose random bytes make torch's unpickler raise UnpicklingError (0), IndexError (17),
# UnicodeDecodeError (54) and KeyError (62): os.urandom found the IndexError one in CI's stead
RANDOM = ["random-0", "random-17", "random-54", "random-62"]


@pytest.mark.parametrize("kind", [*RANDOM, "truncated module", "truncated state dict"])
@pytest.mark.parametrize("where", ["model", "weights"])
def test_corrupt_file_is_called_corrupt_never_unsafe(tmp_path, resnet, kind, where):
    """Random bytes or a cut copy is a damaged file: say so, never advise trusting it."""
    path = tmp_path / "damaged.pt"
    if kind.startswith("random"):
        path.write_bytes(np.random.default_rng(int(kind.split("-")[1])).bytes(5000))
    else:
        torch.save(resnet if kind == "truncated module" else resnet.state_dict(), path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as info:
        if where == "model":
            load_model(str(path), device="cpu")
        else:
            load_model("torchvision:resnet18", weights=path, num_classes=10, device="cpu")
    text = str(info.value)
    assert "corrupt" in text and "trust" not in text, text
    assert "\n" not in text and "Weights only" not in text


def test_missing_file_and_bare_state_dict_as_spec(tmp_path, resnet):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(str(tmp_path / "nope.pt"))
    path = tmp_path / "bare.pt"
    torch.save(resnet.state_dict(), path)
    with pytest.raises(CheckpointError, match="--weights"):
        load_model(str(path))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_interp_checkpoint_round_trip(tmp_path, resnet, suffix):
    path = save_checkpoint(
        tmp_path / f"run{suffix}",
        resnet,
        arch="torchvision:resnet18",
        arch_kwargs={"num_classes": 10},
        preprocessing={"mean": [0.5] * 3, "std": [0.25] * 3, "input_size": [64, 64]},
        class_names=[f"c{i}" for i in range(10)],
    )
    assert not list(tmp_path.glob("*.tmp"))
    model = load_model(str(path), device="cpu")
    assert _same(model.module, resnet)
    assert model.input_size == (64, 64) and model.class_names[3] == "c3"
    assert model.preprocessing.mean == (0.5, 0.5, 0.5)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still supported
def test_torchscript(tmp_path, resnet):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(resnet, torch.zeros(1, 3, 64, 64)), path)
    model = load_model(str(path), device="cpu")
    assert _same(model.module, resnet)
