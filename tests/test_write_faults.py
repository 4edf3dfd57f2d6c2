"""Disk and permission faults: a full disk, a read-only folder or one without permission gives
one clear line (``interp CMD: error: cannot write PATH: CAUSE; WHAT TO DO``, exit status 2, no
traceback) and leaves the earlier outputs as they were.

Tests run as root here (chmod stops nothing), so the faults are injected: ``os`` inside
``interp.utils`` is replaced by a stand-in whose ``replace`` (the rename that publishes a
finished file) fails at the n-th write, and ``Path.mkdir`` fails for folder creation. The
real write path (a writer that hits a full disk mid-file) is checked on ``atomic_path``
itself with a file object that fills up.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import interp.utils as utils
from interp.cli import main
from interp.errors import OutputError
from interp.utils import atomic_path, atomic_write_text, is_temp_file

FAULTS = {
    "ENOSPC": (errno.ENOSPC, "No space left on device", "the disk is full"),
    "EACCES": (errno.EACCES, "Permission denied", "permission denied"),
    "EROFS": (errno.EROFS, "Read-only file system", "read-only"),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every finished file under ``folder`` (temp files excluded) with its bytes."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not is_temp_file(p)
    }


class FaultyOS:
    """``os`` for ``interp.utils`` whose ``replace`` fails at the ``fail_at``-th call whose
    target's name passes ``match``; the folder is snapshot just before the failure."""

    def __init__(self, root: Path, fault: str, fail_at: int, match: str | None = None) -> None:
        self.root, self.fail_at, self.match = root, fail_at, match
        code, text, self.words = FAULTS[fault]
        self.error = OSError(code, text)
        self.calls, self.written = 0, []
        self.failed: Path | None = None
        self.at_failure: dict[str, bytes] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def replace(self, src: Any, dst: Any) -> None:
        dst = Path(dst)
        if self.failed is None and (self.match is None or dst.name == self.match):
            self.calls += 1
            if self.calls == self.fail_at:
                self.failed, self.at_failure = dst, _snapshot(self.root)
                raise OSError(self.error.errno, self.error.strerror, str(src))
        os.replace(src, dst)
        self.written.append(dst)


def _inject(monkeypatch: pytest.MonkeyPatch, faulty: FaultyOS) -> FaultyOS:
    monkeypatch.setattr(utils, "os", faulty)
    return faulty


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"interp {command}: error: "), lines[0]
    return lines[0]


def _assert_earlier_outputs_kept(
    out: Path, before: dict[str, bytes], faulty: FaultyOS, line: str
) -> None:
    """The folder is as it was at the failure, the failed file as before the run, every
    other file as before or as written (whole) by this run before the fault."""
    assert faulty.failed is not None, "the fault was never injected"
    assert str(faulty.failed) in line and faulty.words in line and "--out" in line, line
    after = _snapshot(out)
    assert after == faulty.at_failure, "files changed after the failure"
    name = str(faulty.failed.relative_to(out))
    written = {str(p.relative_to(out)) for p in faulty.written}
    if name not in written:  # else its previous version is the one this run wrote
        assert after.get(name) == before.get(name), f"{name}: the previous version is lost"
    for key, data in after.items():
        assert key in written or before.get(key) == data, f"{key} changed but was not written"
    assert not [p for p in out.rglob("*") if is_temp_file(p)], "a temp file is left"


# ---- atlas, visualize ---------------------------------------------------------------------

RENDER = ["simplecnn", "--weights", "none", "--size", "32", "--reference", "none"]
RENDER += ["--quiet", "--device", "cpu", "--precision", "fp32"]
ATLAS = ["atlas", *RENDER, "--per-layer", "2", "--layers", "features.relu1,features.relu3"]


@pytest.fixture(scope="module")
def finished_atlas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A previous, finished atlas (4 steps)."""
    out = tmp_path_factory.mktemp("faults") / "atlas"
    assert main([*ATLAS, "--steps", "4", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("fault", ["ENOSPC", "EACCES", "EROFS"])
def test_atlas_fault_keeps_the_previous_atlas(fault, finished_atlas, tmp_path, monkeypatch, capsys):
    out = tmp_path / "atlas"
    shutil.copytree(finished_atlas, out)
    before = _snapshot(out)
    capsys.readouterr()
    # other settings re-render: each layer's units.json is first rewritten without the old
    # settings' units (writes 1, 2 of units.json), then the first layer's two PNGs are
    # written and its units.json (the third) fails
    faulty = _inject(monkeypatch, FaultyOS(out, fault, fail_at=3, match="units.json"))
    assert main([*ATLAS, "--steps", "5", "--out", str(out)]) == 2
    line = _one_error_line(capsys, "atlas")
    assert faulty.failed == out / "features.relu1" / "units.json"
    _assert_earlier_outputs_kept(out, before, faulty, line)


def test_visualize_fault_in_the_results(tmp_path, monkeypatch, capsys):
    out = tmp_path / "vis"
    argv = ["visualize", *RENDER, "--layer", "features.relu1", "--channels", "0:2"]
    argv += ["--steps", "3", "--out", str(out)]
    faulty = _inject(monkeypatch, FaultyOS(out, "ENOSPC", fail_at=1, match="results.json"))
    assert main(argv) == 2
    line = _one_error_line(capsys, "visualize")
    _assert_earlier_outputs_kept(out, {}, faulty, line)
    assert (out / "units.json").is_file() and (out / "grid.png").is_file()


def test_folder_that_cannot_be_created(tmp_path, monkeypatch, capsys):
    out = tmp_path / "locked" / "atlas"
    real = Path.mkdir

    def refuse(self: Path, *args: Any, **kwargs: Any) -> None:
        if str(self).startswith(str(tmp_path / "locked")):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main([*ATLAS, "--steps", "2", "--out", str(out)]) == 2
    line = _one_error_line(capsys, "atlas")
    assert "cannot create the folder" in line and "permission denied" in line, line
    assert not (tmp_path / "locked").exists()


def test_output_folder_below_a_file(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    argv = ["train", "--data", "partsworld", "--n", "32", "--size", "32", "--epochs", "1"]
    assert main([*argv, "--quiet", "--out", str(tmp_path / "file" / "run")]) == 2
    line = _one_error_line(capsys, "train")
    assert "cannot create the folder" in line and "a file stands where" in line, line
    assert (tmp_path / "file").read_text() == "not a folder"


# ---- train --------------------------------------------------------------------------------

TRAIN = ["train", "--data", "partsworld", "--n", "64", "--size", "16", "--epochs", "2"]
TRAIN += ["--batch-size", "32", "--width", "0.125", "--quiet", "--device", "cpu"]


@pytest.mark.parametrize("fault", ["ENOSPC", "EACCES"])
def test_train_fault_keeps_the_last_checkpoint_and_resumes(fault, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    # the second epoch's checkpoint cannot be written: the first epoch's stays
    faulty = _inject(monkeypatch, FaultyOS(out, fault, fail_at=2, match="checkpoint.pt"))
    assert main([*TRAIN, "--out", str(out)]) == 2
    line = _one_error_line(capsys, "train")
    _assert_earlier_outputs_kept(out, {}, faulty, line)
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 1  # the first epoch's checkpoint, whole
    assert json.loads((out / "metrics.json").read_text())["epochs"] == saved["history"]
    assert json.loads((out / "config.json").read_text())["epochs"] == 2
    if fault == "ENOSPC":  # space freed: the run resumes from the kept checkpoint
        monkeypatch.setattr(utils, "os", os)
        assert main([*TRAIN, "--resume", "--out", str(out)]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
        assert metrics["epochs"][0] == saved["history"][0]  # epoch 1 was not trained again


# ---- examples -----------------------------------------------------------------------------

EXAMPLES = ["examples", "simplecnn", "--weights", "none", "--data", "partsworld"]
EXAMPLES += ["--n", "32", "--size", "32", "--layers", "features.relu1,features.relu3"]
EXAMPLES += ["--units", "0:2", "--quiet", "--device", "cpu"]


@pytest.fixture(scope="module")
def finished_examples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "examples"
    assert main([*EXAMPLES, "--k", "3", "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("fault", ["ENOSPC", "EACCES"])
def test_examples_fault_keeps_the_previous_examples(
    fault, finished_examples, tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("INTERP_CHECKPOINT_EVERY", raising=False)
    out = tmp_path / "examples"
    shutil.copytree(finished_examples, out)
    before = _snapshot(out)
    capsys.readouterr()
    # the first layer's grid is written, the second's fails; examples.json stays the old one
    faulty = _inject(monkeypatch, FaultyOS(out, fault, fail_at=2))
    assert main([*EXAMPLES, "--k", "2", "--out", str(out)]) == 2
    line = _one_error_line(capsys, "examples")
    assert faulty.failed is not None and faulty.failed.parent.name == "features.relu3"
    _assert_earlier_outputs_kept(out, before, faulty, line)
    assert json.loads((out / "examples.json").read_bytes()) == json.loads(
        (finished_examples / "examples.json").read_bytes()
    )


# ---- atomic_path itself -------------------------------------------------------------------


class _FillsUp:
    """A file object on a disk that is full after ``room`` bytes."""

    def __init__(self, handle: Any, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.handle.write(data)

    def flush(self) -> None:
        self.handle.flush()


def test_a_writer_that_fills_the_disk_mid_file(tmp_path):
    path = tmp_path / "state.pt"
    atomic_write_text(path, "previous")
    # torch.save into a file object that hits a full disk raises RuntimeError while handling
    # the OSError: atomic_path finds the OSError behind it
    with pytest.raises(OutputError, match="disk is full") as info:
        with atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as handle:
            torch.save({"x": torch.zeros(10_000)}, _FillsUp(handle, 1000))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert path.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]


def test_other_errors_of_the_block_pass_through(tmp_path):
    path = tmp_path / "a.json"
    with pytest.raises(ValueError, match="boom"):
        with atomic_path(path):
            raise ValueError("boom")
    with pytest.raises(FileNotFoundError):  # not a "cannot write here" error
        with atomic_path(path):
            open(tmp_path / "missing" / "x", "rb")  # noqa: SIM115
    assert list(tmp_path.iterdir()) == []


def test_temp_files_are_hidden_and_name_their_writer(tmp_path):
    with atomic_path(tmp_path / "grid.png", suffix=".png") as tmp:
        assert tmp.name.startswith(".grid.png.") and tmp.name.endswith(".tmp.png")
        assert f".{os.getpid()}." in tmp.name and is_temp_file(tmp)
        tmp.write_bytes(b"x")
    assert not is_temp_file(tmp_path / "grid.png") and not is_temp_file(tmp_path / "a.tmp")


@pytest.mark.parametrize("command", ["hierarchy", "examples", "atlas", "train"])
def test_read_only_folder_fails_before_any_work(command, tmp_path, monkeypatch, capsys):
    """A folder that exists but cannot be written stops the job at once (it computed a whole
    network first before), with one line naming the folder."""
    import importlib
    import tempfile

    hierarchy_mod = importlib.import_module("interp.probes.hierarchy")

    out = tmp_path / "read_only"
    out.mkdir()

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EROFS, "Read-only file system")

    def no_work(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("work started before the folder was checked")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    monkeypatch.setattr(hierarchy_mod, "probe_network", no_work)
    model = ["simplecnn", "--weights", "none", "--quiet", "--device", "cpu"]
    argv = {
        "hierarchy": ["hierarchy", *model, "--n", "8", "--size", "32"],
        "examples": ["examples", *model, "--data", "digits", "--n", "8"],
        "atlas": ["atlas", *model, "--steps", "1", "--size", "16", "--reference", "none"],
        "train": ["train", "--data", "digits", "--epochs", "1", "--quiet"],
    }[command]
    assert main([*argv, "--out", str(out)]) == 2
    line = _one_error_line(capsys, command)
    assert str(out) in line and "read-only" in line
