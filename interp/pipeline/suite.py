"""``interp experiment NAME`` and ``interp experiment all``: the set, and its plain answer.

``all`` runs every experiment with CPU-friendly defaults into ``OUT/<name>/`` (networks shared
in ``OUT/runs``) and writes ``OUT/summary.json`` and ``OUT/summary.md``: the student's three
questions, each answered by the experiments' findings — sentences that carry their numbers —
with the figure behind each.

Each experiment is a stage of the one stage cache (:mod:`interp.pipeline.cache`,
``OUT/<name>/stages/experiment-<key>.json``), keyed by a digest of the experiment's name, its
function's keyword defaults (:func:`experiment_settings`) and :data:`SUITE_VERSION`. A changed
default recomputes it; so an interrupted ``all`` resumes, and results never outlive the
settings that made them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from ..checks import check_int
from ..errors import InterpError
from ..experiments._common import RunSpec, write_json
from ..experiments.axis_alignment import axis_alignment
from ..experiments.convergence import convergence
from ..experiments.multiclass import multiclass_lab
from ..experiments.redundancy import redundancy
from ..experiments.symmetry import symmetry
from ..experiments.transfer import transfer
from ..utils import atomic_write_text, make_dir
from .cache import StageCache, stage_key

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ExperimentResult",
    "SuiteResult",
    "experiment_all",
    "experiment_settings",
    "run_experiment",
]


class Experiment(NamedTuple):
    """A registered experiment: how to run it, the JSON it writes, what ``--seeds`` means."""

    runner: Callable[[Path, int | None, Path, bool], dict[str, Any]]
    filename: str
    seeds: str
    function: Callable[..., dict[str, Any]]  # whose keyword defaults are its settings


def _multiclass(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    kw = {} if seeds is None else {"seeds": seeds}
    return multiclass_lab(out, progress=progress, **kw)


def _symmetry(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    return symmetry(out, progress=progress)


def _convergence(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    kw = {} if seeds is None else {"seeds": seeds}
    return convergence(out, runs=runs, progress=progress, **kw)


def _redundancy(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    return redundancy(out, runs=runs, progress=progress)


def _axis(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    kw = {} if seeds is None else {"rotations": seeds}
    return axis_alignment(out, runs=runs, progress=progress, **kw)


def _transfer(out: Path, seeds: int | None, runs: Path, progress: bool) -> dict[str, Any]:
    return transfer(out, progress=progress)


#: the experiment registry: the CLI takes its choices and its ``--seeds`` help from it
EXPERIMENTS: dict[str, Experiment] = {
    "multiclass-lab": Experiment(
        _multiclass, "multiclass.json", "network seeds [100]", multiclass_lab
    ),
    "symmetry": Experiment(_symmetry, "symmetry.json", "(unused)", symmetry),
    "convergence": Experiment(
        _convergence, "convergence.json", "networks trained [5]", convergence
    ),
    "redundancy": Experiment(_redundancy, "redundancy.json", "(unused)", redundancy),
    "axis-alignment": Experiment(
        _axis, "axis_alignment.json", "random rotations [3]", axis_alignment
    ),
    "transfer": Experiment(_transfer, "transfer.json", "(unused)", transfer),
}


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns: one experiment's document (the JSON it wrote,
    ``EXPERIMENTS[name].filename``), its findings and the folder holding it and its figures.

    ``to_dict()`` is the document; ``figures()`` its PNGs by name; ``save(folder)`` writes the
    document there; ``ExperimentResult.load(folder, name)`` reads it back.
    """

    name: str
    doc: dict[str, Any]
    folder: Path

    @property
    def findings(self) -> list[str]:
        """The experiment's conclusions: sentences that carry their numbers."""
        return list(self.doc.get("findings", []))

    def to_dict(self) -> dict[str, Any]:
        return self.doc

    def figures(self) -> dict[str, Path]:
        """``{stem: path}`` of the figures the experiment drew in its folder."""
        return {p.stem: p for p in sorted(self.folder.glob("*.png"))}

    def save(self, folder: str | Path) -> Path:
        path = make_dir(folder) / EXPERIMENTS[self.name].filename
        write_json(path, self.doc)
        return path

    @classmethod
    def load(cls, folder: str | Path, name: str) -> ExperimentResult:
        folder = Path(folder)
        if name not in EXPERIMENTS:
            raise InterpError(f"unknown experiment {name!r}: use one of {', '.join(EXPERIMENTS)}")
        path = folder / EXPERIMENTS[name].filename
        if not path.is_file():
            raise InterpError(f"{folder} holds no {path.name}: run `interp experiment {name}`")
        return cls(name, json.loads(path.read_text()), folder)


@dataclass
class SuiteResult:
    """What :func:`experiment_all` returns: the student's questions, each answered by the
    experiments' findings with the figures behind them, and the time each experiment took.

    ``to_dict()`` is ``summary.json``; ``save(folder)`` writes it and ``summary.md``;
    ``SuiteResult.load(folder)`` reads ``summary.json`` back.
    """

    questions: list[dict[str, Any]]
    seconds: dict[str, float | str]

    def to_dict(self) -> dict[str, Any]:
        return {"questions": self.questions, "seconds": self.seconds}

    def figures(self) -> list[str]:
        """Every figure an answer cites, relative to the suite's folder (each once)."""
        seen: dict[str, None] = {}
        for block in self.questions:
            for a in block["answers"]:
                seen.update(dict.fromkeys(a["figures"]))
        return list(seen)

    def save(self, folder: str | Path) -> list[Path]:
        folder = make_dir(folder)
        write_json(folder / "summary.json", self.to_dict())
        atomic_write_text(folder / "summary.md", _markdown(self.to_dict()))
        return [folder / "summary.json", folder / "summary.md"]

    @classmethod
    def load(cls, folder: str | Path) -> SuiteResult:
        path = Path(folder) / "summary.json"
        if not path.is_file():
            raise InterpError(
                f"{folder} holds no summary.json: give the --out folder of a finished "
                "`interp experiment all` run"
            )
        doc = json.loads(path.read_text())
        return cls(doc["questions"], doc.get("seconds", {}))


#: bumped when an experiment's code changes its results with the same defaults
SUITE_VERSION = 1


def experiment_settings(name: str) -> dict[str, Any]:
    """The settings an ``experiment all`` run of ``name`` uses: its function's defaults."""
    fn = EXPERIMENTS[name].function
    defaults = {
        k: repr(p.default)
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty and k not in ("progress", "runs", "out")
    }
    if "spec" in defaults:  # spec=None stands for RunSpec(): its fields are the settings
        defaults["spec"] = repr(dataclasses.asdict(RunSpec()))
    return {"experiment": name, "defaults": defaults, "suite_version": SUITE_VERSION}


def run_experiment(
    name: str,
    out: str | Path,
    *,
    seeds: int | None = None,
    runs: str | Path | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Run one experiment into ``out`` (trained networks in ``runs``, default ``out/runs``)."""
    if name not in EXPERIMENTS:
        raise InterpError(
            f"unknown experiment {name!r}: use one of {', '.join(EXPERIMENTS)} or all"
        )
    check_int("seeds", seeds, optional=True)
    out = make_dir(out)  # an unwritable --out fails now, not after the training
    runner = EXPERIMENTS[name].runner
    doc = runner(out, seeds, Path(runs) if runs is not None else out / "runs", progress)
    return ExperimentResult(name, doc, out)


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


def experiment_all(out: str | Path, *, force: bool = False, progress: bool = True) -> SuiteResult:
    """Every experiment with its defaults into ``out/<name>``; then the summary."""
    out = Path(out)
    make_dir(out)
    runs = out / "runs"
    results: dict[str, Any] = {}
    timing: dict[str, float | str] = {}
    for name in EXPERIMENTS:
        folder = out / name
        settings = experiment_settings(name)
        key = stage_key(settings=settings)
        start = time.perf_counter()
        cache = StageCache(folder, force=force, progress=progress)

        def run(name: str = name, folder: Path = folder) -> dict[str, Any]:
            return run_experiment(name, folder, runs=runs, progress=progress).doc

        # the folder holds one experiment's files: a run under other settings replaces them
        results[name] = cache.run("experiment", key, run, exclusive=True)
        if cache.log["experiment"] == "reused":
            timing[name] = "reused"
        else:
            timing[name] = round(time.perf_counter() - start, 1)
    summary = SuiteResult(
        questions=[
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
        seconds=timing,
    )
    summary.save(out)
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
