"""The documentation: the README is a front door (short, every link resolves, nothing it
dropped is lost), and the docs site builds with ``mkdocs build --strict`` (a broken link, a
missing anchor or a page left out of the nav fails it)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert text.index("./scripts/demo.sh") < text.index("## A short tour")  # commands first
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+:", target):
            assert (ROOT / target).is_file(), target


def test_every_docs_page_is_in_the_nav():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    listed = {next(iter(entry.values())) for entry in nav}
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert listed == pages


def test_the_docs_build_strict(tmp_path):
    exe = Path(sys.executable).with_name("mkdocs")
    if not exe.exists() and shutil.which("mkdocs") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mkdocs is not installed (pip install -e '.[dev]')")
        pytest.skip("mkdocs is not installed (pip install -e '.[dev]')")
    cmd = [str(exe) if exe.exists() else "mkdocs", "build", "--strict", "-d", str(tmp_path)]
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "explorer.html").is_file()
