"""Representational similarity: CKA (linear and unbiased, full and minibatch) and unit matching.

* **Linear CKA** (Kornblith et al. 2019): for centred features ``X (n, p)``, ``Y (n, q)``,
  ``CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``, equivalently the normalized Frobenius
  product of the centred Gram matrices ``HKH`` and ``HLH`` (``K = X X^T``). Invariant to
  orthogonal transforms and isotropic scaling of either side, not to arbitrary invertible maps.
* **Unbiased CKA** uses the unbiased HSIC estimator of Song et al. (2012) on Gram matrices with
  zeroed diagonals; the **minibatch CKA** of Nguyen et al. (2021) averages unbiased HSIC terms
  over minibatches and only then normalizes (it is *not* the mean of per-batch CKA values), so
  it converges to the full-data unbiased value while holding one batch at a time.
* **Unit matching** (Li et al. 2016): the correlation of every unit of one network with every
  unit of another over the same inputs (all spatial positions as samples), and the one-to-one
  assignment maximizing the total correlation (Hungarian algorithm).

Everything works on Gram matrices where it can, so a layer of any width costs ``n x n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from .activations import ActivationCapture, resolve_layers
from .device import default_batch, use_bf16
from .models.base import Model
from .models.registry import as_model
from .streaming import Stream

__all__ = [
    "CorrelationAccumulator",
    "MinibatchCKA",
    "cka_from_grams",
    "gram",
    "hsic_unbiased",
    "linear_cka",
    "match_units",
    "minibatch_cka_from_grams",
    "unbiased_cka",
    "unit_correlations",
]


def _as64(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1)


def gram(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """The linear Gram matrix ``X X^T`` of features ``(n, ...)`` (flattened per example)."""
    f = _as64(x)
    return f @ f.T


def _centre(k: np.ndarray) -> np.ndarray:
    mean_rows = k.mean(axis=0, keepdims=True)
    return k - mean_rows - mean_rows.T + k.mean()


def linear_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Linear CKA between features ``x (n, ...)`` and ``y (n, ...)`` (feature-space form)."""
    fx, fy = _as64(x), _as64(y)
    fx = fx - fx.mean(axis=0)
    fy = fy - fy.mean(axis=0)
    cross = np.linalg.norm(fy.T @ fx) ** 2
    return float(cross / (np.linalg.norm(fx.T @ fx) * np.linalg.norm(fy.T @ fy)))


def cka_from_grams(k: np.ndarray, l: np.ndarray, unbiased: bool = False) -> float:  # noqa: E741
    """CKA from two ``n x n`` Gram matrices (biased/linear, or with the unbiased HSIC)."""
    if unbiased:
        kl, kk, ll = hsic_unbiased(k, l), hsic_unbiased(k, k), hsic_unbiased(l, l)
        return float(kl / np.sqrt(kk * ll))
    kc, lc = _centre(k), _centre(l)
    return float((kc * lc).sum() / (np.linalg.norm(kc) * np.linalg.norm(lc)))


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:  # noqa: E741
    """Unbiased HSIC (Song et al. 2012) of two Gram matrices (``n >= 4``)."""
    n = k.shape[0]
    if n < 4:
        raise ValueError("the unbiased HSIC needs at least 4 examples")
    kt = k - np.diag(np.diag(k))
    lt = l - np.diag(np.diag(l))
    one_k = kt.sum(axis=0)
    one_l = lt.sum(axis=0)
    term = (kt * lt).sum() + one_k.sum() * one_l.sum() / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * (one_k @ one_l)
    return float(term / (n * (n - 3)))


def unbiased_cka(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """CKA with the unbiased HSIC estimator, on the full data."""
    return cka_from_grams(gram(x), gram(y), unbiased=True)


class MinibatchCKA:
    """Minibatch CKA (Nguyen et al. 2021) between every pair of two sets of layers.

    ``update(xs, ys)`` with lists of features of one minibatch (same examples); ``result()``
    gives the ``(len(xs), len(ys))`` matrix of CKA computed from the averaged unbiased HSIC.
    """

    def __init__(self) -> None:
        self.kl: np.ndarray | None = None
        self.kk: np.ndarray | None = None
        self.ll: np.ndarray | None = None
        self.batches = 0

    def update(self, xs: list, ys: list) -> None:
        """Add one minibatch: features ``(batch, ...)`` of every layer of each side."""
        self.update_grams([gram(x) for x in xs], [gram(y) for y in ys])

    def update_grams(self, ks: Sequence[np.ndarray], ls: Sequence[np.ndarray]) -> None:
        """Add one minibatch given by its Gram matrices (``batch x batch``, ``batch >= 4``)."""
        kl = np.array([[hsic_unbiased(k, l) for l in ls] for k in ks])  # noqa: E741
        kk = np.array([hsic_unbiased(k, k) for k in ks])
        ll = np.array([hsic_unbiased(l, l) for l in ls])  # noqa: E741
        if self.kl is None:
            self.kl, self.kk, self.ll = kl, kk, ll
        else:
            self.kl += kl
            self.kk += kk  # type: ignore[operator]
            self.ll += ll  # type: ignore[operator]
        self.batches += 1

    def result(self) -> np.ndarray:
        if self.kl is None:
            raise RuntimeError("no minibatch was added")
        return self.kl / np.sqrt(np.outer(self.kk, self.ll))


def minibatch_cka_from_grams(
    ks: Sequence[np.ndarray], ls: Sequence[np.ndarray], batch: int
) -> np.ndarray:
    """Minibatch CKA (:class:`MinibatchCKA`) between every layer of ``ks`` and of ``ls``, full
    ``n x n`` Gram matrices of the same ``n`` examples, over consecutive minibatches of
    ``batch`` examples (their diagonal blocks; a last block under 4 examples is left out)."""
    acc = MinibatchCKA()
    n = len(ks[0])
    for start in range(0, n - 3, batch):
        block = slice(start, start + batch)
        if len(ks[0][block, block]) < 4:
            continue
        acc.update_grams([k[block, block] for k in ks], [g[block, block] for g in ls])
    return acc.result()


class CorrelationAccumulator:
    """Pearson correlation between every unit of ``a`` and every unit of ``b`` over a stream
    of samples (rows), from running sums (exact; float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.sa = self.sb = self.saa = self.sbb = self.sab = None

    def update(self, a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> None:
        """``a (samples, units_a)``, ``b (samples, units_b)``."""
        a, b = _as64(a), _as64(b)
        if self.sa is None:
            self.sa, self.sb = a.sum(0), b.sum(0)
            self.saa, self.sbb = (a * a).sum(0), (b * b).sum(0)
            self.sab = a.T @ b
        else:
            self.sa += a.sum(0)
            self.sb += b.sum(0)
            self.saa += (a * a).sum(0)
            self.sbb += (b * b).sum(0)
            self.sab += a.T @ b
        self.n += len(a)

    def merge(self, others: Sequence[CorrelationAccumulator]) -> None:
        """Add other shards' sums (the same units): exact, as one stream of every sample."""
        for o in others:
            if o.sa is None:
                continue
            if self.sa is None:
                self.sa, self.sb = o.sa.copy(), o.sb.copy()
                self.saa, self.sbb, self.sab = o.saa.copy(), o.sbb.copy(), o.sab.copy()
            else:
                self.sa += o.sa
                self.sb += o.sb
                self.saa += o.saa
                self.sbb += o.sbb
                self.sab += o.sab
            self.n += o.n

    def result(self) -> np.ndarray:
        """``(units_a, units_b)`` correlations; 0 where a unit is constant."""
        n = self.n
        ma, mb = self.sa / n, self.sb / n
        cov = self.sab / n - np.outer(ma, mb)
        va = np.clip(self.saa / n - ma**2, 0, None)
        vb = np.clip(self.sbb / n - mb**2, 0, None)
        den = np.sqrt(np.outer(va, vb))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 1e-12, cov / den, 0.0)


def match_units(corr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching of units maximizing total correlation (Hungarian algorithm).

    Returns ``(partner, r)``: for every row unit its matched column unit and their correlation
    (rows beyond the number of columns get ``-1`` and ``nan``).
    """
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-corr)
    partner = np.full(corr.shape[0], -1)
    r = np.full(corr.shape[0], np.nan)
    partner[rows] = cols
    r[rows] = corr[rows, cols]
    return partner, r


def unit_correlations(
    model: Model,
    data: Dataset,
    layers: Sequence[str],
    *,
    batch_size: int | None = None,
    precision: str = "fp32",
    stream: Stream | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """``{layer: (C, C)}``: the Pearson correlation, over the images of ``data`` (a dataset of
    ``(image, label)`` in [0, 1]), of every pair of the layer's units' spatially averaged
    activations: which units of a layer respond to the same images (0 where a unit is
    constant). One truncated forward pass per batch for every layer; ``stream`` shards the
    images and merges the sums exactly (:class:`~interp.streaming.Stream`)."""
    model = as_model(model)
    stream = stream or Stream()
    names = resolve_layers(model, list(layers))
    mine = stream.shard(len(data))
    batch_size = batch_size or default_batch(model.device, 32, 128)
    device = model.device
    bf16 = use_bf16(precision, device)
    accs = {n: CorrelationAccumulator() for n in names}
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data, mine), batch_size=batch_size, shuffle=False
    )
    with torch.no_grad(), ActivationCapture(model.module, names) as cap:
        for images, _ in tqdm(loader, desc="unit correlations", disable=not progress, leave=False):
            x = model.normalize(images).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                acts = cap.run(x)
            for name, a in acts.items():
                if isinstance(a, torch.Tensor) and a.dim() >= 2:
                    m = a.float().flatten(2).mean(dim=2) if a.dim() > 2 else a.float()
                    accs[name].update(m.cpu(), m.cpu())
    if stream.distributed:
        gathered = stream.gather(accs)
        for name, acc in accs.items():
            acc.merge([g[name] for i, g in enumerate(gathered) if i != stream.index])
    return {n: acc.result().astype(np.float32) for n, acc in accs.items() if acc.n}
