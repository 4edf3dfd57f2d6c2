"""CKA and unit matching validated on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from interp.similarity import (
    CorrelationAccumulator,
    MinibatchCKA,
    cka_from_grams,
    gram,
    hsic_unbiased,
    linear_cka,
    match_units,
    unbiased_cka,
)


def _data(n: int = 200, p: int = 30, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, p)) @ rng.normal(size=(p, p))  # correlated features


def test_cka_invariances():
    x = _data()
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(30, 30)))
    assert linear_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(x, 3.7 * x) == pytest.approx(1.0, abs=1e-10)
    assert unbiased_cka(x, x @ q) == pytest.approx(1.0, abs=1e-10)
    assert unbiased_cka(x, 0.2 * x) == pytest.approx(1.0, abs=1e-10)
    # not invariant to an arbitrary invertible map
    a = np.random.default_rng(2).normal(size=(30, 30))
    assert linear_cka(x, x @ a) < 0.99
    # unrelated features: low
    assert linear_cka(x, _data(seed=5)) < 0.3


def test_linear_cka_equals_the_closed_form():
    x, y = _data(seed=3), _data(p=12, seed=4)[:, :12]
    n = len(x)
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T  # noqa: E741
    hsic = lambda a, b: np.trace(a @ h @ b @ h) / (n - 1) ** 2  # noqa: E731
    want = hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))
    assert linear_cka(x, y) == pytest.approx(want, rel=1e-10)
    assert cka_from_grams(k, l) == pytest.approx(want, rel=1e-10)


def test_unbiased_hsic_matches_its_definition():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(9, 3))
    k, l = gram(x), gram(y)  # noqa: E741
    n = 9
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    want = (
        np.trace(kt @ lt)
        + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
        - 2 / (n - 2) * one @ kt @ lt @ one
    ) / (n * (n - 3))
    assert hsic_unbiased(k, l) == pytest.approx(want, rel=1e-10)


def test_minibatch_cka_converges_to_the_full_data_unbiased_value():
    rng = np.random.default_rng(7)
    n = 6000
    z = rng.normal(size=(n, 8))
    x = z @ rng.normal(size=(8, 20)) + 0.5 * rng.normal(size=(n, 20))
    y = np.tanh(z[:, :5] @ rng.normal(size=(5, 10))) + 0.5 * rng.normal(size=(n, 10))
    full = unbiased_cka(x, y)
    mb = MinibatchCKA()
    for s in range(0, n, 300):
        mb.update([x[s : s + 300]], [y[s : s + 300]])
    assert mb.result()[0, 0] == pytest.approx(full, abs=0.01)
    # the same estimate from batches of 60: unbiased HSIC terms average without drifting
    small = MinibatchCKA()
    for s in range(0, n, 60):
        small.update([x[s : s + 60]], [y[s : s + 60]])
    assert small.result()[0, 0] == pytest.approx(full, abs=0.02)


def test_hungarian_matching_recovers_a_planted_permutation():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(5000, 12))
    perm = rng.permutation(12)
    b = a[:, perm] + 0.3 * rng.normal(size=(5000, 12))
    acc = CorrelationAccumulator()
    for s in range(0, 5000, 700):
        acc.update(a[s : s + 700], b[s : s + 700])
    corr = acc.result()
    assert np.allclose(corr, np.corrcoef(a.T, b.T)[:12, 12:], atol=1e-10)
    partner, r = match_units(corr)
    assert (perm[partner] == np.arange(12)).all()
    assert (r > 0.9).all()
