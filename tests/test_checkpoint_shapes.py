"""Checkpoints in the shapes people really save, through the CLI: each is one line, status 2.

``torch.save(model)`` of small ``nn.Sequential``s, a torchvision and a timm model, a class
defined in the saving script (``__main__.Net``), a training dict holding a model, protocol 2
(torch's default) and 4, the legacy (non-zip) format and TorchScript: a complete file is
*unsafe* (names the code, says how to load it) and never *corrupt*; each cut short at several
points is *corrupt* and never advised to be trusted, with or without ``--trust-checkpoint``.
The unsafe-or-corrupt verdict once hung on the names a pickle referenced, so a module made
only of ``torch.nn`` classes was called corrupt (issue 33).
"""

from __future__ import annotations

import importlib.util
import sys
import warnings

import pytest
import torch
import torchvision
from torch import nn

from interp import CheckpointError, load_model
from interp.cli import main
from interp.models.checkpoints import read_checkpoint


def _sequential() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


def _training_dict() -> dict:
    model = _sequential()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.zeros(1, 3, 8, 8)).sum().backward()
    optimizer.step()
    return {
        "model": model,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
    }


def _save_main_class(path) -> None:
    """``torch.save(Net())`` as a script that defines ``class Net`` writes it: the pickle
    names ``__main__.Net``, which is gone once that script has ended."""
    main_module = sys.modules["__main__"]
    net = type("Net", (nn.Module,), {"__module__": "__main__"})
    model = net()
    model.conv = nn.Conv2d(3, 4, 3)
    main_module.Net = net
    try:
        torch.save(model, path)
    finally:
        del main_module.Net


HAS_TIMM = importlib.util.find_spec("timm") is not None

#: shape -> (how it is written, the first global its unsafe message names)
SHAPES = {
    "sequential": (lambda p: torch.save(_sequential(), p), "container.Sequential"),
    "sequential-protocol-2": (
        lambda p: torch.save(_sequential(), p, pickle_protocol=2),
        "container.Sequential",
    ),
    "sequential-protocol-4": (
        lambda p: torch.save(_sequential(), p, pickle_protocol=4),
        "container.Sequential",
    ),
    "sequential-legacy": (
        lambda p: torch.save(_sequential(), p, _use_new_zipfile_serialization=False),
        "container.Sequential",
    ),
    "torchvision": (
        lambda p: torch.save(torchvision.models.resnet18(num_classes=10), p),
        "torchvision.models.resnet.ResNet",
    ),
    "timm": (
        lambda p: torch.save(
            __import__("timm").create_model("resnet10t", pretrained=False, num_classes=10), p
        ),
        "timm.models.resnet.ResNet",
    ),
    "main-class": (_save_main_class, "__main__.Net"),
    "training-dict": (lambda p: torch.save(_training_dict(), p), "container.Sequential"),
    "training-dict-legacy": (
        lambda p: torch.save(_training_dict(), p, _use_new_zipfile_serialization=False),
        "container.Sequential",
    ),
}


def _script(path) -> None:
    with warnings.catch_warnings():  # torch.jit is deprecated, still supported
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(_sequential()), path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Every shape written once: ``{shape: path}``."""
    root = tmp_path_factory.mktemp("shapes")
    out = {}
    for shape, (save, _) in SHAPES.items():
        if shape == "timm" and not HAS_TIMM:
            continue
        out[shape] = root / f"{shape}.pt"
        save(out[shape])
    out["torchscript"] = root / "torchscript.pt"
    _script(out["torchscript"])
    out["state-dict-protocol-4"] = root / "state-dict-protocol-4.pt"
    torch.save(_sequential().state_dict(), out["state-dict-protocol-4"], pickle_protocol=4)
    return out


def _cli(argv, capsys) -> tuple[int, str]:
    """Run ``interp`` and return its status and its one stderr line (checked to be one)."""
    status = main([*argv, "--no-rf", "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("interp layers: error: "), err
    assert "Traceback" not in err and "\x1b" not in err
    return status, lines[0]


def _needs(shape: str) -> None:
    if shape == "timm" and not HAS_TIMM:
        pytest.skip("timm is not installed")


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_complete_pickled_module_is_unsafe_never_corrupt(shape, saved, capsys):
    _needs(shape)
    _, line = _cli(["layers", str(saved[shape])], capsys)
    assert "names code (" in line and SHAPES[shape][1] in line, line
    assert "--trust-checkpoint" in line and "model.state_dict()" in line
    assert "corrupt" not in line and "Weights only" not in line


def test_the_issue_33_module_is_unsafe(tmp_path, capsys):
    """The report's own file: a module made only of torch.nn classes (3549 bytes there)."""
    path = tmp_path / "module.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), path)
    _, line = _cli(["layers", str(path)], capsys)
    assert line.startswith(
        f"interp layers: error: {path} is a pickle that names code "
        "(torch.nn.modules.container.Sequential, torch.nn.modules.conv.Conv2d, "
        "torch.nn.modules.activation.ReLU), not a plain weights file"
    ), line


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "main-class"])
def test_a_trusted_complete_module_loads(shape, saved):
    _needs(shape)
    model = load_model(str(saved[shape]), device="cpu", trust_checkpoint=True)
    assert isinstance(model.module, nn.Module) and model.info["format"] == "module"
    if shape.startswith("training-dict"):  # the module beside the optimizer state
        assert isinstance(model.module, nn.Sequential)


def test_a_class_from_the_saving_script_must_be_importable(saved, capsys):
    _, line = _cli(["layers", str(saved["main-class"]), "--trust-checkpoint"], capsys)
    assert "__main__.Net" in line and "defined in the script that saved it" in line, line
    assert "loads only where its class can be imported" in line and "define Net" in line
    assert "model.state_dict()" in line
    assert "corrupt" not in line


def test_a_missing_module_must_be_importable(tmp_path):
    """A class whose module this environment lacks (a project's own models package)."""
    path = tmp_path / "elsewhere.pt"
    data = bytearray(_bytes_of(_sequential()))
    old, new = b"torch.nn.modules.activation", b"my_project.models_gone_here"
    assert len(old) == len(new)  # same length: the zip records keep their sizes
    path.write_bytes(_rezip(bytes(data), old, new))
    with pytest.raises(
        CheckpointError, match="module my_project.models_gone_here cannot be imported"
    ):
        read_checkpoint(path, trust_checkpoint=True)


def _bytes_of(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _rezip(data: bytes, old: bytes, new: bytes) -> bytes:
    """``data`` (a zip torch.save file) with ``old`` replaced in its pickle, CRCs rewritten."""
    import io
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            body = src.read(info)
            dst.writestr(info, body.replace(old, new) if info.filename.endswith(".pkl") else body)
    return out.getvalue()


def _cuts(size: int) -> list[int]:
    """Lengths to cut a file to: the first bytes, a third, a half, near and at the end."""
    cuts = {1, 64, size // 3, size // 2, size - 4096, size - 9, size - 1}
    return sorted(c for c in cuts if 0 < c < size)


@pytest.mark.parametrize("shape", [*SHAPES, "torchscript", "state-dict-protocol-4"])
@pytest.mark.parametrize("trust", [False, True])
def test_every_truncation_is_corrupt_never_unsafe(shape, trust, saved, tmp_path, capsys):
    _needs(shape)
    data = saved[shape].read_bytes()
    for cut in _cuts(len(data)):
        path = tmp_path / f"cut-{cut}.pt"
        path.write_bytes(data[:cut])
        _, line = _cli(["layers", str(path), *(["--trust-checkpoint"] * trust)], capsys)
        assert f"{path} is truncated or corrupt ({cut} bytes" in line, (cut, line)
        assert "trust" not in line and "names code" not in line, (cut, line)


def test_a_damaged_zip_record_is_corrupt(saved, tmp_path):
    """A complete-length copy with a flipped byte in a storage: its CRC names it."""
    data = bytearray(saved["sequential"].read_bytes())
    at = data.index(b"data/0") + 200  # inside the first storage's bytes
    data[at] ^= 0xFF
    path = tmp_path / "flipped.pt"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        read_checkpoint(path, trust_checkpoint=True)
    assert "CRC" in (info.value.detail or "")


def test_torchscript_loads_and_says_it_cannot_be_hooked(saved, capsys):
    model = load_model(str(saved["torchscript"]), device="cpu")
    assert isinstance(model.module, torch.jit.ScriptModule)
    _, line = _cli(["layers", str(saved["torchscript"])], capsys)
    assert "is a TorchScript module, whose layers cannot be hooked" in line, line
    assert "--weights PATH" in line


def test_a_plain_state_dict_at_protocol_4_is_refused_not_unsafe(saved, capsys):
    """Names no code, but weights_only refuses the protocol: say so, not 'names code'."""
    path = saved["state-dict-protocol-4"]
    _, line = _cli(["layers", "simplecnn", "--weights", str(path)], capsys)
    assert "names no code" in line and "default pickle protocol (2)" in line, line
    assert "corrupt" not in line
    state = read_checkpoint(path, trust_checkpoint=True)
    assert set(state) == {"0.weight", "0.bias"}
