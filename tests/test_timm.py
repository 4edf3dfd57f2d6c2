"""timm specs: names, preprocessing from the pretrained config, offline-safe weights (the hub
cache, the placement the error names, --weights PATH, tags), stages as the hierarchy's default
layers, BatchNormAct folding, and the message without timm. Nothing here downloads: the hub
cache is an empty temporary folder (tests/conftest.py) and a socket guard refuses any
connection off this machine. The contract over capture, inventory, render, examples,
dissection and the hierarchy (model left unchanged) runs on four timm families in
tests/test_model_matrix.py."""

from __future__ import annotations

import math
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

import interp
from interp import CheckpointError, UnknownModelError, WeightsUnavailableError, load_model

timm = pytest.importorskip("timm")

from interp.models import timm_zoo  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    """Connections off this machine fail the test (loopback stays allowed)."""
    real = socket.socket.connect

    def refuse(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else ""
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1"):
            raise AssertionError(f"a test tried to connect to {address}")
        return real(self, address)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        yield


def test_names_are_listed_with_and_without_tags():
    names = interp.list_models("timm:convnext_atto*")
    assert "timm:convnext_atto" in names and "timm:convnext_atto.d2_in1k" in names
    assert "timm:regnetx_002" in interp.list_models("regnetx_00*")
    assert "timm:<name>" in interp.models.describe_models()
    with pytest.raises(UnknownModelError, match="timm:resnet18"):
        load_model("timm:resnt18", weights="none", device="cpu")


@pytest.mark.parametrize(
    "name", ["resnet18", "resnet18.tv_in1k", "convnext_atto", "inception_v4", "regnetx_002"]
)
def test_preprocessing_equals_the_pretrained_config(name):
    model = load_model(f"timm:{name}", weights="none", device="cpu")
    config = timm.data.resolve_model_data_config(model.module)
    prep = model.preprocessing
    assert prep.mean == tuple(config["mean"]) and prep.std == tuple(config["std"])
    assert (prep.channels, *prep.input_size) == tuple(config["input_size"])
    assert prep.interpolation == config["interpolation"]
    assert prep.resize_size == math.floor(config["input_size"][1] / config["crop_pct"])
    assert model.info["crop_pct"] == config["crop_pct"]


def test_tags_carry_their_own_preprocessing_and_class_names():
    a1 = load_model("timm:resnet18", weights="none", device="cpu")  # default tag: a1_in1k
    tv = load_model("timm:resnet18.tv_in1k", weights="none", device="cpu")
    assert a1.info["pretrained_tag"] == "resnet18.a1_in1k"
    assert (a1.preprocessing.resize_size, a1.preprocessing.interpolation) == (235, "bicubic")
    assert (tv.preprocessing.resize_size, tv.preprocessing.interpolation) == (256, "bilinear")
    assert a1.class_names[0] == "tench" and len(a1.class_names) == 1000
    seven = load_model("timm:resnet18", weights="none", device="cpu", num_classes=7)
    assert seven.module.fc.out_features == 7 and seven.class_names is None


def test_offline_error_names_the_file_and_the_cache_path(_empty_torch_home):
    cache = _empty_torch_home / "huggingface" / "hub"
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("timm:convnext_atto", device="cpu")  # INTERP_OFFLINE=1 (conftest)
    assert time.perf_counter() - start < 5.0
    message = str(info.value)
    repo = cache / "models--timm--convnext_atto.d2_in1k"
    assert str(repo / "snapshots" / "manual" / "model.safetensors") in message
    assert str(repo / "refs" / "main") in message
    assert "--weights PATH" in message and "--weights none" in message


def test_a_file_placed_where_the_error_says_is_loaded_offline(_empty_torch_home):
    """The error's instructions, followed by hand, give a model with exactly those weights."""
    from safetensors.torch import save_file

    with pytest.raises(WeightsUnavailableError):
        load_model("timm:regnetx_002", device="cpu")
    reference = load_model("timm:regnetx_002", weights="none", seed=3, device="cpu").module
    path, ref = timm_zoo.hf_placement("timm/regnetx_002.pycls_in1k", "model.safetensors")
    assert path.is_relative_to(_empty_torch_home)
    path.parent.mkdir(parents=True)
    ref.parent.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    ref.write_text("manual")
    model = load_model("timm:regnetx_002", device="cpu", offline=True)
    assert model.weights_source == str(path)
    assert model.info["weights"] == "regnetx_002.pycls_in1k"
    for key, value in reference.state_dict().items():
        assert torch.equal(model.module.state_dict()[key], value), key
    # a pickle that is not plain tensors is refused before timm reads it
    bad = path.with_name("pytorch_model.bin")
    path.unlink()
    torch.save({"x": torch.nn.Linear(1, 1)}, bad)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model("timm:regnetx_002", device="cpu", offline=True)


def test_weights_path_and_mismatch(tmp_path):
    from safetensors.torch import save_file

    reference = load_model("timm:mobilenetv3_small_050", weights="none", seed=5, device="cpu")
    file = tmp_path / "mine.safetensors"
    save_file({k: v.contiguous() for k, v in reference.module.state_dict().items()}, str(file))
    model = load_model("timm:mobilenetv3_small_050", weights=str(file), device="cpu")
    assert torch.equal(model.module.conv_stem.weight, reference.module.conv_stem.weight)
    assert model.info["family"] == "timm" and model.weights_source == str(file.resolve())
    with pytest.raises(CheckpointError):
        load_model("timm:regnetx_002", weights=str(file), device="cpu")


def test_weights_tag_and_bad_tag():
    with pytest.raises(UnknownModelError, match="a1_in1k.*tv_in1k"):
        load_model("timm:resnet18", weights="in22k_nope", device="cpu")
    with pytest.raises(WeightsUnavailableError, match="models--timm--resnet18.tv_in1k"):
        load_model("timm:resnet18", weights="tv_in1k", device="cpu")


def test_unreachable_hub_fails_fast_with_the_placement(monkeypatch):
    monkeypatch.setattr(timm_zoo, "_probe", lambda url, timeout: None)
    with pytest.raises(WeightsUnavailableError, match="could not be reached.*snapshots"):
        load_model("timm:regnetx_002", device="cpu", offline=False)


def test_probe_is_bounded_by_its_timeout(silent_server):
    """A server that accepts and never answers: the probe gives up after the timeout."""
    start = time.perf_counter()
    assert timm_zoo._probe(f"http://127.0.0.1:{silent_server}/model.safetensors", 0.5) is None
    assert time.perf_counter() - start < 5.0


def test_hierarchy_and_atlas_defaults_follow_the_declared_stages():
    from interp.inventory import default_layers
    from interp.probes.hierarchy import default_hierarchy_layers

    resnet = load_model("timm:resnet18", weights="none", device="cpu")
    assert resnet.info["feature_layers"] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert default_hierarchy_layers(resnet) == resnet.info["feature_layers"]
    assert default_layers(resnet)[0] == "layer1.0"  # the atlas still covers every block
    regnet = load_model("timm:regnetx_002", weights="none", device="cpu")
    # RegNet's stages are not containers: the declared stages stand in for its blocks
    assert default_layers(regnet) == ["stem", "s1", "s2", "s3", "s4"]
    assert default_hierarchy_layers(regnet) == ["stem", "s1", "s2", "s3", "s4"]


def test_batchnormact_is_folded_with_its_activation():
    """timm's BatchNormAct2d normalizes, then applies its activation: folding keeps the
    activation (before, the agreement check refused every such fold)."""
    model = load_model("timm:efficientnet_b0", weights="none", device="cpu")
    torch.manual_seed(0)
    result = interp.render(model, "blocks.2:0", steps=2, size=64, progress=False)
    assert result.info["folded_batchnorms"] > 10
    unfolded = interp.render(model, "blocks.2:0", steps=2, size=64, fold_bn=False, progress=False)
    assert torch.allclose(result.values, unfolded.values, rtol=1e-3, atol=1e-6)


def test_without_timm_a_spec_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(UnknownModelError, match=r"pip install 'interp\[timm\]'"):
        load_model("timm:resnet18", weights="none", device="cpu")
    assert "efficientnet_lite0" in interp.list_models()  # the other families still list


def test_cli_lists_and_inspects_timm_models(capsys):
    from interp.cli import main

    assert main(["models", "timm:convnext_at*", "--quiet"]) == 0
    out = capsys.readouterr().out.split()
    assert "timm:convnext_atto" in out and all(n.startswith("timm:convnext_at") for n in out)
    assert main(["layers", "timm:regnetx_002", "--weights", "none", "--device", "cpu"]) == 0
    assert "s1.b1.conv1" in capsys.readouterr().out
