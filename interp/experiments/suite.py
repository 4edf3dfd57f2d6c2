"""``interp experiment NAME`` and ``interp experiment all``: the set, and its plain answer.

``all`` runs every experiment with CPU-friendly defaults into ``OUT/<name>/`` (networks shared
in ``OUT/runs``) and writes ``OUT/summary.json`` and ``OUT/summary.md``: the student's three
questions, each answered by the experiments' findings — sentences that carry their numbers —
with the figure behind each.

A finished experiment is reused only when its record (``OUT/<name>/stage.json``) carries the
key of the run asked for now: a digest of the experiment's name, its function's keyword
defaults and :data:`SUITE_VERSION`. A changed default recomputes it; so an interrupted
``all`` resumes, and results never outlive the settings that made them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text, make_dir, settings_digest
from ._common import write_json

__all__ = ["EXPERIMENTS", "experiment_all", "run_experiment"]


def _multiclass(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    from .multiclass import multiclass_lab

    kw = {} if seeds is None else {"seeds": seeds}
    return multiclass_lab(out, progress=progress, **kw)


def _symmetry(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    from .symmetry import symmetry

    return symmetry(out, progress=progress)


def _convergence(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    from .convergence import convergence

    kw = {} if seeds is None else {"seeds": seeds}
    return convergence(out, runs=runs, progress=progress, **kw)


def _redundancy(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    from .redundancy import redundancy

    return redundancy(out, runs=runs, progress=progress)


def _axis(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    from .axis_alignment import axis_alignment

    kw = {} if seeds is None else {"rotations": seeds}
    return axis_alignment(out, runs=runs, progress=progress, **kw)


def _transfer(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    from .transfer import transfer

    return transfer(out, progress=progress)


#: name -> (runner, JSON file it writes, what ``--seeds`` means for it)
EXPERIMENTS: dict[str, tuple[Callable[..., dict[str, Any]], str, str]] = {
    "multiclass-lab": (_multiclass, "multiclass.json", "network seeds [100]"),
    "symmetry": (_symmetry, "symmetry.json", "(unused)"),
    "convergence": (_convergence, "convergence.json", "networks trained [5]"),
    "redundancy": (_redundancy, "redundancy.json", "(unused)"),
    "axis-alignment": (_axis, "axis_alignment.json", "random rotations [3]"),
    "transfer": (_transfer, "transfer.json", "(unused)"),
}


#: bumped when an experiment's code changes its results with the same defaults
SUITE_VERSION = 1

#: name -> (module, function) whose keyword defaults define the experiment's settings
_FUNCTIONS = {
    "multiclass-lab": ("multiclass", "multiclass_lab"),
    "symmetry": ("symmetry", "symmetry"),
    "convergence": ("convergence", "convergence"),
    "redundancy": ("redundancy", "redundancy"),
    "axis-alignment": ("axis_alignment", "axis_alignment"),
    "transfer": ("transfer", "transfer"),
}


def experiment_settings(name: str) -> dict[str, Any]:
    """The settings an ``experiment all`` run of ``name`` uses: its function's defaults."""
    import importlib
    import inspect

    module, function = _FUNCTIONS[name]
    fn = getattr(importlib.import_module(f"{__package__}.{module}"), function)
    defaults = {
        k: repr(p.default)
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty and k not in ("progress", "runs", "out")
    }
    if "spec" in defaults:  # spec=None stands for RunSpec(): its fields are the settings
        from dataclasses import asdict

        from ._common import RunSpec

        defaults["spec"] = repr(asdict(RunSpec()))
    return {"experiment": name, "defaults": defaults, "suite_version": SUITE_VERSION}


def _finished(folder: Path, filename: str, key: str) -> dict[str, Any] | None:
    """The finished result in ``folder`` when its record carries ``key``, else ``None``."""
    record, done = folder / "stage.json", folder / filename
    try:
        if json.loads(record.read_text()).get("key") == key and done.is_file():
            return json.loads(done.read_text())
    except (OSError, json.JSONDecodeError):
        pass
    return None


def run_experiment(
    name: str,
    out: str | Path,
    *,
    seeds: int | None = None,
    runs: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one experiment into ``out`` (trained networks in ``runs``, default ``out/runs``)."""
    if name not in EXPERIMENTS:
        from ..errors import InterpError

        raise InterpError(
            f"unknown experiment {name!r}: use one of {', '.join(EXPERIMENTS)} or all"
        )
    from ..checks import check_int
    from ..utils import make_dir

    check_int("seeds", seeds, optional=True)
    out = make_dir(out)  # an unwritable --out fails now, not after the training
    runner = EXPERIMENTS[name][0]
    return runner(out, seeds, Path(runs) if runs is not None else out / "runs", progress)


QUESTIONS = [
    (
        "How come we get these trends from random weights?",
        ["symmetry", "multiclass-lab"],
    ),
    (
        "How come each unit finds its own niche instead of several converging on the same thing?",
        ["multiclass-lab", "redundancy", "convergence", "axis-alignment"],
    ),
    (
        "Is there domain specificity in the hidden layers (why does transfer reuse early layers)?",
        ["transfer"],
    ),
]


def experiment_all(
    out: str | Path, *, force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Every experiment with its defaults into ``out/<name>``; then the summary."""
    out = Path(out)
    make_dir(out)
    runs = out / "runs"
    results: dict[str, Any] = {}
    timing: dict[str, float | str] = {}
    for name, (_, filename, _) in EXPERIMENTS.items():
        folder = out / name
        settings = experiment_settings(name)
        key = settings_digest(settings, 16)
        start = time.perf_counter()
        found = None if force else _finished(folder, filename, key)
        if found is not None:
            results[name] = found
            timing[name] = "reused"
        else:
            (folder / "stage.json").unlink(missing_ok=True)  # not finished under these
            results[name] = run_experiment(name, folder, runs=runs, progress=progress)
            write_json(folder / "stage.json", {"key": key, "settings": settings})
            timing[name] = round(time.perf_counter() - start, 1)
    summary = {
        "questions": [
            {
                "question": q,
                "answers": [
                    {"experiment": n, "finding": f, "figures": _figures(out / n)}
                    for n in names
                    for f in results[n].get("findings", [])
                ],
            }
            for q, names in QUESTIONS
        ],
        "seconds": timing,
    }
    write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", _markdown(summary))
    return summary


def _figures(folder: Path) -> list[str]:
    return sorted(f"{folder.name}/{p.name}" for p in folder.glob("*.png"))


def _markdown(summary: dict[str, Any]) -> str:
    lines = ["# Why do units specialize? What the experiments measured", ""]
    for block in summary["questions"]:
        lines += [f"## {block['question']}", ""]
        shown: set[str] = set()
        for a in block["answers"]:
            figs = [f for f in a["figures"] if f not in shown]
            shown.update(figs)
            ref = " ".join(f"[{f}]({f})" for f in a["figures"])
            lines.append(f"- **{a['experiment']}**: {a['finding']} ({ref})")
        lines.append("")
    lines.append(
        "Time per experiment (s): " + ", ".join(f"{k} {v}" for k, v in summary["seconds"].items())
    )
    return "\n".join(lines) + "\n"
