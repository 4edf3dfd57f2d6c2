"""The report: a quick report of a small model is complete, escaped and atomic; a run killed
midway resumes without redoing finished stages.

The site in a real browser is tests/test_explorer.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import interp
from interp.pipeline import report as page_mod
from interp.pipeline.report import report


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):  # noqa: ANN001
        d = dict(attrs)
        if tag == "img":
            self.srcs.append(d["src"])
        if tag == "a" and d.get("href"):
            self.links.append(d["href"])


def test_quick_report_is_complete_and_escaped(quick_report):
    _, out, page = quick_report
    text = page.read_text()
    assert "tiny &lt;cnn&gt; &amp; co" in text and "tiny <cnn>" not in text
    parser = _Images()
    parser.feed(text)
    assert len(parser.srcs) >= 6
    for src in parser.srcs + parser.links:
        assert not src.startswith(("http:", "https:", "/")), src  # no external assets
        assert (out / src).is_file(), src
    doc = json.loads((out / "report.json").read_text())
    assert doc["hierarchy"]["verdict"]["verdict"] in ("holds", "does not hold", "inconclusive")
    assert all(doc["units"].values())
    assert not list(out.rglob("*.tmp"))


def test_report_shows_a_study_as_its_panel_section(quick_report, tmp_path):
    """``report(study=DIR)``: the study's findings, table and figures in a section of the
    page, its files copied so that every link resolves; the report's stages are reused."""
    from interp.pipeline.study import QUICK, Member, study
    from interp.probes.hierarchy import Hierarchy

    model, out, _ = quick_report
    h = Hierarchy.load(out / "hierarchy")
    members = [Member("tiny-net", "tiny", measure=lambda: h, accuracy=0.5)]
    result = study(tmp_path / "study", settings=QUICK, members=members, progress=False)
    page = report(model, out, quick=True, progress=False, study=tmp_path / "study")
    text = page.read_text()
    assert 'id="study"' in text and "tiny-net" in text
    assert result.findings[0].split("(")[0].replace("'", "&#x27;") in text
    parser = _Images()
    parser.feed(text)
    study_files = [s for s in parser.srcs + parser.links if s.startswith("study/")]
    assert "study/centroids.png" in study_files and "study/study.json" in study_files
    assert "study/networks/tiny-net/hierarchy/verdict.json" in study_files
    for src in parser.srcs + parser.links:
        assert (out / src.split("#")[0]).is_file(), src
    doc = json.loads((out / "report.json").read_text())
    assert set(doc["seconds"].values()) == {"reused"} and doc["study"]
    assert "index.html#study" in parser.links  # the site bar
    with pytest.raises(interp.InterpError):
        report(model, out, quick=True, progress=False, study=tmp_path / "nothing")


def test_killed_report_resumes_without_redoing_stages(tmp_path, monkeypatch):
    model = interp.load_model("simplecnn", weights="none", seed=1, width=0.25, input_size=32)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(page_mod, "hierarchy", killed)
    with pytest.raises(KeyboardInterrupt):
        report(model, tmp_path, quick=True, progress=False)
    assert not (tmp_path / "index.html").exists()  # never a page that links missing files
    done = {p.stem.rsplit("-", 1)[0] for p in (tmp_path / "stages").glob("*.json")}
    assert done == {"inventory", "atlas", "examples"}
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stages").glob("*.json")}
    monkeypatch.undo()
    report(model, tmp_path, quick=True, progress=False)
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["seconds"]["inventory"] == doc["seconds"]["atlas"] == "reused"
    assert doc["seconds"]["examples"] == "reused"
    assert isinstance(doc["seconds"]["hierarchy"], float)
    for name, stamp in stamps.items():
        assert (tmp_path / "stages" / name).stat().st_mtime_ns == stamp
    # a complete rerun reuses everything
    report(model, tmp_path, quick=True, progress=False)
    again = json.loads((tmp_path / "report.json").read_text())
    assert set(again["seconds"].values()) == {"reused"}


def test_report_cli_help():
    from interp.cli import main

    with pytest.raises(SystemExit) as code:
        main(["report", "--help"])
    assert code.value.code == 0
    assert page_mod.QUICK["per_layer"] < page_mod.FULL["per_layer"]


def test_demo_quick_builds_both_pages(tmp_path):
    """`./scripts/demo.sh --quick`: the whole demo with tiny settings (about a minute)."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "demo"
    env = {**os.environ, "INTERP_DEMO_OUT": str(out), "INTERP_OFFLINE": "1"}
    done = subprocess.run(
        ["bash", str(root / "scripts" / "demo.sh"), "--quick", "--quiet"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("lite0", "pw"):
        page = out / name / "index.html"
        assert page.is_file() and "Early edges, later parts?" in page.read_text()
    assert "lite0/index.html" in done.stdout
