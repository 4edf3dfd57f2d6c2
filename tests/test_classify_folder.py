"""``interp classify MODEL FOLDER``: every image in the folder, the unreadable ones named.

An unreadable image is one error line naming it and the others are still classified; the
exit status is 2 at the end with how many failed. Files that are not images by extension are
skipped and counted in one note (none with ``--quiet``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from interp.cli import main

OPTS = ["--weights", "none", "--device", "cpu", "--top", "2"]


@pytest.fixture
def folder(tmp_path):
    """Two photos, a JPEG cut short, a text file named .png, and two files that are no images."""
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((40, 50, 3)) * 255).astype(np.uint8)).save(root / "a.png")
    Image.fromarray((rng.random((60, 40, 3)) * 255).astype(np.uint8)).save(root / "d.jpg")
    (root / "b_cut.jpg").write_bytes((root / "d.jpg").read_bytes()[:200])
    (root / "c_text.png").write_text("not an image")
    (root / "notes.txt").write_text("hello")
    (root / "table.csv").write_text("a,b\n")
    (root / "nested").mkdir()  # a folder inside is neither an image nor a skipped file
    return root


def test_unreadable_images_are_named_and_the_others_classified(folder, capsys):
    assert main(["classify", "simplecnn", str(folder), *OPTS]) == 2
    captured = capsys.readouterr()
    printed = [line for line in captured.out.splitlines() if not line.startswith(" ")]
    assert printed == [str(folder / "a.png"), str(folder / "d.jpg")]
    assert captured.err.splitlines() == [
        "interp classify: skipped 2 file(s) that are not images by extension: notes.txt, table.csv",
        f"interp classify: error: cannot read {folder / 'b_cut.jpg'} as an image (not a format "
        "Pillow decodes, or a damaged file); give a JPEG, PNG, BMP, TIFF or WebP file",
        f"interp classify: error: cannot read {folder / 'c_text.png'} as an image (not a format "
        "Pillow decodes, or a damaged file); give a JPEG, PNG, BMP, TIFF or WebP file",
        "interp classify: error: 2 of 4 images could not be read (named above); the other 2 "
        "were classified",
    ]


def test_json_lists_the_unreadable_images_and_quiet_drops_the_note(folder, capsys, tmp_path):
    out = tmp_path / "out"
    argv = ["classify", "simplecnn", str(folder), *OPTS, "--json", "--quiet", "--out", str(out)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert [p["image"] for p in doc["predictions"]] == [str(folder / n) for n in ("a.png", "d.jpg")]
    assert doc["unreadable"] == [str(folder / "b_cut.jpg"), str(folder / "c_text.png")]
    assert json.loads((out / "predictions.json").read_text()) == doc
    assert (out / "predictions.png").stat().st_size > 0
    assert "skipped" not in captured.err and len(captured.err.splitlines()) == 3


def test_a_readable_folder_succeeds_with_the_skip_note(folder, capsys):
    (folder / "b_cut.jpg").unlink()
    (folder / "c_text.png").unlink()
    assert main(["classify", "simplecnn", str(folder), *OPTS]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "interp classify: skipped 2 file(s) that are not images by extension: notes.txt, table.csv"
    ]
    assert "unreadable" not in captured.out


def test_when_no_image_is_readable_nothing_is_classified(folder, capsys):
    (folder / "a.png").unlink()
    (folder / "d.jpg").unlink()
    assert main(["classify", "simplecnn", str(folder), *OPTS, "--quiet"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == (
        "interp classify: error: 2 of 2 images could not be read (named above); none could be "
        "classified"
    )
