"""``interp study``: the hierarchy check ("early edges, later parts") across a panel of CNNs,
and as it emerges during training.

**The panel** (:func:`panel`): the three embedded ImageNet EfficientNet-Lites and
PartsWorld-trained CNNs of four architecture families (SimpleCNN, a torchvision ResNet, a
torchvision MobileNet, a timm RegNet), several seeds each. Every network is one work item,
in its own folder ``OUT/networks/NAME``:

* ``run/``: a PartsWorld network is trained there when it is missing (``interp train``'s
  run folder; an interrupted training resumes from its last epoch), keeping checkpoints at
  log-spaced steps (:func:`checkpoint_steps`: the initialization and more);
* ``hierarchy/``: its hierarchy check (:func:`interp.hierarchy`, with its stage cache: a
  rerun reuses every finished network). The random-init controls depend on the
  architecture, not on the weights, so the user cache measures them once per architecture
  and every seed reuses them;
* ``emergence/``: for a trained network, every checkpoint probed in the same layers and
  compared with the *final* network's controls (one baseline for the whole training;
  :func:`~interp.pipeline.hierarchy.against_controls`), and each layer's linear CKA to its
  final state; each checkpoint's probes are a stage;
* ``member.json``: the network's row of the table and its emergence, written last
  (atomically): a finished member is reused whole.

Under ``torchrun`` the members are dealt to the ranks whole: each rank measures its own as a
single process (:func:`interp.distributed.local`) and rank 0 assembles the study
(``study.json``, ``study.md``, figures, ``index.html``) from the members' files.

What is measured is :class:`Study`: per network its accuracy, the verdict, each category's
depth centroid with its 90% bootstrap interval, each edge instrument's verdict and support;
per family the seeds' spread; for the emergence, each category's excess per layer against
the training step, the step at which it reaches half its final excess, and when each layer
settles (CKA to its final state >= 0.9 from there on).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .. import distributed as dist
from ..activations import ActivationCapture
from ..data.concepts import ConceptData, load_concepts
from ..data.partsworld import partsworld_tensors
from ..device import resolve_device
from ..errors import InterpError
from ..experiments.results import ExperimentResult
from ..models.base import Model
from ..models.registry import load_model
from ..probes.hierarchy import Hierarchy
from ..settings import HIERARCHY, HierarchySettings
from ..similarity import cka_from_grams, gram
from ..train import TrainConfig, ensure_trained
from ..utils import atomic_write_text, make_dir, prepare_output
from .cache import stage_key
from .hierarchy import against_controls, hierarchy

__all__ = [
    "FAMILIES",
    "Member",
    "QUICK",
    "STUDY",
    "Study",
    "StudySettings",
    "checkpoint_steps",
    "emergence",
    "excess_mass",
    "half_steps",
    "mass_half_step",
    "panel",
    "settle_steps",
    "study",
]

#: the PartsWorld-trained families of the default panel: their ``interp train`` arch and
#: the settings each trains with beside :attr:`StudySettings.train`
FAMILIES: dict[str, dict[str, Any]] = {
    "SimpleCNN": {"arch": "simplecnn", "width": 0.5},
    # 0.878 test accuracy in 6 epochs at 48 px, 0.917 in 8 (seed 0, measured)
    "ResNet": {"arch": "torchvision:resnet18", "epochs": 8},
    # both underfit at 48 px with their ImageNet stems (stride 2, then 32x down in all):
    # MobileNetV3-small 0.175 (its BatchNorm momentum 0.01 leaves the running statistics
    # behind the weights: evaluation at chance), RegNetX-200MF 0.338-0.572. With a stride-1
    # stem (16x down), the usual small-image adaptation, seed 0 reaches 0.933 (MobileNetV3,
    # momentum 0.1, 12 epochs) and 0.913 (RegNetX, lr 0.01, 10 epochs; 12 here for margin)
    "MobileNet": {
        "arch": "torchvision:mobilenet_v3_small",
        "epochs": 12,
        "stem_stride": 1,
        "bn_momentum": 0.1,
    },
    "RegNet": {"arch": "timm:regnetx_002", "epochs": 12, "stem_stride": 1, "lr": 0.01},
}

#: bumped when what a network's measurement computes changes (a finished network's row is
#: then rebuilt: its training and probe stages, keyed by their own inputs, are reused).
#: 2: an initialization probed with its BatchNorm re-estimated; the "no excess" verdict
MEASUREMENT_VERSION = 2

#: ImageNet top-1 of the embedded Lites as published with their TensorFlow checkpoints
#: (tensorflow/tpu, models/official/efficientnet/lite); ImageNet is not shipped, so it is not
#: measured here
PUBLISHED_TOP1 = {
    "efficientnet_lite0": 0.751,
    "efficientnet_lite1": 0.767,
    "efficientnet_lite2": 0.776,
}


@dataclass(frozen=True)
class StudySettings:
    """What a study measures and how (``STUDY``: the default; ``QUICK``: the suite's)."""

    pretrained: tuple[str, ...] = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
    families: tuple[str, ...] = ("SimpleCNN", "ResNet", "MobileNet", "RegNet")
    seeds: int = 3
    #: the PartsWorld training of every family (``TrainConfig`` fields)
    train: dict[str, Any] = field(
        default_factory=lambda: {"data": "partsworld", "size": 48, "n": 6000, "epochs": 6}
    )
    #: the hierarchy check's settings (its full preset) and probe images (None: its default)
    hierarchy: HierarchySettings = HIERARCHY
    hierarchy_n: int | None = None
    #: largest probe image side (the hierarchy's default: the input size, at most 128)
    hierarchy_size: int = 128
    emergence: bool = True
    #: checkpoints of each trained network: the initialization and log-spaced steps to the end
    checkpoints: int = 7
    #: bootstrap resamples of each checkpoint's verdict
    checkpoint_bootstrap: int = 200
    #: PartsWorld images behind each layer's CKA to its final state
    cka_images: int = 256
    #: the CKA from which a layer counts as settled
    settled_cka: float = 0.9

    def record(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["hierarchy"] = asdict(self.hierarchy)
        return doc

    def member_record(self) -> dict[str, Any]:
        """What one network's measurement depends on: not the panel (another family or
        seed count reuses every network already measured), nor the findings' thresholds."""
        doc = self.record()
        for k in ("pretrained", "families", "seeds", "train", "settled_cka"):
            doc.pop(k)
        return doc


STUDY = StudySettings()
QUICK = StudySettings(
    pretrained=(),
    families=("SimpleCNN",),
    seeds=2,
    train={"data": "partsworld", "size": 32, "n": 400, "epochs": 2, "width": 0.25},
    hierarchy=replace(
        HIERARCHY,
        control_seeds=(0,),
        min_control_units=16,
        max_control_seeds=3,
        reference_images=32,
        bootstrap=100,
    ),
    hierarchy_n=64,
    checkpoints=4,
    checkpoint_bootstrap=50,
    cka_images=48,
)


@dataclass(frozen=True)
class Member:
    """One network of a panel: a pretrained ``spec``, or a PartsWorld ``train`` recipe
    (``TrainConfig`` fields) with its seed. Or, with its own ``accuracy``: ``model``, a
    function giving a ready network (one of yours) that the study measures; ``measure``, a
    function giving its measured :class:`~interp.probes.hierarchy.Hierarchy` (a planted
    result with a known verdict)."""

    name: str
    family: str
    spec: str | None = None
    train: dict[str, Any] | None = None
    model: Callable[[], Model] | None = field(default=None, compare=False)
    measure: Callable[[], Hierarchy] | None = field(default=None, compare=False)
    accuracy: float | None = None

    @property
    def trained(self) -> bool:
        return self.train is not None

    def describe(self) -> dict[str, Any]:
        """What identifies the member (its folder's stage key)."""
        return {"name": self.name, "family": self.family, "spec": self.spec, "train": self.train}

    def config(self, steps: Sequence[int]) -> TrainConfig:
        assert self.train is not None
        return TrainConfig(**{**self.train, "snapshots": sorted(set(steps))})


def panel(settings: StudySettings = STUDY) -> list[Member]:
    """The networks ``settings`` names: its pretrained specs, then each family's seeds."""
    members = [
        Member(name, "EfficientNet-Lite (ImageNet)", spec=name, accuracy=PUBLISHED_TOP1.get(name))
        for name in settings.pretrained
    ]
    for family in settings.families:
        if family not in FAMILIES:
            raise InterpError(f"unknown family {family!r}: one of {sorted(FAMILIES)}")
        for seed in range(settings.seeds):
            recipe = {**settings.train, **FAMILIES[family], "seed": seed}
            members.append(Member(f"{family.lower()}-s{seed}", family, train=recipe))
    return members


def training_steps(config: TrainConfig) -> int:
    """Optimizer steps of a PartsWorld run: ``ceil(n / batch) * epochs``."""
    if config.n is None:
        raise InterpError("a study's PartsWorld recipe needs its image count n")
    return math.ceil(config.n / config.batch_size) * config.epochs


def checkpoint_steps(total: int, count: int) -> list[int]:
    """``count`` checkpoint steps: 0 (the initialization), then log-spaced up to ``total``
    (distinct steps; fewer when ``total`` is small)."""
    if count < 2:
        raise InterpError("a study's emergence needs at least 2 checkpoints")
    steps = {0, total}
    for i in range(1, count - 1):
        steps.add(max(1, round(total ** (i / (count - 1)))))
    return sorted(steps)


# ----------------------------------------------------------------------- emergence numbers
def half_steps(steps: Sequence[int], excess: np.ndarray, minimum: float = 0.02) -> list[int | None]:
    """Per column of ``excess`` (checkpoints x layers, the first checkpoint the
    initialization), the first step at which the excess has risen half way from its value at
    the first checkpoint to its final value (``None`` where it rose by less than ``minimum``:
    nothing emerged there to time). Measured from the initialization, not from 0: an
    initialization is a random network, and its excess over other random networks is the
    noise floor of the measurement."""
    out: list[int | None] = []
    for j in range(excess.shape[1]):
        col = excess[:, j]
        start = 0.0 if not np.isfinite(col[0]) else float(col[0])
        rise = float(col[-1]) - start
        if not np.isfinite(col[-1]) or rise < minimum:
            out.append(None)
            continue
        hit = np.nonzero(np.nan_to_num(col, nan=-np.inf) >= start + 0.5 * rise)[0]
        out.append(int(steps[int(hit[0])]))
    return out


def excess_mass(excess: np.ndarray) -> np.ndarray:
    """Per checkpoint, a category's positive excess summed over layers."""
    return np.clip(np.nan_to_num(excess, nan=0.0), 0, None).sum(axis=1)


def mass_half_step(steps: Sequence[int], excess: np.ndarray, minimum: float = 0.02) -> int | None:
    """The first step at which a category's positive excess summed over layers has risen half
    way from its sum at the first checkpoint (the initialization: the sum of positive noise)
    to its final sum (``None`` when it rose by less than ``minimum``)."""
    mass = excess_mass(excess)
    rise = mass[-1] - mass[0]
    if rise < minimum:
        return None
    return int(steps[int(np.nonzero(mass >= mass[0] + 0.5 * rise)[0][0])])


def settle_steps(steps: Sequence[int], cka: np.ndarray, level: float = 0.9) -> list[int]:
    """Per layer (column of ``cka``, checkpoints x layers), the first step from which its CKA
    to the final state stays at or above ``level`` (the last step at worst)."""
    out = []
    for j in range(cka.shape[1]):
        ok = cka[:, j] >= level
        k = len(ok) - 1
        while k > 0 and ok[k - 1]:
            k -= 1
        out.append(int(steps[k]))
    return out


# ------------------------------------------------------------------------------- the result
@dataclass
class Study(ExperimentResult):
    """A study's measurements: ``doc`` is ``study.json`` (``rows``: a row per network;
    ``families``: each family's seeds summarized; ``emergence``: per trained network;
    ``findings``: sentences that carry their numbers). ``save`` also writes ``study.md``."""

    json_name: ClassVar[str] = "study.json"

    @property
    def rows(self) -> list[dict[str, Any]]:
        return list(self.doc["rows"])

    def save(self, folder: str | Path) -> Path:
        """``study.json`` and ``study.md`` in ``folder`` (atomically); returns the JSON."""
        atomic_write_text(make_dir(folder) / "study.md", markdown(self))
        return super().save(folder)

    def figures(self) -> dict[str, Any]:
        """The study's figures by name (:mod:`interp.views.study_figures`)."""
        from ..views.study_figures import figures

        return figures(self)


# ------------------------------------------------------------------------------- one member
def _row(member: Member, h: Hierarchy, accuracy: float | None, what: str) -> dict[str, Any]:
    """A network's row: accuracy, verdict, centroids with intervals, instruments."""
    v = h.verdict
    details = v.to_dict()
    centroids: dict[str, Any] = {}
    for name, inst in v.instruments.items():
        e = inst.get("edges", {})
        centroids[f"edge_{name}"] = {
            "centroid": e.get("centroid"),
            "interval_90": e.get("centroid_90"),
            "layer": e.get("centroid_layer"),
        }
    for cat, key in (("part", "parts"), ("object", "objects")):
        d = details.get(key) or (details.get("objects_after_parts") or {}).get(key)
        if d:
            centroids[cat] = {
                "centroid": d.get("centroid"),
                "interval_90": d.get("centroid_90"),
                "layer": d.get("centroid_layer"),
            }
    return {
        "name": member.name,
        "family": member.family,
        "spec": member.spec or (member.train or {}).get("arch"),
        "seed": (member.train or {}).get("seed"),
        "accuracy": None if accuracy is None else round(float(accuracy), 4),
        "accuracy_of": what,
        "layers": list(h.layers),
        "verdict": v.verdict,
        "text": str(v),
        "instruments": {
            k: {"verdict": i.get("verdict"), "support": i.get("bootstrap_support")}
            for k, i in v.instruments.items()
        },
        "instruments_agree": details.get("instruments_agree"),
        "centroids": centroids,
        "objects_after_parts": (details.get("objects_after_parts") or {}).get("verdict"),
    }


def _excess(h: Hierarchy) -> dict[str, list[float | None]]:
    """Per category (each edge instrument's, part, object...), the excess per layer of
    ``h.layers`` (``None`` where the instrument did not measure the layer)."""
    rows = h.profile()
    keys = list(dict.fromkeys(k for row in rows for k in row["fractions"]))
    out: dict[str, list[float | None]] = {}
    for k in keys:
        out[k] = []
        for row in rows:
            f, c = row["fractions"].get(k), row["control_fractions"].get(k)
            out[k].append(None if f is None or c is None else round(f - c, 4))
    return out


def _layer_grams(
    model: Model, images: torch.Tensor, layers: Sequence[str]
) -> dict[str, np.ndarray]:
    """Each layer's linear Gram matrix over ``images`` (n x n, of the flattened activations:
    linear CKA from two of them never forms a features x features product)."""
    chunks: dict[str, list[np.ndarray]] = {n: [] for n in layers}
    with torch.no_grad(), ActivationCapture(model.module, list(layers)) as cap:
        for s in range(0, len(images), 32):
            x = model.normalize(images[s : s + 32]).to(model.device)
            for n, a in cap.run(x).items():
                chunks[n].append(a.float().flatten(1).cpu().numpy())
    return {n: gram(np.concatenate(v)) for n, v in chunks.items()}


def _concepts(settings: StudySettings, size: int) -> ConceptData:
    return load_concepts(settings.hierarchy.data, size=size, n=settings.hierarchy_n)


def _measure_member(
    member: Member,
    folder: Path,
    settings: StudySettings,
    device: str,
    progress: bool,
    user_cache: bool,
) -> dict[str, Any]:
    """Train (when missing), measure and, for a trained network, follow its emergence."""
    started = time.perf_counter()
    steps: list[int] = []
    if member.measure is not None:
        h = member.measure()
        # a given result need not carry what hierarchy.json holds: its verdict is linked
        h.verdict.save(make_dir(folder / "hierarchy") / "verdict.json")
        row = {**_row(member, h, member.accuracy, "given"), "file": "hierarchy/verdict.json"}
        doc = {"row": row}
        return {**doc, "seconds": round(time.perf_counter() - started, 1)}
    if member.model is not None:
        model, accuracy, what = member.model(), member.accuracy, "given"
    elif member.trained:
        config = member.config([])
        if settings.emergence:
            steps = checkpoint_steps(training_steps(config), settings.checkpoints)
            config = member.config(steps)
        run = folder / "run"
        metrics = ensure_trained(config, run, device=device, progress=progress)
        model = load_model(str(run / "checkpoint.pt"), device=device)
        model.name = member.name  # its figures and files name the network, not a path
        accuracy, what = metrics.get("test_acc"), "PartsWorld test accuracy"
    else:
        model = load_model(str(member.spec), device=device)
        accuracy, what = member.accuracy, "ImageNet top-1 (published)"
    size = min(model.input_size[0], settings.hierarchy_size)
    data = _concepts(settings, size)
    h = hierarchy(
        model,
        data,
        settings=settings.hierarchy,
        out=folder / "hierarchy",
        progress=progress,
        user_cache=user_cache,
    )
    doc: dict[str, Any] = {"row": _row(member, h, accuracy, what)}
    if steps:
        doc["emergence"] = emergence(
            _checkpoints(folder / "run", steps, str(model.device)),
            h,
            data,
            settings,
            out=folder / "emergence",
            progress=progress,
        )
    doc["seconds"] = round(time.perf_counter() - started, 1)
    return doc


def emergence(
    checkpoints: Sequence[tuple[int, Model | Callable[[], Model]]],
    result: Hierarchy,
    data: ConceptData,
    settings: StudySettings = STUDY,
    *,
    out: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """How the hierarchy forms during a training: each checkpoint ``(step, network)`` (a
    network, or a function loading it; the last one is the final network, whose hierarchy
    is ``result``, measured on ``data`` with ``settings.hierarchy``) probed in ``result``'s
    layers against ``result``'s own controls, and each layer's linear CKA to the final
    network on ``settings.cka_images`` PartsWorld images no run trained on. Returns the
    steps, the layers, each category's excess per layer at every step, each step's verdict
    and the CKA (checkpoints x layers); :func:`study` adds the half and settling steps.
    ``out``: where each checkpoint's probes are kept as a stage (a rerun reuses them)."""
    steps = [int(s) for s, _ in checkpoints]
    if steps != sorted(set(steps)):
        raise InterpError(f"checkpoint steps must increase, got {steps}")

    def net(i: int) -> Model:
        n = checkpoints[i][1]
        return n if isinstance(n, Model) else n()

    images, _ = partsworld_tensors(settings.cka_images, data.image_size, 881_337)
    layers = list(result.layers)
    final = net(len(checkpoints) - 1)
    final_grams = _layer_grams(final, images, layers)
    profiles: list[dict[str, list[float | None]]] = []
    verdicts, cka = [], []
    for i in range(len(checkpoints)):
        model = final if i == len(checkpoints) - 1 else net(i)
        hh = against_controls(
            model,
            result,
            data,
            settings.hierarchy,
            bootstrap=settings.checkpoint_bootstrap,
            out=out,
            progress=progress,
        )
        profiles.append(_excess(hh))
        verdicts.append(hh.verdict.verdict)
        grams = _layer_grams(model, images, layers)
        cka.append([round(cka_from_grams(grams[n], final_grams[n]), 4) for n in layers])
    # a category a checkpoint has no fraction for (e.g. no detector at all yet) is None
    # there, so that every category has a row per checkpoint
    keys = list(dict.fromkeys(k for p in profiles for k in p))
    excess = {k: [p.get(k, [None] * len(layers)) for p in profiles] for k in keys}
    return {
        "steps": steps,
        "layers": layers,
        "excess": excess,
        "verdicts": verdicts,
        "cka_to_final": cka,
    }


def _checkpoints(folder: Path, steps: list[int], device: str) -> list[tuple[int, Any]]:
    """The run's checkpoints at ``steps`` as loaders (the last step is the final network)."""

    def loader(path: Path) -> Callable[[], Model]:
        return lambda: load_model(str(path), device=device)

    out = []
    for step in steps:
        path = folder / "snapshots" / f"step_{step:07d}.pt"
        if not path.is_file():
            if step != steps[-1]:
                raise InterpError(
                    f"{folder} has no checkpoint of step {step} ({path}): it was trained "
                    "without the study's checkpoints; delete the run folder to retrain it"
                )
            path = folder / "checkpoint.pt"
        out.append((step, loader(path)))
    return out


# ---------------------------------------------------------------------------- the study job
def study(
    out: str | Path,
    *,
    quick: bool = False,
    settings: StudySettings | None = None,
    members: Sequence[Member] | None = None,
    device: str = "auto",
    progress: bool = True,
    user_cache: bool = True,
) -> Study:
    """Run (or resume) a study into ``out`` and return it (module docstring).

    ``settings``: default ``QUICK`` with ``quick``, else ``STUDY``; ``members``: the panel
    (default :func:`panel` of the settings); ``user_cache``: keep the random-init controls
    in the user-level cache, where every network of an architecture finds them.
    """
    s = settings or (QUICK if quick else STUDY)
    chosen = list(members) if members is not None else panel(s)
    names = [m.name for m in chosen]
    if len(set(names)) != len(names):
        raise InterpError(f"a study's members need distinct names, got {names}")
    out = prepare_output(out)
    device = str(resolve_device(device))  # a CUDA asked for without a GPU fails now
    mine = chosen[dist.group_rank() :: dist.group_world()]
    with dist.local():  # each rank measures its members whole, as one process
        for m in mine:
            folder = make_dir(out / "networks" / m.name)
            key = stage_key(
                settings={
                    "member": m.describe(),
                    "study": s.member_record(),
                    "version": MEASUREMENT_VERSION,
                }
            )
            done = folder / "member.json"
            found = json.loads(done.read_text()) if done.is_file() else None
            if found is not None and found.get("key") == key:
                if progress:
                    print(f"reusing the finished network {m.name} ({done})", flush=True)
                continue
            doc = _measure_member(m, folder, s, device, progress, user_cache)
            atomic_write_text(done, json.dumps({"key": key, **doc}, indent=1) + "\n")
    dist.barrier()
    if dist.is_main():
        docs = [json.loads((out / "networks" / m.name / "member.json").read_text()) for m in chosen]
        result = assemble(docs, s)
        result.save(out)
        from ..views.study_figures import save_figures, write_page

        save_figures(result, out)
        write_page(result, out)
    dist.barrier()
    return Study.load(out)


# --------------------------------------------------------------------------- the assembly
def assemble(docs: Sequence[dict[str, Any]], settings: StudySettings) -> Study:
    """The study from its members' documents: the table, the families, the emergence and the
    findings."""
    rows = [d["row"] for d in docs]
    families: dict[str, dict[str, Any]] = {}
    for fam in dict.fromkeys(r["family"] for r in rows):
        rs = [r for r in rows if r["family"] == fam]
        cents: dict[str, list[float]] = {}
        for r in rs:
            for k, c in r["centroids"].items():
                if c.get("centroid") is not None:
                    cents.setdefault(k, []).append(float(c["centroid"]))
        accs = [r["accuracy"] for r in rs if r["accuracy"] is not None]
        families[fam] = {
            "networks": [r["name"] for r in rs],
            "verdicts": {v: sum(r["verdict"] == v for r in rs) for v in _VERDICTS},
            "accuracy": _spread(accs),
            "centroids": {k: _spread(v) for k, v in cents.items()},
        }
    emergence = {
        d["row"]["name"]: _emergence_numbers(d["emergence"], settings)
        for d in docs
        if d.get("emergence")
    }
    doc = {
        "settings": settings.record(),
        "rows": rows,
        "families": families,
        "emergence": emergence,
        "seconds": {d["row"]["name"]: d.get("seconds") for d in docs},
    }
    doc["findings"] = _findings(doc)
    return Study(doc)


_VERDICTS = ("holds", "does not hold", "inconclusive", "not measured")


def _spread(values: Sequence[float]) -> dict[str, Any] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    return {
        "n": len(a),
        "mean": round(float(a.mean()), 4),
        "min": round(float(a.min()), 4),
        "max": round(float(a.max()), 4),
        "sd": round(float(a.std(ddof=1)), 4) if len(a) > 1 else 0.0,
    }


def _emergence_numbers(e: dict[str, Any], settings: StudySettings) -> dict[str, Any]:
    steps = e["steps"]
    out: dict[str, Any] = {**e, "half_step": {}, "half_step_by_layer": {}, "mass": {}}
    for cat, rows in e["excess"].items():
        arr = np.array([[np.nan if v is None else v for v in r] for r in rows], dtype=float)
        mass = excess_mass(arr)
        out["mass"][cat] = {"initial": round(float(mass[0]), 4), "final": round(float(mass[-1]), 4)}
        out["half_step"][cat] = mass_half_step(steps, arr)
        out["half_step_by_layer"][cat] = half_steps(steps, arr)
    cka = np.asarray(e["cka_to_final"], dtype=float)
    settle = settle_steps(steps, cka, settings.settled_cka)
    out["settle_step"] = settle
    depth = np.arange(len(settle))
    if len(set(settle)) > 1:
        from scipy.stats import spearmanr

        out["settle_depth_spearman"] = round(float(spearmanr(depth, settle).statistic), 4)
    else:
        out["settle_depth_spearman"] = None
    return out


def _findings(doc: dict[str, Any]) -> list[str]:
    rows = doc["rows"]
    n = len(rows)
    holds = [r["name"] for r in rows if r["verdict"] == "holds"]
    others = [r for r in rows if r["verdict"] != "holds"]
    out = [
        f"'Early edges, later parts' holds in {len(holds)} of {n} networks"
        + (f" ({', '.join(holds)})" if holds else "")
        + "."
    ]
    for r in others:  # why not: each instrument's verdict and where its centroid lies
        out.append(f"{r['name']}: {r['text']}.")
    for fam, f in doc["families"].items():
        if f["centroids"] and len(f["networks"]) > 1:
            parts = [
                f"{k} {c['mean']:.2f} (range {c['min']:.2f}-{c['max']:.2f})"
                for k, c in f["centroids"].items()
                if c is not None
            ]
            out.append(
                f"{fam}, {len(f['networks'])} networks: depth centroids " + "; ".join(parts) + "."
            )
    for name, e in doc["emergence"].items():
        hs = e["half_step"]
        edge = {k: v for k, v in hs.items() if k.startswith("edge_")}
        part = hs.get("part")
        timed = ", ".join(f"{k} at step {v}" for k, v in hs.items() if v is not None)
        line = f"{name}: half the rise of the excess (from the initialization) is reached by " + (
            timed or "no category"
        )
        flat = [
            f"{k} ({e['mass'][k]['initial']:.2f} at initialization, {e['mass'][k]['final']:.2f} "
            "final)"
            for k, v in hs.items()
            if v is None and k in e.get("mass", {})
        ]
        if flat:
            line += "; no rise beyond the initialization's noise: " + ", ".join(flat)
        if part is not None and any(v is not None for v in edge.values()):
            first = [k for k, v in edge.items() if v is not None and v < part]
            line += (
                f"; edges ({', '.join(first)}) before parts"
                if first
                else "; no edge instrument before parts"
            )
        rho = e.get("settle_depth_spearman")
        settle = ", ".join(f"{n} {st}" for n, st in zip(e["layers"], e["settle_step"], strict=True))
        line += f". Layers settle (CKA to final >= 0.9) at steps {settle}"
        if rho is not None:
            line += f" (Spearman rho of depth and settling step {rho:+.2f})"
        out.append(line + ".")
    return out


def markdown(result: Study) -> str:
    """``study.md``: the findings, the table and the emergence numbers."""
    doc = result.doc
    lines = ["# Across a panel of CNNs: does 'early edges, later parts' hold?", ""]
    lines += [f"- {f}" for f in doc.get("findings", [])] + [""]
    lines += [
        "| network | family | accuracy | verdict | edge centroids (90%) | part | object |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:

        def fmt(c: dict[str, Any] | None) -> str:
            if not c or c.get("centroid") is None:
                return "-"
            lo, hi = c.get("interval_90") or (None, None)
            iv = "" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]"
            return f"{c['centroid']:.2f}{iv}"

        edges = "; ".join(
            f"{k[5:]} {fmt(c)}" for k, c in r["centroids"].items() if k.startswith("edge_")
        )
        acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        lines.append(
            f"| {r['name']} | {r['family']} | {acc} | {r['verdict']} | {edges} | "
            f"{fmt(r['centroids'].get('part'))} | {fmt(r['centroids'].get('object'))} |"
        )
    return "\n".join(lines) + "\n"
