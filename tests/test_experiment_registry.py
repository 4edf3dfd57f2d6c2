"""An experiment is added from one file: this one. The toy below declares its name, question,
run function, result type and figure here, and shows up in ``interp experiment --help``, in
``interp experiment toy``, in the suite's summary and in what the report reads of it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import matplotlib.pyplot as plt
import pytest

from interp.cli import main
from interp.experiments.registry import EXPERIMENTS, Experiment, register, unregister
from interp.experiments.results import ExperimentResult
from interp.pipeline import suite
from interp.views.experiment_figures import FIGURES, experiment_figure

TOY_QUESTION = "Does a toy experiment show up everywhere?"


@dataclass(eq=False)
class ToyResult(ExperimentResult):
    json_name: ClassVar[str] = "toy.json"


def toy(out: str | Path | None = None, *, steps: int = 3, progress: bool = True) -> ToyResult:
    """Counts to ``steps``."""
    result = ToyResult({"counts": list(range(steps)), "findings": [f"The toy counted {steps}."]})
    if out is not None:
        result.save(out)
    return result


def plot_toy(result: ToyResult) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(result["counts"])
    return fig


@pytest.fixture
def toy_experiment():
    experiment_figure("toy_counts")(plot_toy)
    exp = register(
        Experiment(
            "toy",
            toy,
            ToyResult,
            questions={TOY_QUESTION: 1},
            figures=("toy_counts",),
            seeds=("steps", "steps counted [3]"),
        )
    )
    yield exp
    unregister("toy")
    FIGURES.pop("toy_counts")


def test_a_toy_experiment_added_from_one_file(toy_experiment, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["experiment", "--help"])
    help_text = capsys.readouterr().out
    assert "toy" in help_text.split("positional arguments")[0]  # a choice of NAME
    assert "toy: steps counted [3]" in " ".join(help_text.split())  # what --seeds means

    assert main(["experiment", "toy", "--seeds", "5", "--out", str(tmp_path / "one"), "-q"]) == 0
    assert "The toy counted 5." in capsys.readouterr().out
    assert json.loads((tmp_path / "one" / "toy.json").read_text())["counts"] == list(range(5))
    assert (tmp_path / "one" / "toy_counts.png").stat().st_size > 0
    assert suite.load_experiment("toy", tmp_path / "one") == toy(steps=5)

    out = tmp_path / "suite"
    summary = suite.experiment_all(out, names=["toy"], progress=False)
    assert summary.questions == [
        {
            "question": TOY_QUESTION,
            "answers": [
                {
                    "experiment": "toy",
                    "finding": "The toy counted 3.",
                    "figures": ["toy/toy_counts.png"],
                }
            ],
        }
    ]
    md = (out / "summary.md").read_text()
    assert f"## {TOY_QUESTION}" in md and "**toy**: The toy counted 3. ([toy/toy_counts.png]" in md
    # what the report reads (interp.pipeline.report: SuiteResult.load, .figures(), .to_dict())
    read = suite.SuiteResult.load(out)
    assert read.figures() == ["toy/toy_counts.png"] and (out / read.figures()[0]).is_file()
    assert read.to_dict()["questions"][0]["answers"][0]["experiment"] == "toy"


def test_unregister_forgets_the_experiment_and_its_question(toy_experiment):
    assert "toy" in EXPERIMENTS and (TOY_QUESTION, ["toy"]) in suite.registry.questions()
    unregister("toy")
    assert "toy" not in EXPERIMENTS
    assert TOY_QUESTION not in [q for q, _ in suite.registry.questions()]
    register(toy_experiment)  # for the fixture's teardown


def test_registration_is_checked():
    with pytest.raises(suite.InterpError, match="'all'"):
        register(Experiment("all", toy, ToyResult))
    with pytest.raises(suite.InterpError, match="ExperimentResult"):
        register(Experiment("bad", toy, dict))  # type: ignore[arg-type]
    with pytest.raises(suite.InterpError, match="unknown experiment 'nope'"):
        suite.registry.get("nope")


def test_every_registered_experiment_runs_without_an_output_folder():
    """``run_experiment`` (and so ``interp experiment all``) calls ``run(None, runs=...)``:
    every registered experiment takes ``out=None`` (it writes nothing then), and one that
    trains networks without ``out`` or ``runs`` says which it needs, before any training."""
    import inspect

    import interp.experiments  # noqa: F401  (registers the shipped experiments)
    from interp.experiments.convergence import convergence
    from interp.experiments.registry import EXPERIMENTS

    assert len(EXPERIMENTS) >= 6
    for name, exp in EXPERIMENTS.items():
        first = next(iter(inspect.signature(exp.run).parameters.values()))
        assert first.name == "out" and first.default is None, name
    with pytest.raises(ValueError, match="needs out= or runs="):
        convergence(None)
