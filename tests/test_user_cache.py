"""The user-level cache of random-init controls (issue 35): a second model of the same
architecture reuses them, with the same hierarchy numbers; a changed setting measures them
again; a damaged entry is measured again, never trusted; two processes writing one entry each
leave a complete file."""

from __future__ import annotations

import json
import multiprocessing as mp
import shutil
from pathlib import Path

import numpy as np
import pytest
from golden_jobs import flatten

from interp.cli import main
from interp.pipeline.user_cache import ControlCache, user_cache_dir

_ARGS = ["hierarchy", "simplecnn", "--weights", "none", "--device", "cpu", "--data"]
_ARGS += ["partsworld", "--n", "24", "--size", "32", "--layers", "features.relu1,features.relu5"]
_ARGS += ["--control-seeds", "0", "--bootstrap", "10", "--min-control-units", "64"]
_ARGS += ["--reference-images", "8", "--precision", "fp32"]


def _run(out: Path, *extra: str, seed: int = 7) -> dict:
    assert main([*_ARGS, "--seed", str(seed), "--out", str(out), *extra]) == 0
    doc = json.loads((out / "hierarchy.json").read_text())
    doc["settings"].pop("stages", None)
    return flatten(doc)


def _entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "controls").glob("*.npz"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "user-cache"
    monkeypatch.setenv("INTERP_CACHE", str(folder))
    return folder


def test_the_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INTERP_CACHE", "off")
    assert user_cache_dir() is None
    monkeypatch.setenv("INTERP_CACHE", str(tmp_path))
    assert user_cache_dir() == tmp_path
    monkeypatch.delenv("INTERP_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "interp"


def test_controls_are_measured_once_per_architecture(cache, tmp_path, capfd):
    first = _run(tmp_path / "a")
    stored = _entries(cache)
    assert stored and all(n.startswith("control") for n in stored)  # the model is not kept
    capfd.readouterr()

    # the same model in a fresh folder: every control from the cache, the same numbers
    again = _run(tmp_path / "b")
    err = capfd.readouterr().err
    assert err.count("from the user cache") == len(stored)
    assert again == first

    # another model of the same architecture (other weights): its controls are reused too
    other = _run(tmp_path / "c", seed=8)
    assert capfd.readouterr().err.count("from the user cache") == len(stored)
    assert _entries(cache) == stored
    assert (
        other["layers[0].control_fractions.edge_gratings"]
        == (first["layers[0].control_fractions.edge_gratings"])
    )

    # --no-cache neither reads nor writes it
    _run(tmp_path / "d", "--no-cache")
    assert "from the user cache" not in capfd.readouterr().err

    # a changed setting measures its controls again (new entries beside the old ones)
    _run(tmp_path / "e", "--quantile", "0.01")
    assert "from the user cache" not in capfd.readouterr().err
    assert len(_entries(cache)) > len(stored)


def test_a_damaged_entry_is_measured_again(cache, tmp_path, capfd):
    first = _run(tmp_path / "a")
    entry = cache / "controls" / _entries(cache)[0]
    entry.write_bytes(entry.read_bytes()[:100])  # cut short
    capfd.readouterr()
    again = _run(tmp_path / "b")
    err = capfd.readouterr().err
    assert "did not load; measuring it again" in err
    assert again == first
    np.load(entry).close()  # written again, whole


def _store_many(folder: str, src: str, rounds: int) -> None:
    cache = ControlCache(Path(folder), progress=False)
    for _ in range(rounds):
        cache.store("control-seed0", "k" * 16, Path(src))


def test_two_processes_writing_one_entry_leave_a_complete_file(tmp_path):
    src = tmp_path / "probes.npz"
    np.savez_compressed(src, big=np.random.default_rng(0).normal(size=(512, 512)))
    src.with_suffix(".meta.json").write_text(json.dumps({"role": "control"}))
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_store_many, args=(str(tmp_path / "c"), str(src), 20)) for _ in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    entry = tmp_path / "c" / "controls" / f"control-seed0-{'k' * 16}.npz"
    assert entry.read_bytes() == src.read_bytes()
    assert json.loads(entry.with_suffix(".meta.json").read_text()) == {"role": "control"}
    assert not list(entry.parent.glob("*.tmp"))  # no temp file left behind
    shutil.rmtree(tmp_path / "c")
