"""``interp experiment NAME`` and ``interp experiment all``: the set, and its plain answer.

``all`` runs every experiment with CPU-friendly defaults into ``OUT/<name>/`` (networks shared
in ``OUT/runs``; an experiment whose JSON is there is reused, so an interrupted ``all``
resumes) and writes ``OUT/summary.json`` and ``OUT/summary.md``: the student's three questions,
each answered by the experiments' findings — sentences that carry their numbers — with the
figure behind each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..utils import atomic_write_text, make_dir
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
        done = folder / filename
        start = time.perf_counter()
        if done.is_file() and not force:
            results[name] = json.loads(done.read_text())
            timing[name] = "reused"
        else:
            results[name] = run_experiment(name, folder, runs=runs, progress=progress)
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
