"""The command line: help texts, the acceptance commands, clear errors with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from interp.cli import build_parser, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "INTERP_OFFLINE": "1"}
    exe = os.path.join(os.path.dirname(sys.executable), "interp")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=300)


def test_help_of_every_subcommand(capsys):
    with pytest.raises(SystemExit) as code:
        main(["--help"])
    assert code.value.code == 0
    text = capsys.readouterr().out
    for cmd in ("models", "layers", "classify"):
        assert cmd in text
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        sub = capsys.readouterr().out
        assert "--device" in sub and "--quiet" in sub and "--weights" in sub


def test_console_script_classifies_chelsea_png_as_a_cat(photo_dir):
    result = run_cli("classify", "efficientnet_lite0", str(photo_dir / "chelsea.png"), "--quiet")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("chelsea.png")
    assert any(
        cat in lines[1] for cat in ("tabby", "tiger cat", "Persian", "Siamese", "Egyptian cat")
    )
    assert len(lines) == 6  # name + top-5


def test_layers_json_lists_every_block(capsys):
    assert main(["layers", "efficientnet_lite0", "--json", "--quiet", "--device", "cpu"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in doc["layers"]}
    for i in range(16):
        row = rows[f"_blocks.{i}"]
        assert row["output_shape"] and row["rf_size"] and row["rf_stride"]
    assert doc["model"]["name"] == "efficientnet_lite0"


def test_layers_of_resnet18_random_init_with_filter_and_outputs(capsys, tmp_path):
    argv = ["layers", "torchvision:resnet18", "--weights", "none", "--json", "--quiet"]
    assert main([*argv, "--filter", "layer*", "--out", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in doc["layers"]]
    assert "layer1.0.conv1" in names and "fc" not in names
    assert {p.name for p in tmp_path.iterdir()} == {"layers.json", "layers.txt", "layers.png"}
    assert doc["model"]["weights_source"] == "random init"


def test_models_lists_and_filters(capsys):
    assert main(["models", "resnet1*", "--quiet"]) == 0
    assert "torchvision:resnet18" in capsys.readouterr().out.split()
    assert main(["models", "zzz", "--quiet"]) == 1


def test_classify_grey_rgba_and_writes_outputs(tmp_path, capsys):
    grey = tmp_path / "grey.png"
    Image.fromarray((np.random.default_rng(0).random((80, 60)) * 255).astype(np.uint8)).save(grey)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (50, 70), (255, 0, 0, 128)).save(rgba)
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (90, 90), (0, 128, 255)).save(jpeg)
    out = tmp_path / "out"
    argv = ["classify", "efficientnet_lite0", str(grey), str(rgba), str(jpeg), "--top", "3"]
    assert main([*argv, "--json", "--quiet", "--out", str(out)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [len(p["top"]) for p in doc["predictions"]] == [3, 3, 3]
    assert (out / "predictions.png").stat().st_size > 0
    assert json.loads((out / "predictions.json").read_text()) == doc


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["layers", "resnet18"], "Did you mean: torchvision:resnet18"),
        (["layers", "torchvision:resnet18"], "resnet18-f37072fd.pth"),
        (["classify", "efficientnet_lite0"], "--photos"),
        (["layers", "tiny.pt"], "does not exist"),
        (["layers", "efficientnet_lite0", "--device", "gpu"], "use 'auto', 'cpu', 'cuda'"),
    ],
)
def test_errors_are_one_clear_line_with_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unreadable_image(tmp_path, capsys):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")
    assert main(["classify", "efficientnet_lite0", str(bad), "--quiet"]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["classify", "efficientnet_lite0", str(tmp_path / "missing.png")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_parser_defaults():
    args = build_parser().parse_args(["layers", "efficientnet_lite0"])
    assert args.device == "auto" and args.weights == "default" and not args.quiet


def test_hierarchy_command_end_to_end_and_errors(tmp_path, capsys):
    out = tmp_path / "h"
    args = ["hierarchy", "simplecnn", "--weights", "none", "--data", "partsworld", "--n", "32"]
    args += ["--size", "32", "--layers", "features.relu1,features.relu5,fc", "--quiet"]
    args += ["--control-seeds", "0", "--bootstrap", "20", "--out", str(out)]
    args += ["--min-control-units", "64", "--reference-images", "16"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "features.relu5" in text and "verdict:" in text and "skipped fc" in text
    doc = json.loads((out / "hierarchy.json").read_text())
    assert doc["settings"]["images"] == 32 and doc["control"]["seeds"] == [0]
    assert (out / "profile.png").is_file()
    bad = ["hierarchy", "simplecnn", "--weights", "none", "--quiet"]
    assert main([*bad, "--data", f"broden:{tmp_path / 'nowhere'}"]) == 2
    assert "index.csv" in capsys.readouterr().err
    assert main([*bad, "--data", "imagenet"]) == 2
    assert "broden:PATH" in capsys.readouterr().err
    assert main([*bad, "--layers", "features.conv9"]) == 2
    assert "features.conv" in capsys.readouterr().err


def test_examples_attribute_and_unit_commands(tmp_path, photo_dir, capsys):
    common = ["efficientnet_lite0", "--quiet"]
    out = tmp_path / "ex"
    args = ["examples", *common, "--data", "photos", "--n", "16", "--size", "96"]
    assert (
        main([*args, "--layers", "_blocks.1", "--k", "3", "--units", "0:4", "--out", str(out)]) == 0
    )
    doc = json.loads((out / "examples.json").read_text())
    assert len(doc["layers"][0]["units"]) == 4 and len(doc["layers"][0]["figures"]) == 1
    capsys.readouterr()
    image = str(photo_dir / "chelsea.png")
    att = tmp_path / "att"
    assert (
        main(
            [
                "attribute",
                *common,
                image,
                "--method",
                "ig",
                "--n-steps",
                "16",
                "--target",
                "tabby",
                "--out",
                str(att),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "class 281 (tabby)" in text and "completeness" in text
    assert (att / "ig.png").is_file() and (att / "ig.npy").is_file()
    unit = ["unit", *common, "_blocks.5:3", "--n", "12", "--k", "3", "--steps", "8"]
    assert main([*unit, "--method", "saliency", "--out", str(tmp_path / "u")]) == 0
    assert (tmp_path / "u" / "card__blocks.5_3.png").is_file()
    assert main(["unit", *common, "_blocks.5:999", "--out", str(tmp_path / "u")]) == 2
    assert "out of range" in capsys.readouterr().err
