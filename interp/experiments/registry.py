"""The experiment registry: every experiment declares itself in its own module.

An :class:`Experiment` names the experiment (its CLI name), the questions it answers (and
where its findings go among each question's answers), its run function, its result type and
its figures (PNG names, drawn by :mod:`interp.views.experiment_figures`). ``register`` adds
it; the suite (``interp experiment all``), the CLI (``interp experiment NAME``) and the report
take everything from :data:`EXPERIMENTS`. Adding an experiment is one module::

    @dataclass(eq=False)
    class ToyResult(ExperimentResult):
        json_name: ClassVar[str] = "toy.json"

    def toy(out=None, *, steps: int = 10, progress: bool = True) -> ToyResult: ...

    register(Experiment("toy", toy, ToyResult, questions={OWN_NICHE: 5}, figures=("toy",)))

plus its figure in :mod:`interp.views.experiment_figures` (``@experiment_figure("toy")``).
The run function takes ``out`` (``None``: write nothing; else its JSON document is saved
there), keyword settings whose defaults are what the suite runs (and its cache key), and
``progress``; with ``runs`` it shares trained networks with the other experiments.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InterpError
from .results import ExperimentResult

__all__ = [
    "DOMAIN_SPECIFICITY",
    "EXPERIMENTS",
    "OWN_NICHE",
    "PRESETS",
    "RANDOM_WEIGHTS",
    "Experiment",
    "get",
    "questions",
    "register",
    "unregister",
]

#: the student's questions, in the order the summary answers them
RANDOM_WEIGHTS = "How come we get these trends from random weights?"
OWN_NICHE = (
    "How come each unit finds its own niche instead of several converging on the same thing?"
)
DOMAIN_SPECIFICITY = (
    "Is there domain specificity in the hidden layers (why does transfer reuse early layers)?"
)
_QUESTION_ORDER = [RANDOM_WEIGHTS, OWN_NICHE, DOMAIN_SPECIFICITY]


@dataclass(frozen=True)
class Experiment:
    """A registered experiment.

    Attributes:
        name: its name on the command line (``interp experiment NAME``) and its folder in a
            suite run.
        run: ``run(out=None, *, <settings>, progress=True) -> result``; its keyword defaults
            are the settings the suite runs it with.
        result_type: the :class:`ExperimentResult` subclass ``run`` returns (its JSON name).
        questions: ``{question: position}``: the questions whose answers its findings are,
            and where among each question's answers they go (lower first).
        figures: the PNG names (without ``.png``) :mod:`interp.views.experiment_figures`
            draws for it.
        seeds: ``(keyword, help)``: the keyword of ``run`` that ``--seeds`` sets and what it
            means, or ``None`` when ``--seeds`` does not apply.
        presets: named settings passed to ``run`` over its defaults: ``"quick"`` (``--quick``:
            tiny, seconds, a smoke test of the whole run) and ``"light"`` (``--light``: what a
            demo can afford, fewer seeds and cells); an experiment without one runs its
            defaults, already that small.
    """

    name: str
    run: Callable[..., ExperimentResult]
    result_type: type[ExperimentResult]
    questions: Mapping[str, int] = field(default_factory=dict)
    figures: tuple[str, ...] = ()
    seeds: tuple[str, str] | None = None
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def json_name(self) -> str:
        """The JSON file its result is saved as."""
        return self.result_type.json_name

    @property
    def shares_runs(self) -> bool:
        """Whether ``run`` takes ``runs``, the folder of trained networks shared in a suite."""
        return "runs" in inspect.signature(self.run).parameters

    def settings(self, preset: str | None = None) -> dict[str, str]:
        """``run``'s keyword defaults (``repr``), but the output folders and ``progress``;
        with ``preset``, its settings over them."""
        found = {
            k: repr(p.default)
            for k, p in inspect.signature(self.run).parameters.items()
            if p.default is not inspect.Parameter.empty and k not in ("progress", "runs", "out")
        }
        found |= {k: repr(v) for k, v in self.preset(preset).items()}
        return found

    def preset(self, name: str | None) -> dict[str, Any]:
        """The settings of preset ``name`` (``None``, or one it does not have: none)."""
        if name is not None and name not in PRESETS:
            raise InterpError(f"unknown preset {name!r}: use one of {', '.join(PRESETS)}")
        return dict(self.presets.get(name, {})) if name else {}


#: the presets an experiment may define (``interp experiment --quick`` / ``--light``)
PRESETS = ("quick", "light")

#: every registered experiment by name, in registration order
EXPERIMENTS: dict[str, Experiment] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to :data:`EXPERIMENTS` (replacing one of the same name in place)."""
    if experiment.name == "all":
        raise InterpError("'all' runs every experiment: give the experiment another name")
    if not issubclass(experiment.result_type, ExperimentResult):
        raise InterpError(f"{experiment.name}: result_type must subclass ExperimentResult")
    for q in experiment.questions:
        if q not in _QUESTION_ORDER:
            _QUESTION_ORDER.append(q)
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def unregister(name: str) -> None:
    """Remove the experiment ``name`` (and any question only it answered)."""
    EXPERIMENTS.pop(name, None)
    asked = {q for e in EXPERIMENTS.values() for q in e.questions}
    builtin = (RANDOM_WEIGHTS, OWN_NICHE, DOMAIN_SPECIFICITY)
    _QUESTION_ORDER[:] = [q for q in _QUESTION_ORDER if q in asked or q in builtin]


def get(name: str) -> Experiment:
    """The experiment ``name``, or an error that lists the names."""
    if name not in EXPERIMENTS:
        raise InterpError(
            f"unknown experiment {name!r}: use one of {', '.join(EXPERIMENTS)} or all"
        )
    return EXPERIMENTS[name]


def questions(names: Any = None) -> list[tuple[str, list[str]]]:
    """``[(question, [experiment names answering it, in order])]`` over the experiments
    ``names`` (default: all registered), questions in order, those nobody answers left out."""
    chosen = [e for e in EXPERIMENTS.values() if names is None or e.name in names]
    out = []
    for q in _QUESTION_ORDER:
        answering = sorted(
            (e for e in chosen if q in e.questions), key=lambda e: e.questions[q]
        )  # stable: equal positions keep the registration order
        if answering:
            out.append((q, [e.name for e in answering]))
    return out
