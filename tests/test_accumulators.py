"""The streaming accumulators share one shape: ``update(batch)`` ... ``merge(others)`` ...
``result()``; the read names they had before are gone or deprecated."""

from __future__ import annotations

import pytest
import torch

from interp.dataset_examples import RunningTopK
from interp.probes.dissect import IoUAccumulator, StreamingQuantile


@pytest.mark.parametrize("cls", [RunningTopK, StreamingQuantile, IoUAccumulator])
def test_every_accumulator_has_update_merge_and_result(cls):
    for name in ("update", "merge", "result"):
        assert callable(getattr(cls, name, None)), f"{cls.__name__}.{name}"
    assert not hasattr(StreamingQuantile, "thresholds") and not hasattr(IoUAccumulator, "iou")


def test_running_top_k_values_is_a_deprecated_name_of_result():
    top = RunningTopK(2, 3)
    vals = torch.tensor([[1.0, 5.0, 3.0, 2.0], [0.0, -1.0, 4.0, 4.0]])
    top.update(vals, torch.arange(4), torch.arange(4), torch.zeros(2, 4, dtype=torch.long))
    assert top.result().tolist() == [[5.0, 3.0, 2.0], [4.0, 4.0, 0.0]]
    with pytest.warns(DeprecationWarning, match="result"):
        old = top.values
    assert torch.equal(old, top.result())
