"""Model specs, the torchvision weights path (cache, offline, bounded download) and devices."""

from __future__ import annotations

import threading
import time

import pytest
import torch

import interp
from interp import (
    DeviceError,
    UnknownModelError,
    WeightsUnavailableError,
    list_models,
    load_model,
)
from interp.models.download import fetch_weights, hub_cache_path


def test_list_models_patterns():
    every = list_models()
    assert "efficientnet_lite0" in every
    assert "lucent:inceptionv1" in every
    assert "torchvision:resnet18" in every and "torchvision:vit_b_16" in every
    assert list_models("torchvision:resnet1*") == [
        "torchvision:resnet101",
        "torchvision:resnet152",
        "torchvision:resnet18",
    ]
    # timm (dev extras) has lite0s of its own
    assert {n for n in list_models("lite0") if not n.startswith("timm:")} == {"efficientnet_lite0"}
    assert list_models("no-such-thing") == []


def test_loaded_model_carries_everything(lite0):
    assert not lite0.module.training
    assert lite0.device == torch.device("cpu")
    assert lite0.input_size == (224, 224)
    assert lite0.preprocessing.channels == 3
    assert len(lite0.class_names) == 1000 and lite0.class_names[285] == "Egyptian cat"
    assert lite0.weights_source.endswith(".pth")
    assert lite0.class_index("espresso") == 967


def test_unknown_model_suggests_near_names():
    with pytest.raises(UnknownModelError, match="torchvision:resnet18"):
        load_model("resnet18")
    with pytest.raises(UnknownModelError, match="efficientnet_lite0"):
        load_model("efficientnet_lite")
    with pytest.raises(UnknownModelError, match="torchvision:resnet18"):
        load_model("torchvision:resnet19")


def test_random_init_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("torchvision:resnet18", weights="none", device="cpu")
    assert torch.equal(torch.rand(3), expected)


def test_torchvision_offline_fails_at_once_with_the_path(_empty_torch_home):
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("torchvision:resnet18")
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    expected = _empty_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert str(expected) in message
    assert "ResNet18_Weights.IMAGENET1K_V1" in message
    assert "--weights PATH" in message


def test_torchvision_loads_a_file_placed_in_the_cache(_empty_torch_home):
    import torchvision

    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    path = hub_cache_path(url)
    assert path.parent == _empty_torch_home / "hub" / "checkpoints"
    reference = torchvision.models.resnet18()
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = load_model("torchvision:resnet18", device="cpu")
    assert model.weights_source == str(path)
    assert torch.equal(model.module.conv1.weight, reference.conv1.weight)
    assert model.preprocessing.resize_size == 256 and model.class_names[0] == "tench"


def test_torchvision_named_weights_and_bad_names():
    with pytest.raises(UnknownModelError, match="IMAGENET1K_V1"):
        load_model("torchvision:resnet18", weights="IMAGENET9K")
    with pytest.raises(WeightsUnavailableError, match="IMAGENET1K_V2"):
        load_model("torchvision:resnet50", weights="IMAGENET1K_V2")


def test_torchvision_kwargs_reach_the_builder():
    model = load_model("torchvision:resnet18", weights="none", num_classes=7, device="cpu")
    assert model.module.fc.out_features == 7
    assert model.class_names is None


def test_download_has_a_bounded_timeout(tmp_path, silent_server):
    """A server that accepts but never answers: the attempt gives up after the timeout."""
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="place the file") as info:
        fetch_weights(
            f"http://127.0.0.1:{silent_server}/w-abcdef12.pth", "test", offline=False, timeout=1.0
        )
    assert time.perf_counter() - start < 10.0
    assert "w-abcdef12.pth" in str(info.value)
    assert not list(hub_cache_path("http://x/w-abcdef12.pth").parent.glob("*.part"))


def test_lucent_inceptionv1_random_init_and_offline_message():
    model = load_model("lucent:inceptionv1", weights="none", device="cpu")
    with torch.no_grad():
        out = model.module(model.example_input())
    assert out.shape == (1, 1008)
    # lucid's InceptionV1 expects x * 255 - 117
    assert model.normalize(torch.ones(1, 3, 1, 1)).flatten()[0].item() == pytest.approx(138.0)
    with pytest.raises(WeightsUnavailableError, match="inception5h.pth"):
        load_model("lucent:inceptionv1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(DeviceError, match="--device cpu"):
        load_model("efficientnet_lite0", device="cuda")
    with pytest.raises(DeviceError):
        interp.resolve_device("cuda:0")
    assert interp.resolve_device("auto") == torch.device("cpu")


def test_bad_device_name():
    with pytest.raises(DeviceError, match="auto"):
        interp.resolve_device("tpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_auto_picks_cuda_when_present():
    model = load_model("efficientnet_lite0")
    assert model.device.type == "cuda"


def test_download_over_loopback_checks_the_hash_and_writes_atomically(tmp_path):
    """The real download path, served from this machine: hash in the name is verified."""
    import functools
    import hashlib
    import http.server

    payload = b"weights" * 1000
    digest = hashlib.sha256(payload).hexdigest()
    (tmp_path / f"good-{digest[:8]}.pth").write_bytes(payload)
    (tmp_path / "bad-00000000.pth").write_bytes(payload)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = fetch_weights(f"{base}/good-{digest[:8]}.pth", "t", offline=False, quiet=True)
        assert got.read_bytes() == payload and got == hub_cache_path(
            f"{base}/good-{digest[:8]}.pth"
        )
        with pytest.raises(WeightsUnavailableError, match="SHA-256"):
            fetch_weights(f"{base}/bad-00000000.pth", "t", offline=False, quiet=True)
        assert sorted(p.name for p in got.parent.iterdir()) == [got.name]
    finally:
        server.shutdown()
        server.server_close()


def test_class_lookup_by_name_and_errors(lite0):
    from interp import UnknownClassError

    assert lite0.class_index("Egyptian") == 285  # unique prefix
    assert lite0.class_index("7") == 7 and lite0.class_index(3) == 3
    with pytest.raises(UnknownClassError, match="espresso"):
        lite0.class_index("expresso")


def test_simplecnn_spec_builds_a_seeded_small_cnn():
    a = load_model("simplecnn", num_classes=6, device="cpu", seed=1)
    b = load_model("simplecnn", num_classes=6, device="cpu", seed=1)
    assert torch.equal(a.module.features.conv1.weight, b.module.features.conv1.weight)
    grey = load_model("simplecnn", num_classes=10, in_channels=1, input_size=32, device="cpu")
    assert grey.preprocessing.channels == 1 and grey.input_size == (32, 32)
    with torch.no_grad():
        assert grey.module(grey.example_input(2)).shape == (2, 10)
