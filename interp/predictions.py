"""Classification with a loaded model: top-k classes with names and probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .activations import preserved_state
from .checks import check_finite, check_int
from .data.images import ImageLike, to_input
from .models.base import Model

__all__ = ["Prediction", "classify"]


@dataclass(frozen=True)
class Prediction:
    """One of the top-k classes of an image."""

    index: int
    name: str
    probability: float
    logit: float


@torch.no_grad()
def classify(
    model: Model, images: ImageLike | Sequence[ImageLike], k: int = 5, batch_size: int = 16
) -> list[list[Prediction]]:
    """Top-``k`` predictions for each image (paths, PIL images or arrays).

    Images are resized and centre-cropped as the model's preprocessing says; the model runs in
    eval mode (its previous mode is restored).
    """
    check_int("k", k)
    check_int("batch_size", batch_size)
    if not isinstance(images, list | tuple):
        images = [images]  # type: ignore[list-item]
    results: list[list[Prediction]] = []
    with preserved_state(model.module, eval_mode=True):
        for start in range(0, len(images), batch_size):
            x = to_input(list(images[start : start + batch_size]), model.preprocessing)
            logits = model.module(x.to(model.device)).float().cpu()
            check_finite(logits, f"{model.name}'s output for image(s) {start}-{start + len(x) - 1}")
            probs = logits.softmax(dim=1)
            top = probs.topk(min(k, probs.shape[1]), dim=1)
            for row in range(len(x)):
                results.append(
                    [
                        Prediction(
                            index=int(i),
                            name=model.class_name(int(i)),
                            probability=float(p),
                            logit=float(logits[row, i]),
                        )
                        for p, i in zip(top.values[row], top.indices[row], strict=True)
                    ]
                )
    return results
