"""Kills, for real: ``interp train``, ``atlas``, ``examples``, ``hierarchy``, ``study`` and
``experiment transfer`` run as subprocesses, get SIGKILL at a random point after their first
checkpoint is on disk, and are rerun with the same command. Then:

1. every file left at the kill is complete (atomic writes), and after the rerun no temp file
   or running state is left anywhere in the output folder;
2. finished work is reused (atlas: "reused N" and the unit PNGs untouched; train: "resuming
   after epoch E" and the first E epochs' timings kept; examples: "resuming after N images";
   hierarchy: finished stage files untouched, an interrupted dissection resumed, a finished
   one reused; study: finished networks untouched and reused; transfer: finished cells
   untouched);
3. the outputs equal those of an uninterrupted run of the same command in another folder
   (JSON without timings, PNG pixels, checkpoint tensors, stage arrays): exactly, on CPU.

The kill point is drawn from ``random.Random(seed)`` (``INTERP_KILL_SEED``, default 0; printed
on failure): after the k-th change seen in its checkpoint files, plus a random delay. Every job
runs with one thread and ``INTERP_CHECKPOINT_EVERY=0`` (streaming jobs save their state after
every batch).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from interp import load_model, utils
from interp.models.checkpoints import save_checkpoint
from interp.utils import is_temp_file

SEED = int(os.environ.get("INTERP_KILL_SEED", "0"))
TIMEOUT = 240  # seconds a job may take (a few on an idle 2-core machine)

# what each job leaves while it runs and removes when it completes
RUNNING_STATE = ("examples.rank", "dissect.rank", "units.rank")


@pytest.fixture(scope="module")
def model_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MODEL: a checkpoint of a tiny CNN at random init (32 px, 4 filters in the first
    conv), as `interp train` writes it."""
    kwargs = {"num_classes": 6, "in_channels": 3, "width": 0.125, "input_size": 32}
    model = load_model("simplecnn", device="cpu", weights="none", seed=0, **kwargs)
    path = tmp_path_factory.mktemp("kills") / "model.pt"
    save_checkpoint(
        path,
        model.module,
        arch="simplecnn",
        arch_kwargs=kwargs,
        preprocessing=model.preprocessing.to_dict(),
        class_names=[f"class{i}" for i in range(6)],
    )
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        INTERP_OFFLINE="1",
        INTERP_CHECKPOINT_EVERY="0",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONHASHSEED="0",
        PYTHONUNBUFFERED="1",
    )
    return env


class Job:
    """One run of ``interp ARGS --out OUT`` as a subprocess, its output in OUT.log."""

    def __init__(self, args: list[str], out: Path) -> None:
        self.out = out
        self.log = out.with_name(out.name + ".log")
        cmd = [sys.executable, "-m", "interp", *args, "--device", "cpu", "--out", str(out)]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), cwd=out.parent
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def finish(self) -> str:
        rc = self.proc.wait(timeout=TIMEOUT)
        text = self.text()
        assert rc == 0, f"`interp` exited with {rc} in {self.out}:\n{text[-3000:]}"
        return text


def _marks(folder: Path, patterns: tuple[str, ...]) -> tuple:
    """A signature of the job's checkpoint files (names, inodes, mtimes; their temp files
    match too): it changes when a checkpoint write starts and when it ends."""
    found = []
    for pattern in patterns:
        for p in folder.glob(pattern):
            try:
                st = p.stat()
            except OSError:  # removed meanwhile
                continue
            found.append((str(p), st.st_ino, st.st_mtime_ns))
    return tuple(sorted(found))


def _kill_at_random_point(
    job: Job, patterns: tuple[str, ...], writes: int, rng: random.Random, tries: int
) -> dict[str, Any]:
    """SIGKILL ``job`` after the k-th change of its checkpoint files once a finished one is
    there (k random in 1..writes, 1 on a retry) plus a random delay; returns what was drawn
    and whether the job was still running."""
    k = rng.randint(1, writes) if tries == 0 else 1
    delay = rng.uniform(0.0, 0.25) if tries == 0 else 0.0
    seen, last = 0, _marks(job.out, patterns)
    deadline = time.monotonic() + TIMEOUT
    while seen < k and job.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.003)
        now = _marks(job.out, patterns)
        if now != last and any(not is_temp_file(name) for name, _, _ in now):
            seen += 1
        last = now
    assert seen >= 1 or job.proc.poll() is None, (
        f"no checkpoint appeared before the job ended:\n{job.text()[-3000:]}"
    )
    time.sleep(delay)
    alive = job.proc.poll() is None
    if alive:
        job.proc.send_signal(signal.SIGKILL)
    job.proc.wait(timeout=TIMEOUT)
    return {"seed": SEED, "k": k, "delay": round(delay, 3), "writes_seen": seen, "killed": alive}


def _interrupted(
    args: list[str], tmp_path: Path, patterns: tuple[str, ...], writes: int, mid_write: str
) -> tuple[Job, Path, dict[str, Any]]:
    """Start the uninterrupted reference run and, beside it, the run that is killed; returns
    the reference job, the killed run's folder and what the kill drew.

    A kill rarely lands inside a write, so one is made sure of: the temp file a kill in the
    middle of writing ``mid_write`` (a path in the output folder) leaves, named for the killed
    process."""
    rng = random.Random(f"{SEED}:{args[0]}")
    reference = Job(args, tmp_path / "reference")
    for tries in range(3):
        out = tmp_path / f"killed{tries}"
        job = Job(args, out)
        info = _kill_at_random_point(job, patterns, writes, rng, tries)
        info["temps_left_by_the_kill"] = len([p for p in out.rglob("*") if is_temp_file(p)])
        print(f"{args[0]}: kill {info}")
        if info["killed"]:
            target = out / mid_write
            target.parent.mkdir(parents=True, exist_ok=True)
            half = target.parent / f".{target.name}.{utils._HOST}.{job.proc.pid}.killedxx.tmp"
            half.write_bytes(b"half a file")
            assert is_temp_file(half)
            return reference, out, info
    pytest.fail(f"{args[0]} always finished before the kill: {info}")


# ---- checks on folders -------------------------------------------------------------------


def _files(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list[str]:
    """Temp files, running state and unfinished stages under ``folder``."""
    bad = [p for p in folder.rglob("*") if is_temp_file(p) or p.name.endswith((".tmp", ".part"))]
    bad += [p for p in folder.rglob("*") if p.name.startswith(RUNNING_STATE)]
    bad += [p for p in folder.rglob("*.partial")]
    return sorted(str(p.relative_to(folder)) for p in bad)


def _assert_complete(folder: Path, info: dict[str, Any]) -> None:
    """Every file that is not a temp file reads back whole (atomic writes)."""
    for name, p in _files(folder).items():
        if is_temp_file(p):
            continue
        try:
            if p.suffix == ".json":
                json.loads(p.read_text())
            elif p.suffix == ".png":
                Image.open(p).load()
            elif p.suffix == ".pt":
                torch.load(p, map_location="cpu", weights_only=True)
            elif p.suffix == ".npz":
                with np.load(p) as z:
                    [z[k] for k in z.files]
        except Exception as exc:  # noqa: BLE001
            pytest.fail(f"{name} is half-written after the kill {info}: {exc!r}")


def _drop(doc: Any, keys: frozenset[str]) -> Any:
    if isinstance(doc, dict):
        return {k: _drop(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list | tuple):
        return [_drop(v, keys) for v in doc]
    return doc


def _same(a: Any, b: Any, where: str) -> None:
    """Equal nested values: tensors and arrays exactly (NaN equal to NaN)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype, where
        if a.is_floating_point():  # NaN equals NaN
            a, b = torch.where(a.isnan(), 0, a), torch.where(b.isnan(), 0, b)
        assert torch.equal(a, b), f"{where}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{where}: {a.keys()} != {b.keys()}"
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, float) and np.isnan(a) and np.isnan(b):
        pass
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


TIMINGS = frozenset({"seconds"})


def _assert_same_outputs(ref: Path, got: Path, info: dict[str, Any]) -> None:
    a, b = _files(ref), _files(got)
    assert a.keys() == b.keys(), f"different files after the kill {info}: {a.keys() ^ b.keys()}"
    for name in a:
        where = f"{name} (kill {info})"
        pa, pb = a[name], b[name]
        if pa.suffix == ".json":
            _same(
                _drop(json.loads(pa.read_text()), TIMINGS),
                _drop(json.loads(pb.read_text()), TIMINGS),
                where,
            )
        elif pa.suffix == ".png":
            x, y = np.asarray(Image.open(pa)), np.asarray(Image.open(pb))
            assert x.shape == y.shape and np.array_equal(x, y), f"{where}: pixels differ"
        elif pa.suffix == ".pt":
            load = lambda p: torch.load(p, map_location="cpu", weights_only=True)  # noqa: E731
            _same(_drop(load(pa), TIMINGS), _drop(load(pb), TIMINGS), where)
        elif pa.suffix == ".npz":
            with np.load(pa) as x, np.load(pb) as y:
                assert x.files == y.files, where
                for k in x.files:
                    same = np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind in "fc")
                    assert same, f"{where}: array {k} differs"
        else:
            assert pa.read_bytes() == pb.read_bytes(), where


def _identity(paths: list[Path]) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def _finish_and_compare(
    reference: Job, killed: Path, args: list[str], info: dict[str, Any], check: Callable
) -> str:
    """Rerun ``args`` into the killed folder to completion, check it and compare with the
    reference; returns the rerun's log."""
    _assert_complete(killed, info)
    rerun = Job(args, killed)
    text = rerun.finish()
    check(text)
    reference.finish()
    assert not _leftovers(killed), f"left after the rerun (kill {info}): {_leftovers(killed)}"
    assert not _leftovers(reference.out), _leftovers(reference.out)
    _assert_same_outputs(reference.out, killed, info)
    return text


# ---- the jobs ----------------------------------------------------------------------------


def test_train_killed_resumes_to_the_same_weights(tmp_path):
    epochs = 5
    args = ["train", "--data", "partsworld", "--n", "160", "--size", "32", "--width", "0.125"]
    args += ["--epochs", str(epochs), "--batch-size", "32", "--resume"]  # the same command twice
    reference, killed, info = _interrupted(
        args, tmp_path, ("checkpoint.pt",), epochs - 1, "checkpoint.pt"
    )
    saved = torch.load(killed / "checkpoint.pt", map_location="cpu", weights_only=True)
    epoch = int(saved["epoch"])

    def check(text: str) -> None:
        assert f"resuming after epoch {epoch} of {epochs}" in text, (info, text[-2000:])
        history = json.loads((killed / "metrics.json").read_text())["epochs"]
        # the finished epochs were not trained again: their timings are the killed run's
        assert history[:epoch] == saved["history"], info

    _finish_and_compare(reference, killed, args, info, check)


def test_atlas_killed_reuses_finished_units(tmp_path, model_run):
    layers = "features.relu1,features.relu3,features.relu5"
    args = ["atlas", str(model_run), "--steps", "12", "--size", "32", "--per-layer", "4"]
    args += ["--batch", "2", "--layers", layers, "--reference", "none"]
    # 3 layers x 2 batches: units.json is rewritten after each batch
    reference, killed, info = _interrupted(
        args, tmp_path, ("*/units.json",), 5, "features.relu3/units.json"
    )
    finished = []
    for record in killed.glob("*/units.json"):
        finished += [record.parent / u["png"] for u in json.loads(record.read_text())["units"]]
    before = _identity(finished)

    def check(text: str) -> None:
        assert f"reused {len(finished)} finished ones" in text, (info, text[-2000:])
        assert _identity(finished) == before, f"finished unit PNGs were rewritten ({info})"

    _finish_and_compare(reference, killed, args, info, check)


def test_examples_killed_resumes_from_its_checkpoint(tmp_path, model_run):
    args = ["examples", str(model_run), "--data", "partsworld", "--n", "160", "--size", "32"]
    args += ["--k", "3", "--batch-size", "16", "--layers", "features.relu1,features.relu3"]
    args += ["--units", "0:4"]
    # the running state is saved after each of the 10 batches (INTERP_CHECKPOINT_EVERY=0)
    reference, killed, info = _interrupted(
        args, tmp_path, ("examples.rank*.pt",), 8, "features.relu1/units_0000-0003.png"
    )
    state = killed / "examples.rank0of1.pt"
    done = int(torch.load(state, weights_only=True)["done"]) if state.is_file() else None

    def check(text: str) -> None:
        if done is not None:  # killed in the pass (else in writing the figures: no state left)
            assert f"examples: resuming after {done} of this shard's images" in text, (info, text)

    _finish_and_compare(reference, killed, args, info, check)


def test_hierarchy_killed_reuses_finished_stages(tmp_path, model_run):
    args = ["hierarchy", str(model_run), "--n", "32", "--size", "32", "--batch-size", "16"]
    args += ["--layers", "features.relu1,features.relu3", "--control-seeds", "0"]
    args += ["--min-control-units", "8", "--reference-images", "8", "--bootstrap", "20"]
    # the model's and the control's dissections save their state 2 + 1 + 2 + 1 times each,
    # then their stage files; the edge-only control has only its stage files
    patterns = ("stages/*.npz", "stages/*.json", "stages/*.partial/*.pt")
    reference, killed, info = _interrupted(args, tmp_path, patterns, 10, "stages/x.npz")
    stages = killed / "stages"
    finished = [p for p in stages.glob("*.npz") if p.with_suffix(".json").is_file()]
    before = _identity([*finished, *(p.with_suffix(".json") for p in finished)])
    # a dissection killed in its passes resumes; one killed after them (in the slower edge
    # instruments of its network) is reused
    partial = [torch.load(p, weights_only=True) for p in stages.glob("*.partial/dissect.*.pt")]
    expect = [
        "dissect: reusing the finished dissection"
        if int(s["pass"]) == 3
        else f"dissect: resuming pass {int(s['pass'])} after {int(s['done'])} images"
        for s in partial
    ]
    print(f"hierarchy: {len(finished)} finished stage(s), dissection checkpoints: {expect}")

    def check(text: str) -> None:
        assert _identity([Path(p) for p in before]) == before, f"stages rewritten ({info})"
        for p in finished:
            tag = p.stem.rsplit("-", 1)[0]
            assert f"reusing the finished {tag} stage" in text, (info, text[-2000:])
        for line in expect:
            assert line in text, (info, text[-2000:])

    _finish_and_compare(reference, killed, args, info, check)


def test_study_killed_reuses_finished_networks(tmp_path):
    """`interp study --quick` (two small PartsWorld CNNs, each trained, measured and followed
    through its checkpoints) killed anywhere: a network whose member.json is written is
    reused whole, the others resume from their training and stage files."""
    args = ["study", "--quick", "--no-cache"]  # no user cache: the two runs share nothing
    patterns = (
        "networks/*/member.json",
        "networks/*/run/checkpoint.pt",
        "networks/*/hierarchy/stages/*.npz",
        "networks/*/emergence/stages/*.npz",
    )
    reference, killed, info = _interrupted(args, tmp_path, patterns, 12, "networks/x.json")
    finished = sorted(killed.glob("networks/*/member.json"))
    before = _identity(finished)
    print(f"study: {len(finished)} finished network(s)")

    def check(text: str) -> None:
        assert _identity(finished) == before, f"finished networks rewritten ({info})"
        for p in finished:
            assert f"reusing the finished network {p.parent.name}" in text, (info, text[-2000:])

    _finish_and_compare(reference, killed, args, info, check)


def test_transfer_killed_reuses_finished_cells(tmp_path):
    """`interp experiment transfer --quick` (Lite0 fine-tuned on digits, AnB/BnB, probes:
    every trained network a cell) killed anywhere: finished cells are reused untouched, the
    missing ones trained, and the outputs equal an uninterrupted run's."""
    args = ["experiment", "transfer", "--quick"]
    patterns = ("runs/transfer/*.json", "runs/transfer/*.pt", "runs/transfer/digits/*.json")
    reference, killed, info = _interrupted(args, tmp_path, patterns, 20, "runs/transfer/x.json")
    finished = sorted(killed.glob("runs/transfer/**/*.json"))
    before = _identity(finished)
    print(f"transfer: {len(finished)} finished cell(s)")

    def check(text: str) -> None:
        assert _identity(finished) == before, f"finished cells rewritten ({info})"

    _finish_and_compare(reference, killed, args, info, check)
    doc = json.loads((reference.out / "transfer.json").read_text())
    assert doc["settings"]["steps"] == 8 and doc["settings"]["seeds"] == 1  # the quick preset
    assert [r["per_class"] for r in doc["digits"]["per_class"]] == ["10", "all"]
    assert [r["through"] for r in doc["digits"]["frozen"]] == ["nothing", "_blocks.4", "head"]
    for name in ("transfer_digits", "transfer_anb", "transfer_probes"):
        assert (reference.out / f"{name}.png").stat().st_size > 0


# ---- temp files of killed writers ---------------------------------------------------------

_WRITER = """
import sys, time, types
interp = types.ModuleType("interp")  # only interp.utils, not the whole package: fast
interp.__path__ = [sys.argv[2]]
sys.modules["interp"] = interp
from interp.utils import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half")
    print("writing", flush=True)
    time.sleep(120)
"""


def test_temp_files_of_killed_writers_are_removed_live_ones_kept(tmp_path):
    from interp.utils import remove_stale_temps

    (tmp_path / "sub").mkdir()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp_path / name), str(Path(utils.__file__).parent)],
            stdout=subprocess.PIPE,
            env=_env(),
        )
        for name in ("sub/dead.json", "live.json")
    ]
    try:
        for w in writers:
            assert w.stdout is not None and w.stdout.readline().strip() == b"writing"
        dead, live = writers
        dead.send_signal(signal.SIGKILL)
        dead.wait(timeout=TIMEOUT)
        temps = sorted(p for p in tmp_path.rglob("*") if is_temp_file(p))
        assert len(temps) == 2  # the killed writer's temp file stays behind ...
        other_host = tmp_path / ".live.json.otherhost.1.abcdefgh.tmp"
        other_host.write_text("a writer on another node")
        (tmp_path / "plain.tmp").write_text("not ours")
        removed = remove_stale_temps(tmp_path)  # ... until a job cleans its folder
        assert [p.parent.name for p in removed] == ["sub"], removed
        assert sorted(p for p in tmp_path.rglob("*") if is_temp_file(p)) == sorted(
            [t for t in temps if t.parent == tmp_path] + [other_host]
        )
        assert (tmp_path / "plain.tmp").is_file()
        assert not (tmp_path / "sub" / "dead.json").exists()
    finally:
        for w in writers:
            w.kill()
            w.wait(timeout=TIMEOUT)
            if w.stdout is not None:
                w.stdout.close()


# ---- a re-render under other settings, interrupted ----


def test_atlas_interrupted_re_render_does_not_mix_settings(tmp_path, monkeypatch):
    """The old settings' records are dropped before any of their PNGs is overwritten."""
    from interp.cli import main

    argv = ["atlas", "simplecnn", "--weights", "none", "--size", "16", "--reference", "none"]
    argv += ["--per-layer", "1", "--layers", "features.relu1", "--quiet", "--device", "cpu"]
    argv += ["--out", str(tmp_path)]
    assert main([*argv, "--steps", "2"]) == 0
    (png,) = tmp_path.glob("features.relu1/*_c*.png")
    first = np.asarray(Image.open(png)).copy()

    class Interrupted:  # `os` for interp.utils: the run stops before its units.json
        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

        def replace(self, src: Any, dst: Any) -> None:
            if Path(dst).name == "units.json":
                raise KeyboardInterrupt
            os.replace(src, dst)

    monkeypatch.setattr(utils, "os", Interrupted())
    assert main([*argv, "--steps", "9"]) == 130
    monkeypatch.setattr(utils, "os", os)
    assert main([*argv, "--steps", "2"]) == 0  # "reused 1 finished ones"
    assert np.array_equal(np.asarray(Image.open(png)), first), "a steps-9 image is reused"
