"""Table-driven: every subcommand given bad input exits with status 2 and one clear line.

For each subcommand, a list of bad inputs (paths, images, checkpoints, layers, channels,
numbers, data specs, devices) and a word the error must contain. Each must give exit status 2,
exactly one line on stderr that starts with ``interp``, no traceback and no terminal escape
codes. A new subcommand fails :func:`test_the_table_covers_every_subcommand` until it joins.
"""

from __future__ import annotations

import argparse
import os
import re

import pytest
import torch

from interp.cli import build_parser, main

OPTS = ["--weights", "none", "--quiet", "--device", "cpu"]  # after the positionals
M = ["simplecnn", *OPTS]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad files: random bytes, a NaN state dict, a pickled module, a folder of no images, a
    text 'image', and a folder holding only that."""
    root = tmp_path_factory.mktemp("bad_inputs")
    (root / "random.pt").write_bytes(os.urandom(4096))
    from interp import load_model

    state = load_model("simplecnn", weights="none", device="cpu").module.state_dict()
    state = {k: v.clone() for k, v in state.items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].view(-1)[0] = float("nan")
    torch.save(state, root / "nan.pt")
    torch.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()), root / "module.pt")
    (root / "empty_dir").mkdir()
    (root / "text.png").write_text("not an image")
    (root / "text_dir").mkdir()
    (root / "text_dir" / "text.png").write_text("not an image")
    return root


def table(f) -> dict[str, list[tuple[list[str], str]]]:
    """``{command: [(argv, a word the message must contain), ...]}``."""
    img = str(f / "text.png")
    return {
        "models": [
            (["models", "--seed", "-1"], "--seed"),
            (["models", "--no-such-flag"], "unrecognized"),
        ],
        "layers": [
            (["layers", "no_such_model"], "unknown model"),
            (["layers", str(f / "random.pt")], "corrupt"),
            (["layers", str(f / "module.pt")], "names code (torch.nn.modules.container"),
            (["layers", *M, "--weights", str(f / "random.pt")], "corrupt"),
            (["layers", *M, "--weights", str(f / "nan.pt")], "NaN"),
            (["layers", *M, "--weights", str(f / "missing.pt")], "does not exist"),
            (["layers", *M, "--filter", "zzz*"], "no layer matches"),
            (["layers", *M, "--device", "gpu"], "cpu"),
            (["layers", *M, "--seed", "x"], "--seed"),
        ],
        "classify": [
            (["classify", "simplecnn", str(f / "empty_dir"), *OPTS], "no image"),
            (["classify", "simplecnn", img, *OPTS], "cannot read"),
            (["classify", "simplecnn", str(f / "text_dir"), *OPTS], "cannot read"),
            (["classify", "simplecnn", str(f / "missing.png"), *OPTS], "does not exist"),
            (["classify", "simplecnn", "--photos", *OPTS, "--top", "0"], "--top"),
            (["classify", *M], "--photos"),
        ],
        "visualize": [
            (["visualize", *M, "--layer", "features.relu1", "--size", "0"], "--size"),
            (["visualize", *M, "--layer", "features.relu1", "--steps", "-1"], "--steps"),
            (["visualize", *M, "--layer", "features.relu1", "--lr", "0"], "--lr"),
            (["visualize", *M, "--layer", "features.relu1", "--lr", "nan"], "--lr"),
            (["visualize", *M, "--layer", "features.relu1", "--batch", "0"], "--batch"),
            (["visualize", *M, "--layer", "features.reluX"], "features.relu"),
            (["visualize", *M, "--layer", "features.relu1", "--channels", "500"], "channel"),
            (["visualize", *M, "--layer", "features.relu1", "--upsample", "2"], "--upsample"),
            (["visualize", *M, "--layer", "features.relu1", "--n-reference", "0"], "--n-ref"),
        ],
        "atlas": [
            (["atlas", *M, "--per-layer", "0"], "--per-layer"),
            (["atlas", *M, "--layers", "nosuch"], "nosuch"),
            (["atlas", *M, "--size", "-3"], "--size"),
            (["atlas", *M, "--reference", str(f / "empty_dir")], "no image"),
        ],
        "train": [
            (["train", "--out", str(f / "t"), "--epochs", "0"], "--epochs"),
            (["train", "--out", str(f / "t"), "--batch-size", "0"], "--batch-size"),
            (["train", "--out", str(f / "t"), "--lr", "-1"], "--lr"),
            (["train", "--out", str(f / "t"), "--width", "0"], "--width"),
            (["train", "--out", str(f / "t"), "--snapshots", "a,b"], "--snapshots"),
            (["train", "--out", str(f / "t"), "--data", "nosuch", "--quiet"], "data"),
            (["train", "--out", str(f / "t"), "--arch", "nosuch", "--quiet"], "nosuch"),
            (["train", "--out", str(f / "t"), "--device", "cuda:99", "--quiet"], "cuda"),
        ],
        "hierarchy": [
            (["hierarchy", *M, "--quantile", "1.5"], "--quantile"),
            (["hierarchy", *M, "--iou", "0"], "--iou"),
            (["hierarchy", *M, "--control-quantile", "1"], "--control-quantile"),
            (["hierarchy", *M, "--bootstrap", "0"], "--bootstrap"),
            (["hierarchy", *M, "--control-seeds", "-1"], "--control-seeds"),
            (["hierarchy", *M, "--n", "0"], "--n"),
            (["hierarchy", *M, "--data", "imagenet"], "broden:PATH"),
            (["hierarchy", *M, "--layers", "features.conv9"], "features.conv"),
        ],
        "examples": [
            (["examples", *M, "--k", "0"], "--k"),
            (["examples", *M, "--n", "0"], "--n"),
            (["examples", *M, "--data", "nosuch"], "nosuch"),
            (["examples", *M, "--data", "folder:" + str(f / "missing")], "missing"),
            (["examples", *M, "--layers", "features.conv9"], "features.conv"),
            (["examples", *M, "--units", "999", "--data", "digits", "--n", "8"], "999"),
        ],
        "attribute": [
            (["attribute", "simplecnn", str(f / "missing.png"), *OPTS], "does not exist"),
            (["attribute", "simplecnn", img, *OPTS], "cannot read"),
            (["attribute", "simplecnn", str(f / "empty_dir"), *OPTS], "folder"),
            (["attribute", "simplecnn", img, *OPTS, "--n-steps", "0"], "--n-steps"),
            (["attribute", "simplecnn", img, *OPTS, "--method", "nosuch"], "--method"),
        ],
        "unit": [
            (["unit", "simplecnn", "features.reluX:3", *OPTS], "features.relu"),
            (["unit", "simplecnn", "features.relu1:999", *OPTS], "999"),
            (["unit", "simplecnn", "features.relu1", *OPTS], "LAYER:CHANNEL"),
            (["unit", "simplecnn", "features.relu1:1", *OPTS, "--k", "0"], "--k"),
            (
                ["unit", "simplecnn", "features.relu1:1", *OPTS, "--hierarchy", str(f / "missing")],
                "missing",
            ),
        ],
        "experiment": [
            (["experiment", "nosuch"], "invalid choice"),
            (["experiment", "symmetry", "--seeds", "0"], "--seeds"),
            (["experiment", "symmetry", "--out", img, "--quiet"], "text.png"),
        ],
        "study": [
            (["study", "--quick", "--out", img, "--quiet"], "text.png"),
            (["study", "--quick", "--device", "cuda:7", "--quiet", "--out", str(f / "s")], "cuda"),
            (["study", "--quick", "--families", "Nope", "--out", str(f / "s2")], "SimpleCNN"),
        ],
        "report": [
            (["report", *M, "--layers", "features.conv9"], "features.conv"),
            (["report", *M, "--data", "imagenet"], "broden:PATH"),
            (["report", *M, "--experiments", str(f / "missing")], "missing"),
        ],
        "data": [
            (["data", "preview", "partsworld", "--n", "0"], "--n"),
            (["data", "preview", "partsworld", "--size", "2"], "--size"),
            (["data", "preview", "nosuch"], "invalid choice"),
        ],
    }


def _subcommands() -> set[str]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    raise AssertionError("no subcommands")


def test_the_table_covers_every_subcommand(tmp_path):
    rows = table(tmp_path)
    assert set(rows) == _subcommands(), "a new subcommand joins the bad-input table"
    assert all(len(cases) >= 2 for cases in rows.values())


def _ids():
    import pathlib

    rows = table(pathlib.Path("/nonexistent"))
    return [(cmd, i) for cmd, cases in rows.items() for i in range(len(cases))]


_ANSI = re.compile(r"\x1b\[")


@pytest.mark.parametrize(("command", "index"), _ids())
def test_bad_input_is_one_line_with_status_2(command, index, files, capsys, tmp_path, monkeypatch):
    if "cuda" in table(files)[command][index][0] and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    monkeypatch.chdir(tmp_path)  # default output folders land here
    argv, word = table(files)[command][index]
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse
        status = exc.code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert status == 2, (argv, captured.err)
    assert len(lines) == 1, (argv, captured.err)
    assert lines[0].startswith("interp"), lines[0]
    assert "Traceback" not in captured.err and not _ANSI.search(captured.err)
    assert word.lower() in lines[0].lower(), (argv, lines[0])
