"""Shared fixtures. Tests never download: INTERP_OFFLINE=1, an empty TORCH_HOME and an empty
Hugging Face hub cache (HF_HUB_CACHE, where timm's weights are looked up)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator

import pytest
import torch
from torch import nn

os.environ["INTERP_OFFLINE"] = "1"
# no test reads or writes the user-level cache unless it points INTERP_CACHE at a tmp folder
os.environ["INTERP_CACHE"] = "off"
# under pytest-xdist every worker takes its share of the cores (scripts/test.sh starts one
# worker per core): more threads than cores slows everything down
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_threads = max(1, min(2, os.cpu_count() or 1) // _workers)
torch.set_num_threads(_threads)
if _workers > 1:
    # and so do the processes the tests start (the demo, torchrun, the device-check dry run):
    # a subprocess with a thread per core beside another busy worker runs 2-3x slower
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, str(_threads))


@pytest.fixture(autouse=True)
def _empty_torch_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test sees an empty torch hub cache and an empty Hugging Face hub cache (no weights
    cached by the developer leak in)."""
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "huggingface" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("INTERP_OFFLINE", "1")
    yield home


@pytest.fixture
def one_thread():
    """One torch thread for the test (restored after): tiny networks run far faster so."""
    from interp.experiments import limited_threads

    with limited_threads(1):
        yield


@pytest.fixture(scope="session")
def lite0():
    """The embedded default, pretrained, on CPU."""
    from interp import load_model

    return load_model("efficientnet_lite0", device="cpu")


@pytest.fixture(scope="session")
def resnet18():
    """torchvision resnet18, random init (no download), on CPU."""
    from interp import load_model

    return load_model("torchvision:resnet18", weights="none", device="cpu")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory: pytest.TempPathFactory):
    """The skimage.data photos written as PNG files."""
    from interp.data import save_photos

    out = tmp_path_factory.mktemp("photos")
    save_photos(out)
    return out


@pytest.fixture(scope="session")
def quick_report(tmp_path_factory: pytest.TempPathFactory):
    """A quick report (and its explorer site) of a small random-init CNN, shared by the report
    and explorer tests: ``(model, out, index.html)``. Its name needs escaping."""
    import shutil

    from filelock import FileLock

    import interp
    from interp.pipeline.report import report

    model = interp.load_model("simplecnn", weights="none", seed=0, width=0.25, input_size=32)
    model.name = "tiny <cnn> & co"  # escaping
    out = tmp_path_factory.mktemp("report")
    # under xdist the first worker to get here builds it once for all (the run's shared temp
    # folder, a lock); every worker then works on its own copy
    base = tmp_path_factory.getbasetemp()
    shared = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "quick-report"
    with FileLock(str(shared) + ".lock"):
        if not (shared / "index.html").is_file():
            page = report(model, shared, quick=True, progress=False)
            assert page == shared / "index.html"
        shutil.copytree(shared, out, dirs_exist_ok=True)
    return model, out, out / "index.html"


def all_hooks(module: nn.Module) -> int:
    """Number of forward (pre-)hooks and backward hooks on ``module`` and its children."""
    total = 0
    for m in module.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks)
        total += len(m._backward_hooks) + len(getattr(m, "_backward_pre_hooks", {}))
        total += len(getattr(m, "_forward_hooks_with_kwargs", {}))
    return total


class Boom(nn.Module):
    """A module that raises when run."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def tiny_cnn(num_classes: int = 4) -> nn.Sequential:
    """A 3-conv CNN with known receptive fields: 3x3 (3), then 3x3 stride 2 (5, stride 2),
    then 3x3 dilation 2 (13 = 5 + 4 * 2, stride 2)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, num_classes),
    )


@pytest.fixture
def silent_server() -> Iterator[int]:
    """The port of a loopback server that accepts connections and never answers: a download
    or probe against it must give up after its own timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conns.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for c in conns:
            c.close()
        server.close()
