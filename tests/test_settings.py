"""One source of defaults: every CLI flag that has a setting defaults to it, and so does the
API function the command calls (they drifted: control seeds (0,) in the API and 0,1 in the
CLI, attribution saliency in the API and ig in the CLI)."""

from __future__ import annotations

import argparse
import inspect

import pytest

import interp
from interp.cli import build_parser
from interp.featvis.render import render
from interp.pipeline.card import unit_card
from interp.settings import ATTRIBUTION, EXAMPLES, HIERARCHY, RENDER

RENDER_FLAGS = {
    "steps": "steps",
    "size": "size",
    "objective": "objective",
    "param": "param",
    "lr": "lr",
    "reference": "reference",
    "n_reference": "n_reference",
    "precision": "precision",
    "redirect": "redirect",
}
# flag dest -> field (= API parameter): the same names but --iou
HIERARCHY_FLAGS = {
    **{f: f for f in ("data", "control_seeds", "min_control_units", "reference_images")},
    **{f: f for f in ("control_quantile", "quantile", "bootstrap", "precision")},
    "iou": "iou_threshold",
}
# command -> (settings, {flag dest: settings field}, API function, {flag dest: API parameter})
TABLE = {
    "visualize": (RENDER, RENDER_FLAGS, interp.visualize, RENDER_FLAGS),
    "atlas": (
        RENDER,
        {**RENDER_FLAGS, "per_layer": "per_layer"},
        interp.atlas,
        {**RENDER_FLAGS, "per_layer": "per_layer"},
    ),
    "hierarchy": (HIERARCHY, HIERARCHY_FLAGS, interp.hierarchy, HIERARCHY_FLAGS),
    "examples": (
        EXAMPLES,
        {"data": "data", "k": "k", "precision": "precision"},
        interp.examples,
        {"data": "data", "k": "k", "precision": "precision"},
    ),
    "attribute": (
        ATTRIBUTION,
        {"method": "method", "n_steps": "n_steps"},
        interp.attribute,
        {"method": "method", "n_steps": "n_steps"},
    ),
    "unit": (ATTRIBUTION, {"method": "method"}, unit_card, {"method": "method"}),
}


def _defaults(command: str) -> dict[str, object]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.default for a in sub.choices[command]._actions}


def _same(a: object, b: object) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b or str(a) == str(b)


@pytest.mark.parametrize("command", sorted(TABLE))
def test_flag_defaults_equal_the_settings_and_the_api(command):
    settings, flags, api, params = TABLE[command]
    cli = _defaults(command)
    signature = inspect.signature(api).parameters
    # a job that takes its settings object (settings=..., keyword overrides of its fields)
    # has them as that object's defaults; the others as keyword defaults
    takes_object = "settings" in signature
    if takes_object:
        assert signature["settings"].default is settings, f"{api.__name__}(settings=)"
    for dest, field in flags.items():
        want = getattr(settings, field)
        assert _same(cli[dest], want), f"{command} --{dest}: CLI {cli[dest]!r}, settings {want!r}"
        if takes_object:
            continue
        got = signature[params[dest]].default
        assert _same(got, want), f"{api.__name__}({params[dest]}=): API {got!r}, settings {want!r}"


def test_render_and_unit_steps_share_the_render_default():
    assert inspect.signature(render).parameters["steps"].default == RENDER.steps
    assert _defaults("unit")["steps"] == RENDER.steps
    assert "steps" not in _defaults("attribute")  # integration steps are --n-steps there


def test_report_full_preset_is_the_hierarchy_default():
    from interp.pipeline.report import FULL

    assert tuple(FULL["control_seeds"]) == HIERARCHY.control_seeds
    assert FULL["min_control_units"] == HIERARCHY.min_control_units
    assert FULL["bootstrap"] == HIERARCHY.bootstrap


def test_experiment_names_come_from_the_registry():
    """The CLI repeated the experiment names by hand; it takes them from the registry now."""
    from interp.experiments.registry import EXPERIMENTS

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    name = next(a for a in sub.choices["experiment"]._actions if a.dest == "name")
    assert list(name.choices) == [*EXPERIMENTS, "all"]


#: commands none of whose flags has a setting (they take a model, files, a run folder or a
#: preset: the study's are its StudySettings)
NO_SETTINGS = {"models", "layers", "classify", "data", "train", "report", "experiment", "study"}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_is_in_the_table_or_has_no_settings():
    assert set(_commands()) == set(TABLE) | NO_SETTINGS


def test_precision_means_one_thing_in_every_command():
    """``precision`` was called ``amp`` in the renderer, and ``auto`` meant bf16 on CUDA in
    dissection and examples but wherever bf16 is native (CPUs too) in rendering and
    training."""
    from interp.device import PRECISIONS, use_bf16
    from interp.train import TrainConfig

    found = {}
    for name, sub in _commands().items():
        for a in sub._actions:
            if a.dest == "precision":
                found[name] = a
                assert list(a.choices) == list(PRECISIONS)
                assert a.default == "auto"
                assert "auto: bf16 on a CUDA GPU with bf16, fp32 on the CPU" in a.help
    assert {"visualize", "atlas", "hierarchy", "examples", "train"} <= set(found)
    for api in (render, interp.visualize, interp.atlas, interp.hierarchy, interp.examples):
        params = inspect.signature(api).parameters
        if "settings" in params:  # the precision is a field of its settings object
            assert params["settings"].default.precision == "auto"
        else:
            assert params["precision"].default == "auto"
    assert TrainConfig().precision == "auto"
    assert not use_bf16("auto", "cpu") and use_bf16("bf16", "cpu") and not use_bf16("fp32", "cpu")
    with pytest.raises(interp.InterpError, match="precision"):
        use_bf16("fp16", "cpu")
    with pytest.warns(DeprecationWarning, match="precision"):
        m = interp.load_model("simplecnn", weights="none", seed=0, width=0.25, input_size=16)
        render(m, "features.relu1:0", steps=1, size=16, amp=False, progress=False)


# ---------------------------------------------------------------- settings as objects
def _flags(command: str) -> dict[str, argparse.Action]:
    return {a.dest: a for a in _commands()[command]._actions}


#: fields of RenderSettings whose flag is not a render flag: the common --seed, atlas's own
#: --per-layer; redirect_mode has no flag (it matters only with --redirect)
NOT_RENDER_FLAGS = {"seed": "seed", "per_layer": "per_layer"}


@pytest.mark.parametrize("command", ["visualize", "atlas"])
def test_every_render_setting_is_a_flag_with_its_default(command):
    """The render flags are built from RenderSettings' fields: one place for a setting's
    default and help (it used to live in six: the dataclass, two signatures, the CLI's flags
    and kwargs, and atlas's list of recorded keys)."""
    import dataclasses

    flags = _flags(command)
    for f in dataclasses.fields(RENDER):
        if f.name == "redirect_mode" or (f.name == "per_layer" and command == "visualize"):
            continue
        flag = f.metadata.get("flag")
        if flag:  # a setting on by default is a --no-X switch, off by default
            action = flags[flag[2:].replace("-", "_")]
            assert f.default is True and action.default is False, f.name
            assert action.help == f.metadata["help"]
            continue
        action = flags[NOT_RENDER_FLAGS.get(f.name, f.name)]
        assert _same(action.default, f.default), f"--{f.name}: {action.default!r} != {f.default!r}"
        if f.metadata.get("cli", True) and "what" not in f.metadata:
            assert action.help.startswith(f.metadata["help"]), f.name
            assert list(action.choices or []) == list(f.metadata.get("choices", [])), f.name


def test_the_render_flags_give_the_settings_back():
    """Parsed with no flags, visualize's and atlas's keyword overrides are RENDER itself."""
    from interp.cli._common import render_kwargs
    from interp.settings import with_overrides

    for command, argv in (("visualize", ["m", "--layer", "x"]), ("atlas", ["m"])):
        kwargs = render_kwargs(_commands()[command].parse_args(argv))
        kwargs.pop("progress")
        assert with_overrides(RENDER, **kwargs) == RENDER


def test_the_atlas_record_is_its_settings_object(tmp_path):
    """The record kept with the images (and the resume's key) is the settings object's
    fields, but per_layer (which units) and redirect_mode (nothing without redirect), after
    the model's and renderer's identity; the batch as resolved."""
    import dataclasses

    from interp.pipeline.atlas import RENDERER_VERSION
    from interp.pipeline.cache import weights_digest

    m = interp.load_model("simplecnn", weights="none", seed=0, width=0.25, input_size=16)
    kw = dict(steps=1, size=16, per_layer=1, reference="none", batch=2, seed=3)
    got = interp.atlas(m, tmp_path, layers="features.relu1", progress=False, **kw).settings
    want = dataclasses.asdict(dataclasses.replace(RENDER, **kw))
    del want["per_layer"], want["redirect_mode"]
    identity = {"model": m.name, "weights": weights_digest(m), "renderer": RENDERER_VERSION}
    assert got == identity | want


@pytest.mark.parametrize("job", ["atlas", "visualize", "examples_job", "hierarchy"])
def test_an_unknown_setting_names_the_settings_class(job):
    from interp.pipeline.examples import examples_job

    api = {"atlas": interp.atlas, "visualize": interp.visualize, "hierarchy": interp.hierarchy}
    fn = api.get(job, examples_job)
    cls = {"examples_job": "ExamplesSettings", "hierarchy": "HierarchySettings"}
    args = ("m", "x") if job in ("visualize", "examples_job") else ("m",)
    with pytest.raises(
        TypeError,
        match=f"{job}\\(\\) got unknown arguments \\['stpes'\\].*{cls.get(job, 'RenderSettings')}",
    ):
        fn(*args, stpes=3)


def test_examples_job_records_its_settings_object():
    """examples_job's stage record is ExamplesSettings' fields (but the data, keyed on its
    own), in the order the stage keys have always had."""
    from interp.settings import EXAMPLES, recorded

    assert list(recorded(EXAMPLES)) == ["k", "bottom", "dedup", "n", "size", "seed", "precision"]
