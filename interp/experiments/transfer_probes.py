"""Linear probes of the transfer experiment: how linearly separable a target task is in the
global-average-pooled features of each layer of a frozen source network.

Each probed layer's activation is averaged over space (one number per channel) and a logistic
regression (standardized features) is trained on the target's training images and scored on
its test images. Random-init sources have their BatchNorm running statistics re-estimated on
the target's training images, so they are not handicapped by the default (0, 1) statistics;
trained sources keep their stored statistics.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..activations import ActivationCapture
from ..data.specs import load_data
from ..models.registry import load_model
from ._common import simplecnn_input
from .finetune import reestimate_bn

__all__ = [
    "CNN_PROBE_LAYERS",
    "LITE0_PROBE_LAYERS",
    "LITE0_STAGE_ENDS",
    "PRETTY",
    "gap_features",
    "linear_probe",
    "probe_findings",
    "run_probes",
    "stack",
    "to_size",
]

CNN_PROBE_LAYERS = [f"features.relu{i}" for i in range(1, 6)]
#: EfficientNet-Lite0's stage ends: blocks 1, 3, 5, 8, 11, 15 and 16 of its 16
LITE0_STAGE_ENDS = (
    "_blocks.0",
    "_blocks.2",
    "_blocks.4",
    "_blocks.7",
    "_blocks.10",
    "_blocks.14",
    "_blocks.15",
)
LITE0_PROBE_LAYERS = ["_act_stem", *LITE0_STAGE_ENDS]
#: the names findings and figures give sources and targets
PRETTY = {
    "simplecnn": "PartsWorld CNN",
    "efficientnet_lite0": "efficientnet_lite0",
    "digits": "digits",
    "partsworld_b": "PartsWorld-B",
}


def gap_features(
    module: nn.Module, x: torch.Tensor, layers: Sequence[str], *, batch_size: int = 128
) -> dict[str, np.ndarray]:
    """Global-average-pooled activations ``{layer: (N, channels)}`` of ``module`` (eval mode)
    on the model input ``x``; the forward pass stops after the last requested layer."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    with torch.no_grad(), ActivationCapture(module, list(layers)) as cap:
        for i in range(0, len(x), batch_size):
            acts = cap.run(x[i : i + batch_size])
            for name, act in zip(layers, acts.values(), strict=True):
                pooled = act.mean(dim=(2, 3)) if act.ndim == 4 else act.flatten(1)
                parts[name].append(pooled.float().numpy())
    return {name: np.concatenate(v) for name, v in parts.items()}


def linear_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    max_iter: int = 1000,
) -> float:
    """Test accuracy of a logistic regression on standardized features (scaler fitted on the
    training features)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(x_train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = LogisticRegression(max_iter=max_iter).fit(scaler.transform(x_train), y_train)
    return float(clf.score(scaler.transform(x_test), y_test))


def stack(ds: Any) -> tuple[torch.Tensor, torch.Tensor]:
    items = [ds[i] for i in range(len(ds))]
    return torch.stack([im for im, _ in items]), torch.tensor([int(lab) for _, lab in items])


def to_size(pixels: torch.Tensor, size: int) -> torch.Tensor:
    if pixels.shape[1] == 1:
        pixels = pixels.repeat(1, 3, 1, 1)
    if pixels.shape[-1] == size:
        return pixels
    return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False).clamp(
        0, 1
    )


def probe_findings(probes: dict[str, Any]) -> list[str]:
    out = []
    for family, per_target in probes.items():
        trained_name = "ImageNet" if family == "efficientnet_lite0" else "trained (base A)"
        for target, res in per_target.items():
            tr, rd = res["trained"], res["random"]
            layers = list(tr)
            best = max(layers, key=lambda name: tr[name])
            gaps = {name: tr[name] - rd[name] for name in layers}
            widest = max(layers, key=lambda name: abs(gaps[name]))
            wins = sum(g > 0 for g in gaps.values())
            best_rd = max(layers, key=lambda name: rd[name])
            out.append(
                f"On {PRETTY[target]} ({res['classes']} classes, chance {1 / res['classes']:.2f})"
                f", the {trained_name} {PRETTY[family]}'s best probed layer is {best} "
                f"({tr[best]:.3f}) vs {rd[best]:.3f} from random init at that layer (random "
                f"init's best: {best_rd}, {rd[best_rd]:.3f}); trained beats random at {wins} "
                f"of {len(layers)} layers, mean difference {np.mean(list(gaps.values())):+.3f}, "
                f"largest at {widest} ({gaps[widest]:+.3f})."
            )
    return out


def run_probes(
    trained: nn.Module,
    random_net: nn.Module,
    pw_b: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    *,
    size: int,
    lite0: bool,
    lite0_size: int,
    lite0_seed: int,
    progress: bool,
) -> dict[str, Any]:
    """Linear-probe accuracy per source family, target, weights (trained/random) and layer."""
    from tqdm.auto import tqdm

    digits = load_data("digits", size=size)
    dg = (*stack(digits.train), *stack(digits.test))
    targets = {"digits": dg, "partsworld_b": pw_b}
    sources: list[tuple[str, str, nn.Module, Callable, list[str]]] = [
        ("simplecnn", "trained", trained, simplecnn_input, CNN_PROBE_LAYERS),
        ("simplecnn", "random", random_net, simplecnn_input, CNN_PROBE_LAYERS),
    ]
    if lite0:
        pre = load_model("efficientnet_lite0", device="cpu", quiet=True)
        rnd = load_model("efficientnet_lite0", weights="none", seed=lite0_seed, device="cpu")
        lite_digits = load_data("digits", size=lite0_size)
        targets["digits_lite0"] = (*stack(lite_digits.train), *stack(lite_digits.test))

        def lite_in(pixels: torch.Tensor, model: Any = pre) -> torch.Tensor:
            return model.normalize(to_size(pixels, lite0_size))

        sources += [
            ("efficientnet_lite0", "trained", pre.module, lite_in, LITE0_PROBE_LAYERS),
            ("efficientnet_lite0", "random", rnd.module, lite_in, LITE0_PROBE_LAYERS),
        ]
    results: dict[str, Any] = {}
    bar = tqdm(total=len(sources) * 2, desc="transfer: probes", disable=not progress)
    try:
        for family, weights, module, prep, layers in sources:
            for target in ("digits", "partsworld_b"):
                bar.set_postfix_str(f"{family} {weights} -> {target}")
                key = "digits_lite0" if family != "simplecnn" and target == "digits" else target
                x_train, y_train, x_test, y_test = targets[key]
                inp_train, inp_test = prep(x_train), prep(x_test)
                state = None
                if weights == "random":  # BN statistics from this target's training images
                    state = {k: v.clone() for k, v in module.state_dict().items()}
                    reestimate_bn(module, inp_train)
                f_train = gap_features(module, inp_train, layers)
                f_test = gap_features(module, inp_test, layers)
                if state is not None:
                    module.load_state_dict(state)
                res = results.setdefault(family, {}).setdefault(
                    target, {"classes": int(y_train.max()) + 1, "trained": {}, "random": {}}
                )
                for layer in layers:
                    res[weights][layer] = linear_probe(
                        f_train[layer], y_train.numpy(), f_test[layer], y_test.numpy()
                    )
                bar.update()
    finally:
        bar.close()
    return results
