"""Sharding with torchrun (gloo, CPU): the merged results of 2 ranks equal one process's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from interp import distributed as dist
from interp.pipeline.sharding import RankStream
from interp.streaming import Stream

JOB = Path(__file__).parent / "jobs" / "sharded_job.py"


def test_shard_is_everything_in_one_process():
    assert dist.shard(5) == [0, 1, 2, 3, 4] and dist.world() == 1 and dist.is_main()


def test_streams_shard_strided_and_keep_nothing_by_default(monkeypatch, tmp_path):
    """An instrument called directly (the base Stream) takes every item and keeps no state;
    the pipeline's RankStream follows the process group's ranks and checkpoints only with a
    folder, keeping the finished state only when asked."""
    plain = Stream()
    assert plain.shard(5) == [0, 1, 2, 3, 4] and plain.gather("x") == ["x"]
    assert plain.resume({"a": 1}) == {} and not plain.distributed
    monkeypatch.setattr(dist, "rank", lambda: 1)
    monkeypatch.setattr(dist, "world", lambda: 3)
    ranked = RankStream()
    assert ranked.shard(8) == [1, 4, 7] and ranked.distributed and ranked.path is None
    ranked.save(lambda: pytest.fail("no folder: nothing is saved"), now=True)
    kept = RankStream(tmp_path, "job", every=3600, keep_finished=True)
    assert kept.path == tmp_path / "job.rank1of3.pt" and kept.resume({"a": 1}) == {}
    kept.save(lambda: pytest.fail("not yet: the interval has not passed"))
    kept.save(lambda: {"done": 2}, now=True)
    assert RankStream(tmp_path, "job").resume({"a": 1})["done"] == 2
    assert RankStream(tmp_path, "job").resume({"a": 2}) == {}  # other settings
    kept.finish(lambda: {"done": 3})
    assert RankStream(tmp_path, "job").resume({"a": 1})["done"] == 3
    dropped = RankStream(tmp_path, "job")
    dropped.resume({"a": 1})
    dropped.finish(lambda: pytest.fail("not kept"))
    assert not kept.path.exists()


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun is not installed",
)
def test_two_ranks_equal_one_process(tmp_path):
    env = {**os.environ, "INTERP_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single = tmp_path / "single.npz"
    subprocess.run(
        [sys.executable, str(JOB), str(single), str(tmp_path / "atlas1")],
        check=True,
        env=env,
        timeout=300,
    )
    sharded = tmp_path / "sharded.npz"
    torchrun = Path(sys.executable).with_name("torchrun")
    job = [str(JOB), str(sharded), str(tmp_path / "atlas2")]
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", *job],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = np.load(single), np.load(sharded)
    assert int(a["world"]) == 1 and int(b["world"]) == 2
    for key in a.files:
        if key == "world":
            continue
        if key.endswith(("items", "positions")):
            assert np.array_equal(a[key], b[key]), key  # the same images, in the same order
        else:
            assert np.allclose(a[key], b[key], atol=1e-5, equal_nan=True), key
    # the atlas: the same units, rendered from the same seeds to the same values and pixels
    one, two = tmp_path / "atlas1", tmp_path / "atlas2"
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert not [f for f in files if "rank" in f.name]  # rank records merged and removed
    index = json.loads((one / "index.json").read_text())
    assert index == json.loads((two / "index.json").read_text())
    assert [len(e["units"]) for e in index["layers"]] == [5, 5]
    for f in files:
        if f.suffix == ".png" and "_c" in f.name:
            assert (one / f).read_bytes() == (two / f).read_bytes(), f
        elif f.name == "units.json":
            assert json.loads((one / f).read_text()) == json.loads((two / f).read_text())


CLI_JOBS = {
    "examples": (
        ["examples", "simplecnn", "--weights", "none", "--data", "partsworld", "--images", "30"]
        + ["--layers", "features.relu2", "--k", "3", "--units", "0:3"],
        "examples.json",
    ),
    "atlas": (
        ["atlas", "simplecnn", "--weights", "none", "--layers", "features.relu2,features.relu4"]
        + ["--per-layer", "3", "--batch", "2", "--steps", "3", "--size", "24"]
        + ["--reference", "none"],
        "index.json",
    ),
    "hierarchy": (
        ["hierarchy", "{run}", "--data", "partsworld", "--images", "40"]
        + ["--size", "32", "--control-seeds", "0", "--bootstrap", "50"]
        + ["--min-control-units", "32", "--reference-images", "16"]
        + ["--layers", "features.relu1,features.relu3,features.relu5"],
        "hierarchy.json",
    ),
    "report": (
        ["report", "{run}", "--quick", "--per-layer", "1"]
        + ["--layers", "features.relu1,features.relu4"],
        "index.html",
    ),
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained run folder of a quarter-width simplecnn (8 first-layer filters): the
    hierarchy and report jobs under torchrun cost a quarter of the full-width network's."""
    out = tmp_path_factory.mktemp("tiny-run")
    exe = Path(sys.executable).with_name("interp")
    args = ["train", "--arch", "simplecnn", "--data", "partsworld", "--n", "48", "--size", "32"]
    args += ["--epochs", "1", "--width", "0.25", "--quiet", "--out", str(out)]
    env = {**os.environ, "INTERP_OFFLINE": "1"}
    subprocess.run([str(exe), *args], check=True, capture_output=True, env=env, timeout=300)
    return out


@pytest.mark.parametrize("job", sorted(CLI_JOBS))
def test_cli_under_torchrun_equals_one_process(tmp_path, job, tiny_run):
    env = {**os.environ, "INTERP_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    args, result = CLI_JOBS[job]
    args = [a.replace("{run}", str(tiny_run)) for a in args]
    exe = Path(sys.executable)
    alone = subprocess.run(
        [str(exe.with_name("interp")), *args, "--quiet", "--out", str(tmp_path / "one")],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    done = subprocess.run(
        [str(exe.with_name("torchrun")), "--standalone", "--nproc_per_node=2", "-m", "interp"]
        + [*args, "--quiet", "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    one = (tmp_path / "one" / result).read_text()
    assert (tmp_path / "two" / result).read_text() == one
    # rank 0 alone prints, and what one process prints
    assert done.stdout.replace(str(tmp_path / "two"), str(tmp_path / "one")) == alone.stdout
    left = [p for p in (tmp_path / "two").rglob("*") if "rank" in p.name or ".partial" in p.name]
    assert not left  # per-rank records and checkpoints are merged and removed


def test_cli_leaves_the_process_group_after_a_finished_job_only(tmp_path, monkeypatch):
    """A rank that exits with its gloo group open can abort at shutdown (pytorch#190489), so a
    sharded command destroys the group when it finished; after an error it leaves it alone
    (other ranks may be inside a collective)."""
    import torch.distributed as tdist

    from interp import cli

    def one_rank_group(device="auto"):
        init = f"file://{tmp_path / 'store'}"
        tdist.init_process_group("gloo", init_method=init, rank=0, world_size=1)
        return False

    monkeypatch.setattr(dist, "setup", one_rank_group)
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets: the CLI takes the sharded path
    monkeypatch.setenv("INTERP_OFFLINE", "1")
    args = ["atlas", "simplecnn", "--weights", "none", "--per-layer", "1", "--steps", "1"]
    args += ["--size", "16", "--reference", "none", "--quiet"]
    try:
        status = cli.main([*args, "--layers", "features.relu2", "--out", str(tmp_path / "a")])
        assert status == 0 and not tdist.is_initialized()
        (tmp_path / "store").unlink(missing_ok=True)
        status = cli.main([*args, "--layers", "features.nope", "--out", str(tmp_path / "b")])
        assert status == 2 and tdist.is_initialized()
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()


def test_a_rank_that_left_its_group_exits_without_finalization(monkeypatch, capsys):
    """After a finished sharded job the console entry flushes and calls os._exit (gloo can
    abort a rank during interpreter finalization); any other run exits through SystemExit."""
    from interp.cli import _main

    exits = []

    def fake_exit(status):
        exits.append(status)
        raise SystemExit(f"os._exit({status})")

    def sharded_job(argv):
        print("the job's last line")
        monkeypatch.setattr(_main, "_left_group", True)
        return 0

    monkeypatch.setattr(_main.os, "_exit", fake_exit)
    monkeypatch.setattr(_main, "main", sharded_job)
    with pytest.raises(SystemExit, match=r"os\._exit\(0\)"):
        _main.console([])
    assert exits == [0] and capsys.readouterr().out == "the job's last line\n"

    monkeypatch.setattr(_main, "_left_group", False)
    monkeypatch.setattr(_main, "main", lambda argv: 2)
    with pytest.raises(SystemExit) as stop:
        _main.console([])
    assert stop.value.code == 2 and exits == [0]
