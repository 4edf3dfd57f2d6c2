"""How a streaming instrument sees the run it is part of: :class:`Stream`.

The streaming instruments (:func:`interp.examples`, :func:`interp.probes.dissect.dissect`)
pass once or twice over a dataset and keep small running state (top-k lists, quantile
buffers, IoU counts). Where the items come from, how partial states are merged and where the
running state is kept between interruptions is not theirs to decide: the job that runs them
does, by handing them a ``Stream``. The instrument

* takes the items :meth:`Stream.shard` gives it (all of them here),
* merges its partial state with the other shards' through :meth:`Stream.gather` (only its
  own here), with an exact merge of its own (top-k by value, quantile buffers by union),
* offers its running state to :meth:`Stream.save` now and then, asks :meth:`Stream.resume`
  for a state saved under the same key, and hands its final state to :meth:`Stream.finish`.

This base class is one process with nothing kept: what an instrument does when it is called
directly. :class:`interp.pipeline.sharding.RankStream` is the pipeline's: ranks of
``torchrun`` and a checkpoint file per rank. Instruments never import ``torch.distributed``
or write files themselves (an import contract in ``pyproject.toml`` checks the first).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Stream", "object_state", "restore_object"]

State = Callable[[], dict[str, Any]]


class Stream:
    """One process, every item, no running state kept (the default of every instrument)."""

    #: this shard's position among :attr:`shards` (rank order of :meth:`gather`'s list)
    index: int = 0
    #: how many shards share the items
    shards: int = 1

    def shard(self, n: int) -> list[int]:
        """This shard's item indices of ``range(n)`` (strided: ``index, index + shards, ...``)."""
        return list(range(self.index, n, self.shards))

    def gather(self, obj: Any) -> list[Any]:
        """Every shard's ``obj``, in shard order (``[obj]`` for one shard)."""
        return [obj]

    @property
    def distributed(self) -> bool:
        return self.shards > 1

    def resume(self, key: dict[str, Any]) -> dict[str, Any]:
        """The running state saved under ``key`` by an interrupted run, or ``{}``."""
        return {}

    def save(self, state: State, *, now: bool = False) -> None:
        """Offer the running state (``state()`` is called only when it is kept): kept when the
        stream's interval has passed, or at once with ``now`` (e.g. between passes)."""

    def finish(self, state: State) -> None:
        """The instrument is done; ``state()`` is its finished (unmerged) state, which a stream
        may keep for a rerun or drop."""


def object_state(obj: Any) -> dict[str, Any]:
    """An accumulator's tensors and numbers (and its generators' states), for a checkpoint."""
    out: dict[str, Any] = {}
    for key, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[key] = value.detach().cpu()
        elif isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, torch.Generator):
            out[key + ".state"] = value.get_state()
    return out


def restore_object(obj: Any, state: dict[str, Any]) -> Any:
    """Put :func:`object_state`'s values back into a fresh object of the same kind (tensors
    go to the device of the attribute they replace); returns ``obj``."""
    for key, value in state.items():
        if key.endswith(".state"):
            getattr(obj, key[: -len(".state")]).set_state(value)
        elif isinstance(value, torch.Tensor):
            old = getattr(obj, key, None)
            setattr(obj, key, value.to(old.device) if isinstance(old, torch.Tensor) else value)
        else:
            setattr(obj, key, value)
    return obj
