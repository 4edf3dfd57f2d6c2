"""``interp experiment NAME`` and ``interp experiment all``: the set, and its plain answer.

The experiments come from the registry (:mod:`interp.experiments.registry`): each declares
its name, questions, run function, result type and figures in its own module. ``NAME`` runs
one and writes its result (JSON) and figures (:func:`write_experiment`, drawn by
:mod:`interp.views.experiment_figures` from the result object). ``all`` runs every one with
its CPU-friendly defaults into ``OUT/<name>/`` (networks shared in ``OUT/runs``) and writes
``OUT/summary.json`` and ``OUT/summary.md``: the student's questions, each answered by the
experiments' findings — sentences that carry their numbers — with the figure behind each.

Each experiment is a stage of the one stage cache (:mod:`interp.pipeline.cache`,
``OUT/<name>/stages/experiment-<key>.json``), keyed by a digest of the experiment's name, its
run function's keyword defaults (:func:`experiment_settings`) and :data:`SUITE_VERSION`. A changed
default recomputes it; so an interrupted ``all`` resumes, and results never outlive the
settings that made them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checks import check_int
from ..errors import InterpError
from ..experiments import RunSpec, registry
from ..experiments.registry import EXPERIMENTS, Experiment
from ..experiments.results import ExperimentResult, write_json
from ..utils import atomic_write_text, make_dir, prepare_output
from ..views.experiment_figures import save_experiment_figures
from .cache import StageCache, stage_key

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "ExperimentResult",
    "SuiteResult",
    "experiment_all",
    "experiment_settings",
    "load_experiment",
    "run_experiment",
    "write_experiment",
]


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


def experiment_settings(name: str, preset: str | None = None) -> dict[str, Any]:
    """The settings an ``experiment all`` run of ``name`` uses: its run function's defaults
    (with ``preset``, that preset's settings over them)."""
    defaults = registry.get(name).settings(preset)
    if "spec" in defaults:  # spec=None stands for RunSpec(): its fields are the settings
        defaults["spec"] = repr(dataclasses.asdict(RunSpec()))
    return {"experiment": name, "defaults": defaults, "suite_version": SUITE_VERSION}


def write_experiment(name: str, result: ExperimentResult, folder: str | Path) -> list[Path]:
    """The one writer of an experiment's outputs: its JSON document and its figures (drawn by
    :mod:`interp.views.experiment_figures` from ``result``), into ``folder``."""
    folder = make_dir(folder)
    return [
        result.save(folder),
        *save_experiment_figures(result, registry.get(name).figures, folder),
    ]


def load_experiment(name: str, folder: str | Path) -> ExperimentResult:
    """The result of experiment ``name`` saved in ``folder``."""
    exp = registry.get(name)
    path = Path(folder) / exp.json_name
    if not path.is_file():
        raise InterpError(f"{folder} holds no {exp.json_name}: run `interp experiment {name}`")
    return exp.result_type.load(folder)


def run_experiment(
    name: str,
    out: str | Path,
    *,
    seeds: int | None = None,
    runs: str | Path | None = None,
    progress: bool = True,
    preset: str | None = None,
) -> ExperimentResult:
    """Run one experiment into ``out`` (its JSON and figures; trained networks in ``runs``,
    default ``out/runs``, for the experiments that share them); with ``preset``
    (``"quick"``, ``"light"``), that preset's settings (an experiment without it runs its
    defaults, already that small)."""
    exp = registry.get(name)
    check_int("seeds", seeds, optional=True)
    out = prepare_output(out)  # unwritable: fails now; temp files of a killed run: removed
    kwargs: dict[str, Any] = {"progress": progress, **exp.preset(preset)}
    if seeds is not None and exp.seeds is not None:  # --seeds over the preset
        kwargs[exp.seeds[0]] = seeds
    if exp.shares_runs:
        kwargs["runs"] = Path(runs) if runs is not None else out / "runs"
    result = exp.run(None, **kwargs)
    write_experiment(name, result, out)
    return result


def experiment_all(
    out: str | Path,
    *,
    force: bool = False,
    progress: bool = True,
    names: Sequence[str] | None = None,
    preset: str | None = None,
) -> SuiteResult:
    """Every registered experiment (or those ``names``) with its defaults (with ``preset``,
    that preset's settings over them) into ``out/<name>``; then the summary."""
    out = Path(out)
    make_dir(out)
    chosen = list(EXPERIMENTS) if names is None else [registry.get(n).name for n in names]
    runs = out / "runs"
    results: dict[str, Any] = {}
    timing: dict[str, float | str] = {}
    for name in chosen:
        folder = out / name
        key = stage_key(settings=experiment_settings(name, preset))
        start = time.perf_counter()
        cache = StageCache(folder, force=force, progress=progress)

        def run(name: str = name, folder: Path = folder) -> dict[str, Any]:
            result = run_experiment(name, folder, runs=runs, progress=progress, preset=preset)
            return result.to_dict()

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
                    for n in answering
                    for f in results[n].get("findings", [])
                ],
            }
            for q, answering in registry.questions(chosen)
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
